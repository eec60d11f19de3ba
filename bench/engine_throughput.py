"""Engine throughput: 1,000 tasks of `true` through vigil vs `xargs -P 2`, and the engine's
own overhead per task with no subprocess at all. Prints numbers; asserts nothing.

    python bench/engine_throughput.py [--tasks 1000] [--parallel 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vigil.config import load_config
from vigil.engine import driver as driver_module
from vigil.engine import events as ev
from vigil.engine.attempt import AttemptResult, AttemptSpec, StopSignal
from vigil.engine.runs import start_run
from vigil.plan.models import Plan
from vigil.store import open_store


def make_plan(n: int) -> Plan:
    tasks = [{"id": f"t{i}", "run": "true"} for i in range(n)]
    return Plan.model_validate(
        {"name": "bench", "project": "bench", "phases": [{"id": "all", "tasks": tasks}]}
    )


def time_xargs(n: int, parallel: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(parallel), "-n", "1", "true"],
        input="\n".join("x" for _ in range(n)),
        text=True,
        check=True,
    )
    return time.perf_counter() - started


def time_vigil(n: int, parallel: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        os.environ.pop("VIGIL_DATABASE_URL", None)
        config = load_config(ws)
        store = open_store(config.database_url)
        plan = make_plan(n)
        started = time.perf_counter()
        outcome = start_run(config, store, plan, "bench.yaml", max_parallel=parallel)
        elapsed = time.perf_counter() - started
        if outcome.state != "succeeded":
            from vigil.report import load_state, run_view

            record, state = load_state(store, outcome.run_id)
            bad = [t for t in run_view(record, state)["tasks"] if t["state"] != "succeeded"]
            raise SystemExit(f"run {outcome.state}: {bad[0]['id']} {bad[0]['attempts']}")
        store.close()
        return elapsed


def _no_process(spec: AttemptSpec, stop: StopSignal, workspace: object) -> AttemptResult:
    return AttemptResult(spec.task_id, spec.attempt, ev.SUCCEEDED, 0, "", 0.0)


def time_engine_only(n: int, parallel: int) -> float:
    original = driver_module.execute_attempt
    driver_module.execute_attempt = _no_process
    try:
        return time_vigil(n, parallel)
    finally:
        driver_module.execute_attempt = original


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--isolation",
        default="off",
        choices=["off", "overlay", "snapshot"],
        help="how attempts are isolated (default off: the engine and processes alone)",
    )
    args = parser.parse_args()
    os.environ["VIGIL_ISOLATION"] = args.isolation
    n, p = args.tasks, args.parallel
    sync = os.environ.get("VIGIL_SQLITE_SYNCHRONOUS", "FULL")
    print(
        f"{n} tasks of `true`, parallelism {p}, isolation {args.isolation}, "
        f"SQLite synchronous={sync}, "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    xargs = [time_xargs(n, p) for _ in range(args.repeat)]
    vig = [time_vigil(n, p) for _ in range(args.repeat)]
    eng = [time_engine_only(n, p) for _ in range(args.repeat)]
    x, v, e = statistics.median(xargs), statistics.median(vig), statistics.median(eng)
    print(f"xargs -P {p} true:         {x:7.3f} s")
    print(
        f"vigil run -j {p}:           {v:7.3f} s   ({v / x:.2f}x xargs, {v / n * 1000:.2f} ms/task)"
    )
    print(f"engine only (no process): {e:7.3f} s   ({e / n * 1000:.3f} ms per task, durable)")


if __name__ == "__main__":
    main()
