"""What a task is: a callable, known by its function's name, run on the event loop if it is a
coroutine function and in a thread otherwise."""

import functools
import inspect
from collections.abc import Callable
from typing import Any

TaskFunction = Callable[..., Any]


def unwrap(func: TaskFunction) -> TaskFunction:
    """The function inside any ``functools.partial`` layers."""
    while isinstance(func, functools.partial):
        func = func.func
    return func


def task_name(func: TaskFunction) -> str:
    """The name a task is known by: its function's (or bound/static method's) ``__name__``."""
    func = unwrap(func)
    return str(getattr(func, "__name__", type(func).__name__))


def is_async_callable(func: TaskFunction) -> bool:
    """Whether calling ``func`` returns a coroutine (coroutine function or ``async __call__``)."""
    func = unwrap(func)
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004
    )
