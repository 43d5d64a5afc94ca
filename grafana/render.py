"""Render the dashboards as PNG pictures from live Prometheus data, with matplotlib.

Each panel of grafana/dashboards.py is drawn where its gridPos puts it: time series panels as
line charts, stat and bar gauge panels as bars of their latest values, logs panels as a note
(their data live in Loki). Grafana variables are replaced by "All" (``.*``) unless given.

    python grafana/render.py --prometheus http://localhost:9090 --out docs/img
    python grafana/render.py --prometheus URL --range 15m --var task='(write_log)'

``tools/render_docs.py`` starts a local API and Prometheus, drives traffic and calls this.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
from matplotlib.gridspec import GridSpec

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "docs" / "img"
ALL = {"instance": ".*", "backend": ".*", "task": ".*", "route": ".*", "trace_id": ""}
PANEL_W, PANEL_ROW_H = 0.75, 0.42  # inches per grid column / grid row


def _dashboards() -> dict[str, dict[str, Any]]:
    spec = importlib.util.spec_from_file_location(
        "notification_grafana_dashboards_render", HERE / "dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_dashboards()  # type: ignore[no-any-return]


def substitute(expr: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def legend(fmt: str, labels: dict[str, str]) -> str:
    """A series' name as Grafana's legendFormat would show it ($ escaped for matplotlib)."""
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        text = f"{{{inner}}}"
    else:
        text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()
    return text.replace("$", r"\$")


class Prometheus:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=30)

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        body = self.client.get(path, params=params).json()
        if body.get("status") != "success":
            raise RuntimeError(f"{params.get('query')}: {body.get('error')}")
        return body["data"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self._get(
            "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step}
        )
        return list(data["result"])

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", {"query": expr, "time": at})
        return list(data["result"]) if data["resultType"] == "vector" else []

    def close(self) -> None:
        self.client.close()


def _draw_timeseries(
    ax: Any,
    panel: dict[str, Any],
    prom: Prometheus,
    variables: dict[str, str],
    start: float,
    end: float,
    step: float,
) -> int:
    drawn = 0
    for target in panel.get("targets") or []:
        expr = substitute(target["expr"], variables)
        for series in prom.range(expr, start, end, step):
            points = [(float(t), float(v)) for t, v in series["values"]]
            points = [(t, v) for t, v in points if math.isfinite(v)]
            if not points:
                continue
            xs = [_utc(t) for t, _ in points]
            ax.plot(
                xs,
                [v for _, v in points],
                linewidth=1.2,
                label=legend(target.get("legendFormat", ""), series["metric"]),
            )
            drawn += 1
    ax.set_xlim(_utc(start), _utc(end))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=6))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(
        mdates.DateFormatter("%H:%M:%S" if end - start < 1800 else "%H:%M")
    )  # type: ignore[no-untyped-call]
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    if unit == "percentunit":
        ax.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    elif unit:
        ax.set_ylabel(unit, fontsize=7)
    if drawn:
        ax.legend(fontsize=6, loc="upper left", ncol=1 + (drawn - 1) // 8)
    return drawn


def _draw_bars(
    ax: Any,
    panel: dict[str, Any],
    prom: Prometheus,
    variables: dict[str, str],
    end: float,
    range_text: str,
) -> int:
    names, values = [], []
    for target in panel.get("targets") or []:
        expr = substitute(target["expr"], {**variables, "__range": range_text})
        for series in prom.instant(expr, end):
            value = float(series["value"][1])
            if math.isfinite(value):
                names.append(legend(target.get("legendFormat", ""), series["metric"]))
                values.append(value)
    if names:
        positions = range(len(names))
        ax.barh(positions, values, color="tab:blue", alpha=0.35)
        ax.set_yticks([])
        ax.invert_yaxis()
        for i, (name, value) in enumerate(zip(names, values, strict=True)):
            ax.text(0, i, f" {name}: {value:.3g}", va="center", fontsize=8)
    return len(names)


def _utc(timestamp: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


def render(
    model: dict[str, Any],
    prom: Prometheus,
    out: Path,
    *,
    range_seconds: float,
    rate_interval: str,
    variables: dict[str, str],
    end: float | None = None,
) -> Path:
    """Draw one dashboard into ``out`` (a PNG file) and return its path."""
    end = end if end is not None else time.time()
    start = end - range_seconds
    step = max(range_seconds / 240, 1.0)
    values = {
        **ALL,
        **variables,
        "__rate_interval": rate_interval,
        "__interval": f"{int(step)}s",
        "__range": f"{int(range_seconds)}s",
    }
    panels = list(model["panels"])
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig, grid = _figure(height)
    fig.suptitle(
        f"{model['title']} (last {int(range_seconds // 60)} min)", fontsize=14, fontweight="bold"
    )
    for panel in panels:
        _draw_panel(fig, grid, panel, prom, values, start, end, step)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def _figure(height: int) -> tuple[Any, GridSpec]:
    """A figure with Grafana's grid: 24 columns, ``height`` rows, room for the title on top."""
    fig = plt.figure(figsize=(24 * PANEL_W, height * PANEL_ROW_H + 1))
    grid = GridSpec(
        height,
        24,
        figure=fig,
        hspace=1.0,
        wspace=1.2,
        left=0.03,
        right=0.99,
        top=1 - 0.9 / (height * PANEL_ROW_H + 1),
        bottom=0.02,
    )
    return fig, grid


def _draw_panel(
    fig: Any,
    grid: GridSpec,
    panel: dict[str, Any],
    prom: Prometheus,
    values: dict[str, str],
    start: float,
    end: float,
    step: float,
) -> None:
    """One panel where its gridPos puts it: a row's title, a chart, bars, or a note."""
    pos = panel["gridPos"]
    if panel["type"] == "row":
        ax = fig.add_subplot(grid[pos["y"], :])
        ax.axis("off")
        ax.text(0, 0.5, panel["title"], fontsize=11, fontweight="bold", va="center")
        return
    rows = slice(pos["y"], pos["y"] + pos["h"] - 1)  # last grid row: tick labels
    ax = fig.add_subplot(grid[rows, pos["x"] : pos["x"] + pos["w"]])
    ax.set_title(panel["title"], fontsize=9, loc="left")
    ax.tick_params(labelsize=7)
    if panel["type"] == "timeseries":
        drawn = _draw_timeseries(ax, panel, prom, values, start, end, step)
    elif panel["type"] in {"stat", "bargauge"}:
        drawn = _draw_bars(ax, panel, prom, values, end, values["__range"])
    else:
        _draw_note(ax, panel)
        return
    if not drawn:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def _draw_note(ax: Any, panel: dict[str, Any]) -> None:
    """A panel whose data are not in Prometheus (logs: Loki): its type and queries, as text."""
    ax.axis("off")
    exprs = "\n".join(t["expr"] for t in panel.get("targets") or []).replace("$", r"\$")
    ax.text(
        0.01,
        0.5,
        f"{panel['type']} panel: data from Loki, shown in Grafana\n{exprs}",
        fontsize=8,
        family="monospace",
        va="center",
        wrap=True,
    )


def render_all(
    prometheus_url: str,
    out_dir: Path = DEFAULT_OUT,
    *,
    range_seconds: float = 3600,
    rate_interval: str = "1m",
    variables: dict[str, str] | None = None,
    end: float | None = None,
) -> list[Path]:
    """Render every dashboard to ``out_dir/<uid>.png``."""
    prom = Prometheus(prometheus_url)
    try:
        return [
            render(
                model,
                prom,
                out_dir / f"{model['uid']}.png",
                range_seconds=range_seconds,
                rate_interval=rate_interval,
                variables=variables or {},
                end=end,
            )
            for model in _dashboards().values()
        ]
    finally:
        prom.close()


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+)([smh])", text)
    if not match:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 90s, 15m, 1h)")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the dashboards as PNG pictures.")
    parser.add_argument("--prometheus", default="http://localhost:9090", help="Prometheus URL")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--range", type=_duration, default=3600, help="time range, e.g. 1h")
    parser.add_argument("--rate-interval", default="1m", help="value of $__rate_interval")
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="a dashboard variable's value (default: all)",
    )
    args = parser.parse_args(argv)
    variables = dict(item.split("=", 1) for item in args.var)
    for path in render_all(
        args.prometheus,
        args.out,
        range_seconds=args.range,
        rate_interval=args.rate_interval,
        variables=variables,
    ):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
