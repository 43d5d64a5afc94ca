"""What a part of ``python -m bench`` is: the interface ``bench/__main__.py`` uses.

A part is a module (``throughput``, ``runner``, ``memory``, ``celery``: see ``PARTS`` in
``bench/__main__.py``) with these four functions; modules conform to a ``Protocol`` structurally,
so the ``PARTS`` table, typed ``dict[str, Part]``, is where mypy checks each of them. The result
of ``run`` is plain JSON data: ``__main__`` writes it to ``bench/results/*.json`` under the part's
name and ``--render`` hands it back to ``markdown`` and ``goals`` without running anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Protocol

PartResult = dict[str, Any]
GoalRow = tuple[str, str, bool | None]  # (goal, measured, met; None: not measured)


class Part(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the part's options (in a group of its own; every part's options are always
        there, whichever parts run)."""

    def run(self, opts: argparse.Namespace, tmp: Path) -> PartResult:
        """Measure (``opts.quick``: small counts), in the scratch folder ``tmp``; raise
        ``RuntimeError`` or ``OSError`` when the part cannot be measured."""

    def markdown(self, part: PartResult) -> str:
        """The part's section of the report, from what ``run`` returned."""

    def goals(self, part: PartResult) -> list[GoalRow]:
        """The part's rows of the goals table, from what ``run`` returned."""
