"""Make docs/img/*.png: start the local stack, drive traffic, render the dashboards.

    .venv/bin/python tools/render_docs.py [--seconds 120] [--out docs/img]

Needs the venv, /usr/bin/prometheus and a Redis on 127.0.0.1:6379 (its database 11 is emptied
before and after). The stack is the live test's full topology (tests/stack/live.py): an
in-process API, a Celery API with its worker, and a saturated API. Part of the traffic fails on
purpose on both backends (log.txt is made a directory) and the saturated API times a run out
and refuses requests (503 backlog_full), so every panel has something to show.
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

from tests.stack.live import (  # noqa: E402
    CELERY_API,
    INPROCESS_API,
    STALLED_API,
    drive_all,
    ephemeral_redis,
    full_topology,
    local_stack,
    overflow_backlog,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=120, help="how long to drive traffic")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--prometheus-bin", default="/usr/bin/prometheus")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ephemeral_redis(Path(tmp)) as broker_url,
        local_stack(Path(tmp), args.prometheus_bin, *full_topology(broker_url)) as stack,
    ):
        urls = [stack.apis[INPROCESS_API].url, stack.apis[CELERY_API].url]
        started = time.time()
        while time.time() - started < args.seconds:
            overflow_backlog(stack.apis[STALLED_API].url)
            drive_all(urls, rounds=5, pause=0.5)
        time.sleep(3)
        for path in render_all(
            stack.prom.url, args.out, range_seconds=args.seconds + 30, rate_interval="15s"
        ):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
