"""Fixed cost of a ``vigil`` command: whole-process wall time, median of N runs.

Sets up throw-away workspaces (a small plan; a finished 10,000-task run made with the
engine alone; 100 small finished runs), then runs each command N times, interleaved
(one of each per round), and prints the median beside the goal from issue 12.
Prints numbers; passes or fails nothing.

    python bench/cli_latency.py [--rounds 7] [--status-tasks 10000] [--runs 100]
                                [--baseline-src OLD_CHECKOUT/src]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SMALL_PLAN = """\
name: small
project: bench
phases:
  - id: build
    tasks:
      - {id: compile, run: "true"}
      - {id: test, run: "true", needs: [compile]}
      - {id: lint, run: "true"}
  - id: ship
    tasks:
      - {id: package, run: "true"}
"""


def vigil_cmd() -> list[str]:
    """The installed ``vigil`` entry point next to this Python, as a user would run it."""
    exe = Path(sys.executable).with_name("vigil")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vigil.cli.main"]


Case = tuple[str, list[str], float]


def make_runs(workspace: Path, tasks: int, count: int, base_env: dict[str, str]) -> str:
    """``count`` finished engine-only runs of ``tasks`` tasks in ``workspace``; the last id."""
    code = (
        "import sys, os\n"
        "from pathlib import Path\n"
        "import engine_throughput as et\n"
        "from vigil.config import load_config\n"
        "from vigil.engine import driver\n"
        "from vigil.engine.runs import start_run\n"
        "from vigil.store import open_store\n"
        "driver.execute_attempt = et._no_process\n"
        "ws = Path(sys.argv[1]); config = load_config(ws)\n"
        "store = open_store(config.database_url)\n"
        "for _ in range(int(sys.argv[3])):\n"
        "    out = start_run(config, store, et.make_plan(int(sys.argv[2])), 'bench.yaml',"
        " max_parallel=2)\n"
        "print(out.run_id)\n"
    )
    env = dict(base_env, VIGIL_SQLITE_SYNCHRONOUS="NORMAL")
    src = [base_env["PYTHONPATH"]] if base_env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([*src, str(Path(__file__).resolve().parent), *sys.path])
    done = subprocess.run(
        [sys.executable, "-c", code, str(workspace), str(tasks), str(count)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one whole process; raises if it fails.

    CPU time is shown beside wall time because it moves much less when other work shares
    the machine.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def cases_for(tmp: Path, env: dict[str, str], args: argparse.Namespace) -> list[Case]:
    """Workspaces made by the code ``env`` selects, and the commands to time on them."""
    small, big, many = tmp / "small", tmp / "big", tmp / "many"
    for ws in (small, big, many):
        ws.mkdir(parents=True)
    (small / "plan.yaml").write_text(SMALL_PLAN)
    big_run = make_runs(big, args.status_tasks, 1, env)
    make_runs(many, 3, args.runs, env)
    vigil = vigil_cmd()
    return [
        ("vigil --version", [*vigil, "--version"], 0.15),
        ("vigil plan check (4 tasks)", [*vigil, "plan", "check", str(small / "plan.yaml")], 0.3),
        (
            f"vigil status ({args.status_tasks} tasks)",
            [*vigil, "status", big_run, "-w", str(big)],
            0.3,
        ),
        (f"vigil runs ({args.runs} runs)", [*vigil, "runs", "-n", "100", "-w", str(many)], 0.2),
    ]


def main() -> None:
    """Set up, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--status-tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also time the vigil package under this src/ directory (e.g. an older "
        "checkout), interleaved with this one, and print the ratio",
    )
    args = parser.parse_args()

    env = dict(os.environ, VIGIL_ISOLATION="off")
    for name in ("VIGIL_DATABASE_URL", "VIGIL_WORKSPACE"):
        env.pop(name, None)
    trees = {"this": env}
    if args.baseline_src is not None:
        trees["baseline"] = dict(env, PYTHONPATH=str(args.baseline_src.resolve()))
    tmp = Path(tempfile.mkdtemp(prefix="vigil-cli-bench-"))
    try:
        print(f"setting up: a {args.status_tasks}-task run and {args.runs} runs ...", flush=True)
        cases = {tree: cases_for(tmp / tree, tenv, args) for tree, tenv in trees.items()}
        runnable: dict[str, list[Case]] = {}
        for tree, tree_cases in cases.items():
            runnable[tree] = []
            for case in tree_cases:  # warm the page cache and .pyc files once
                try:
                    timed(case[1], trees[tree])
                except SystemExit as exc:
                    print(f"  {tree}: {case[0]}: skipped, {exc}")
                    continue
                runnable[tree].append(case)
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for index in range(len(cases["this"])):
                for tree in trees:
                    for name, argv, _ in runnable[tree]:
                        if name != cases["this"][index][0]:
                            continue
                        wall, used = timed(argv, trees[tree])
                        times.setdefault((tree, name), []).append(wall)
                        cpu.setdefault((tree, name), []).append(used)
        load = os.getloadavg()[0]
        print(
            f"{args.rounds} interleaved rounds, python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs, load average {load:.1f}; CPU = user + system of the process"
        )
        head = f"{'command':<30} {'wall':>8} {'CPU':>8} {'goal':>6}"
        if "baseline" in trees:
            head += f" {'base wall':>10} {'base CPU':>9} {'CPU ratio':>9}"
        print(head)
        for name, _, goal in cases["this"]:
            wall = statistics.median(times[("this", name)])
            used = statistics.median(cpu[("this", name)])
            line = f"{name:<30} {wall:7.3f}s {used:7.3f}s {goal:5.2f}s"
            if ("baseline", name) in times:
                bwall = statistics.median(times[("baseline", name)])
                bcpu = statistics.median(cpu[("baseline", name)])
                line += f" {bwall:9.3f}s {bcpu:8.3f}s {used / bcpu:8.2f}x"
            elif "baseline" in trees:
                line += f" {'n/a':>10}"
            print(line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
