"""Engine-only cost per task against plan size, and the driver's peak memory.

Each size runs in a fresh process (so peak RSS is that size's own), with isolation off and
no subprocess per task (as in ``bench/engine_throughput.py``), on SQLite with the default
``synchronous=FULL``. Prints a table and writes a plot of per-task cost against plan size
to ``docs/img/scale.png`` (needs matplotlib: ``pip install -e '.[bench]'``).
Prints numbers; passes or fails nothing.

    python bench/scale.py [--max 10000] [--sizes 1000,10000,100000] [--parallel 2]
                          [--json OUT.json] [--baseline BEFORE.json] [--from-json ROWS.json]

``--json`` saves the rows; ``--baseline`` draws a saved run (e.g. of an older commit) as a
second series; ``--from-json`` plots saved rows without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLOT = HERE.parent / "docs" / "img" / "scale.png"


def one_size(n: int, parallel: int) -> dict[str, float]:
    """Run an ``n``-task plan engine-only in this process; seconds and peak RSS."""
    sys.path.insert(0, str(HERE))
    os.environ["VIGIL_ISOLATION"] = "off"
    import engine_throughput as et

    before = resource.getrusage(resource.RUSAGE_SELF)
    seconds = et.time_engine_only(n, parallel)
    after = resource.getrusage(resource.RUSAGE_SELF)
    # CPU time of the driver process moves much less than wall time on a shared machine.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss is in KiB on Linux.
    peak = after.ru_maxrss / 1024
    return {
        "tasks": n,
        "seconds": seconds,
        "ms_per_task": seconds / n * 1000,
        "cpu_ms_per_task": cpu / n * 1000,
        "peak_mib": peak,
    }


def plot(rows: list[dict[str, float]], baseline: list[dict[str, float]] | None = None) -> None:
    """Per-task cost against plan size, log-scaled plan size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot written")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    xs = [r["tasks"] for r in rows]
    ax.plot(xs, [r["ms_per_task"] for r in rows], marker="o", label="wall")
    ax.plot(xs, [r["cpu_ms_per_task"] for r in rows], marker="s", label="driver CPU")
    if baseline:
        bx = [r["tasks"] for r in baseline]
        ax.plot(bx, [r["ms_per_task"] for r in baseline], "--o", label="wall, before")
        ax.plot(bx, [r["cpu_ms_per_task"] for r in baseline], "--s", label="driver CPU, before")
    ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("tasks in the plan")
    ax.set_ylabel("engine cost per task (ms)")
    ax.set_title("vigil engine only, isolation off, SQLite, -j 2")
    for r in rows:
        ax.annotate(
            f"{r['ms_per_task']:.2f}",
            (r["tasks"], r["ms_per_task"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
        )
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT)
    print(f"plot written to {PLOT.relative_to(HERE.parent)}")


def main() -> None:
    """Run each size in its own process, print, plot."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--max", type=int, default=None, help="skip sizes above this")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="save the rows here")
    parser.add_argument("--baseline", type=Path, default=None, help="rows to draw beside")
    parser.add_argument("--from-json", type=Path, default=None, help="plot these rows only")
    args = parser.parse_args()
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    if args.from_json is not None:
        plot(json.loads(args.from_json.read_text()), baseline)
        return
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.parallel)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.max is not None:
        sizes = [s for s in sizes if s <= args.max]
    sync = os.environ.get("VIGIL_SQLITE_SYNCHRONOUS", "FULL")
    print(
        f"engine only, isolation off, SQLite synchronous={sync}, -j {args.parallel}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'tasks':>8} {'total':>9} {'per task':>10} {'CPU/task':>10} {'peak RSS':>10}")
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--parallel", str(args.parallel)],
            check=True,
            capture_output=True,
            text=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{n:>8} {row['seconds']:8.1f}s {row['ms_per_task']:8.3f}ms "
            f"{row['cpu_ms_per_task']:8.3f}ms {row['peak_mib']:8.0f}MiB",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    if not args.no_plot:
        plot(rows, baseline)


if __name__ == "__main__":
    main()
