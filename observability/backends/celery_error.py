"""What Celery is told about a run's error: a stand-in exception of the same class name, whose
message is withheld.

Celery shows a failed or retried task's exception and traceback in its events (``task-failed``,
``task-retried``), its worker log lines and the result backend, which Flower and other tools
read. A task's exception message may carry an address, a phone number, message text or a path
in the data folder, so Celery only ever sees the stand-in: the class name stays (``GET
/tasks/{id}``'s ``error_type``, Flower's exception column, exporters' labels), the message is in
the run's own log line and span, masked.

Stand-in classes are made on first use and found again by name as attributes of this module,
so they pickle (prefork children hand errors to their main process) and Celery's result backend
rebuilds them by name."""

WITHHELD = "message withheld from Celery: the run's log line and span have it, masked"
FALLBACK = "TaskError"  # for a class name this module can't hold (e.g. ``WITHHELD``)

_classes: dict[str, type[Exception]] = {}


def stand_in(error: BaseException) -> Exception:
    """An exception of ``error``'s class name with the message withheld, chained to nothing."""
    name = type(error).__name__
    return stand_in_class(name if _usable(name) else FALLBACK)(WITHHELD)


def stand_in_class(name: str) -> type[Exception]:
    """The stand-in class named ``name`` (one class per name, in this module)."""
    cls = _classes.get(name)
    if cls is None:
        cls = type(name, (Exception,), {"__module__": __name__, "__qualname__": name})
        _classes[name] = cls
    return cls


def _usable(name: str) -> bool:
    """A class name ``__getattr__`` finds: no dunder, nothing this module defines."""
    return name.isidentifier() and not name.startswith("__") and name not in globals()


def __getattr__(name: str) -> type[Exception]:
    """Stand-in classes by name, for pickle and for Celery's result backend."""
    if not _usable(name):
        raise AttributeError(name)
    return stand_in_class(name)
