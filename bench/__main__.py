"""``make bench`` / ``python -m bench``: the performance of the service vs the bare tutorial app.

Parts (``--parts``, comma-separated; all by default):

* ``throughput``: HTTP load (wrk) on the tutorial app and the service, side by side
  (``bench/throughput.py``);
* ``runner``: the instrumented runner's own cost per task vs a direct call
  (``bench/runner_micro.py``);
* ``memory``: RSS of the service over 10^5 tasks (``bench/memory.py``);
* ``celery``: an instrumented Celery worker vs a bare one on the same Redis
  (``bench/celery_compare.py``);
* ``delivery``: e-mails/s through a local SMTP server, the service in-process and on Celery vs
  a bare smtplib loop (``bench/delivery.py``);
* ``scrape``: ``GET /metrics`` latency and CPU under ``uvicorn --workers 1, 2, 4`` and a Celery
  worker ``-c 4``, fresh and after 50 worker restarts (``bench/scrape.py``).

``--quick`` runs every part small (for development; numbers are indicative only) and writes
``bench/results/quick.{json,md}``; a full run writes ``bench/results/latest.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import celery_compare, delivery, memory, runner_micro, scrape, throughput
from bench.common import RESULTS_DIR, ROOT, loadavg, machine_info
from bench.part import Part

NOISY_CORES = 0.25  # other load (cores) above which the results are flagged
PARTS: dict[str, Part] = {
    "throughput": throughput,
    "runner": runner_micro,
    "memory": memory,
    "celery": celery_compare,
    "delivery": delivery,
    "scrape": scrape,
}


def machine_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    p = m["packages"]
    versions = ", ".join(f"{k} {v}" for k, v in p.items())
    quick = "**quick mode** (small counts, indicative only), " if result["quick"] else ""
    return "\n".join(
        [
            "# Benchmarks: the observable notification service vs the bare tutorial app",
            "",
            f"- {m['date']}, {quick}parts: {', '.join(result['parts'])}; "
            f"{result['elapsed_seconds']:.0f} s",
            f"- machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, load average "
            f"{m['loadavg_start']} at start, {m.get('loadavg_end')} at end",
            f"- Python {m['python']}; {versions}",
            f"- wrk: {m['wrk']}; redis-server: {m['redis_server']}",
            f"- git {m['git_commit']} ({m['git_branch']})"
            + (" with uncommitted changes" if m["git_dirty"] else ""),
            "",
        ]
    )


def goals_markdown(result: dict[str, Any]) -> str:
    rows = []
    for name, part in result["results"].items():
        if "error" not in part:
            rows += PARTS[name].goals(part)
    if not rows:
        return ""
    verdict = {True: "met", False: "**not met**", None: "-"}
    out = ["## Goals (each part's, from the performance issues)", ""]
    runs = result["results"].get("throughput", {}).get("runs", [])
    other = statistics.median(r["other_load_cores"] for r in runs) if runs else 0.0
    if other > NOISY_CORES:
        out += [
            f"**Noisy machine**: during the throughput runs the rest of the machine kept "
            f"{other:.2f} CPU cores busy (median), out of {result['machine']['nproc']}: these "
            "numbers are not representative; run again on a quiet machine.",
            "",
        ]
    out += [
        "| goal | measured | |",
        "|---|---:|---|",
        *(f"| {goal} | {measured} | {verdict[met]} |" for goal, measured, met in rows),
    ]
    return "\n".join(out) + "\n"


def markdown(result: dict[str, Any]) -> str:
    sections = [machine_markdown(result), goals_markdown(result)]
    for name, part in result["results"].items():
        if "error" in part:
            sections.append(f"## {name}\n\nnot measured: {part['error']}\n")
        else:
            sections.append(PARTS[name].markdown(part))
    return "\n".join(sections)


def parser() -> argparse.ArgumentParser:
    """The command line: the run's own options, then every part's (always all of them)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="small counts, for development")
    parser.add_argument(
        "--output",
        type=Path,
        help="results path without suffix (bench/results/latest, or .../quick with --quick)",
    )
    parser.add_argument(
        "--render", type=Path, help="only rewrite the .md of an existing results .json"
    )
    for module in PARTS.values():
        module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    opts = cli.parse_args(argv)
    if opts.render:
        text = markdown(json.loads(opts.render.read_text()))
        opts.render.with_suffix(".md").write_text(text)
        print(text)
        return 0
    parts = [p for p in opts.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        cli.error(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    output = opts.output or RESULTS_DIR / ("quick" if opts.quick else "latest")

    info = machine_info()
    print(
        f"bench: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
        f"load average {info['loadavg_start']}, parts {', '.join(parts)}"
        + (" (quick)" if opts.quick else ""),
        flush=True,
    )
    started = time.monotonic()
    results, failed = run_parts(parts, opts)
    info["loadavg_end"] = loadavg()
    result = {
        "machine": info,
        "quick": opts.quick,
        "parts": parts,
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    write_results(result, output)
    lost = report_lost(results)
    return 1 if failed or lost else 0


def run_parts(parts: list[str], opts: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Run each part in a scratch folder of its own; (results by part, whether any failed). A
    part that cannot be measured gets ``{"error": ...}`` and the others still run."""
    results: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmpdir:
        for name in parts:
            t0 = time.monotonic()
            workdir = Path(tmpdir) / name
            workdir.mkdir()
            try:
                results[name] = PARTS[name].run(opts, workdir)
            except (RuntimeError, OSError) as exc:
                print(f"{name}: FAILED: {exc}", file=sys.stderr, flush=True)
                results[name] = {"error": str(exc)}
                failed = True
            print(f"{name}: {time.monotonic() - t0:.0f} s", flush=True)
    return results, failed


def write_results(result: dict[str, Any], output: Path) -> None:
    """Write ``output``.json (whole or not at all) and ``output``.md, and print the report."""
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output.with_suffix(".json"), output.with_suffix(".md")
    tmp_json = json_path.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    tmp_json.replace(json_path)
    text = markdown(result)
    md_path.write_text(text)
    print()
    print(text)
    shown = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path
    print(f"wrote {shown} and {md_path.name}; {result['elapsed_seconds']:.0f} s")


def report_lost(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The throughput runs that lost tasks (each said on stderr): any makes the run fail."""
    lost = [r for r in results.get("throughput", {}).get("runs", []) if r["lost"]]
    for r in lost:
        print(
            f"LOST: {r['app']} {r['scenario']} round {r['round']}: "
            f"{r['lines_written']} lines for {r['tasks_expected']} accepted tasks",
            file=sys.stderr,
        )
    return lost


if __name__ == "__main__":
    sys.exit(main())
