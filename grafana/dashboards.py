"""Grafana dashboards as code: writes grafana/dashboards/*.json from the builder package.

Run ``python grafana/dashboards.py`` to (re)write ``grafana/dashboards/*.json``; the JSON files are
committed and tests/stack/test_dashboards.py fails when they differ from what this script makes.
``build_dashboards()`` returns the same dashboards as plain dicts, keyed by file name.

What the dashboards show is in ``builder/`` (one module a dashboard, one function a row); this
file only numbers the panels, serialises and writes them. Tests and render.py import this file
by path (grafana/ is not a package), so it puts its own folder on sys.path to find ``builder``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from builder import background_tasks, http_service  # noqa: E402

OUT_DIR = HERE / "dashboards"


def _number_panels(model: dict[str, Any]) -> dict[str, Any]:
    """Give every panel (rows included) a distinct id, in layout order."""
    next_id = 1
    for panel in model.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return model


def _to_dict(builder: dash.Dashboard) -> dict[str, Any]:
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return _number_panels(model)


def build_dashboards() -> dict[str, dict[str, Any]]:
    """Return the dashboards as JSON-ready dicts, keyed by their file name."""
    return {
        "background-tasks.json": _to_dict(background_tasks.dashboard()),
        "http-service.json": _to_dict(http_service.dashboard()),
    }


def render_json(model: dict[str, Any]) -> str:
    """The exact text written to a dashboard file."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if a file differs from the generated one",
    )
    args = parser.parse_args(argv)
    stale = []
    for name, model in build_dashboards().items():
        path = args.out / name
        text = render_json(model)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(
            "out of date (run python grafana/dashboards.py): " + ", ".join(stale), file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
