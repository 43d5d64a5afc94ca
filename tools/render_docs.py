"""Make docs/img/*.png: start the API and Prometheus locally, drive traffic, render dashboards.

    .venv/bin/python tools/render_docs.py [--seconds 120] [--out docs/img]

Needs only the venv and /usr/bin/prometheus. Part of the traffic fails on purpose (log.txt is
made a directory), so the failure panels have something to show.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "grafana"))

from render import render_all  # noqa: E402

from tests.stack.live import drive_traffic, local_stack  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120, help="how long to drive traffic")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--prometheus-bin", default="/usr/bin/prometheus")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        local_stack(
            Path(tmp),
            args.prometheus_bin,
            prepare_data_dir=lambda d: (d / "log.txt").mkdir(),
        ) as stack,
    ):
        started = time.time()
        while time.time() - started < args.seconds:
            drive_traffic(stack.api_url, rounds=5, pause=0.5)
        time.sleep(3)
        for path in render_all(
            stack.prom.url, args.out, range_seconds=args.seconds + 30, rate_interval="15s"
        ):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
