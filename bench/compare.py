"""vigil beside the tools people would otherwise use, on the workloads of issue 12.

Workloads (each task's command runs through ``sh -c`` everywhere, as vigil's ``run:`` does
for anything that is not a plain word list):

- ``true x1000``: 1,000 independent ``true`` at parallelism 2;
- ``chain 100``: 100 ``true``, each needing the one before (cost per hop);
- ``dag 20x50``: 20 layers of 50 ``true``, each task needing two of the layer before;
- ``work 50``: 50 independent tasks of a ``sh`` loop of 20,000 iterations (about 35 ms of
  CPU each on the development machine), at parallelism 2.

Runners: ``xargs -P 2`` (layer by layer for the DAG, one by one for the chain), the same
with every command inside ``unshare`` (user, mount, pid, net, ipc, uts namespaces: the
isolated baseline), ``make -j 2``, and the ``vigil run`` command (a whole process, fresh
workspace each time) in every isolation mode this vigil offers, found at start-up by
asking ``vigil doctor`` which mode each candidate value of ``VIGIL_ISOLATION`` gives.
DBOS and Prefect are measured only where importable; they are never installed by this
script.

Rounds are interleaved (every runner once per round, in a rotating order), and the table
shows medians and the ratio to plain xargs. Prints numbers; passes or fails nothing.

    python bench/compare.py [--quick] [--rounds 3] [--only true,chain,dag,work]
                            [--baseline-src OTHER_CHECKOUT/src] [--modes off,overlay]

``--baseline-src`` adds, for each vigil mode, the same ``vigil run`` with another
checkout's ``src`` first on ``PYTHONPATH`` (an older commit, say), in the same rounds.
``--modes`` keeps only the named isolation modes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

WORK = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"
UNSHARE = [
    "unshare",
    "--user",
    "--map-root-user",
    "--mount",
    "--pid",
    "--fork",
    "--net",
    "--ipc",
    "--uts",
]
CANDIDATE_MODES = ["off", "snapshot", "overlay", "bwrap", "bubblewrap", "sandbox", "auto"]


@dataclass
class Workload:
    """Tasks as (id, command, needs); ``layers`` groups them for xargs (a barrier each)."""

    name: str
    tasks: list[tuple[str, str, list[str]]]
    layers: list[list[str]] = field(default_factory=list)
    sequential: bool = False

    def command(self, task_id: str) -> str:
        """The shell command of a task."""
        return self._by_id[task_id]

    def __post_init__(self) -> None:
        self._by_id = {tid: cmd for tid, cmd, _ in self.tasks}
        if not self.layers:
            self.layers = [[tid for tid, _, _ in self.tasks]]


def workloads(quick: bool) -> list[Workload]:
    """The issue's four workloads (smaller with ``--quick``)."""
    n_true = 200 if quick else 1000
    n_chain = 30 if quick else 100
    layers, width = (5, 20) if quick else (20, 50)
    n_work = 20 if quick else 50
    chain = [(f"c{i}", "true", [f"c{i - 1}"] if i else []) for i in range(n_chain)]
    dag: list[tuple[str, str, list[str]]] = []
    for layer in range(layers):
        for i in range(width):
            needs = [f"d{layer - 1}_{i}", f"d{layer - 1}_{(i + 1) % width}"] if layer else []
            dag.append((f"d{layer}_{i}", "true", needs))
    return [
        Workload(f"true x{n_true}", [(f"t{i}", "true", []) for i in range(n_true)]),
        Workload(f"chain {n_chain}", chain, sequential=True),
        Workload(
            f"dag {layers}x{width}",
            dag,
            layers=[[f"d{layer}_{i}" for i in range(width)] for layer in range(layers)],
        ),
        Workload(f"work {n_work}", [(f"w{i}", WORK, []) for i in range(n_work)]),
    ]


def run_checked(argv: list[str], **kw: object) -> None:
    """Run ``argv``; a failure stops the benchmark with its output."""
    done = subprocess.run(argv, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[-400:]}")


def xargs_runner(prefix: list[str]) -> Callable[[Workload, Path], None]:
    """Each command through ``xargs -P 2`` (``-P 1`` for a chain), layer by layer."""

    def run(w: Workload, tmp: Path) -> None:
        parallel = "1" if w.sequential else "2"
        for layer in w.layers:
            lines = "\n".join(w.command(t) for t in layer) + "\n"
            argv = ["xargs", "-P", parallel, "-n", "1", "-d", "\n", *prefix, "sh", "-c"]
            run_checked(argv, input=lines)

    return run


def make_runner(w: Workload, tmp: Path) -> None:
    """A Makefile with one phony target per task and its needs as prerequisites."""
    lines = [".PHONY: all " + " ".join(t for t, _, _ in w.tasks), ""]
    lines.append("all: " + " ".join(t for t, _, _ in w.tasks))
    for tid, cmd, needs in w.tasks:
        lines.append(f"{tid}: {' '.join(needs)}")
        lines.append("\t@" + cmd.replace("$", "$$"))
    makefile = tmp / "Makefile"
    makefile.write_text("\n".join(lines) + "\n")
    run_checked(["make", "-s", "-j", "2", "-f", str(makefile), "all"], cwd=tmp)


def plan_yaml(w: Workload) -> str:
    """The workload as a vigil plan (JSON is YAML)."""
    tasks = []
    for tid, cmd, needs in w.tasks:
        task: dict[str, object] = {"id": tid, "run": cmd}
        if needs:
            task["needs"] = needs
        tasks.append(task)
    plan = {"name": "compare", "project": "bench", "phases": [{"id": "all", "tasks": tasks}]}
    return json.dumps(plan)


def vigil_exe() -> list[str]:
    """The installed ``vigil`` next to this Python."""
    exe = Path(sys.executable).with_name("vigil")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "vigil.cli.main"]


def vigil_env(mode: str, src: Path | None = None) -> dict[str, str]:
    """Environment for one isolation mode, with the default local SQLite store; ``src``
    (another checkout's ``src``) is imported instead of the installed vigil."""
    env = dict(os.environ, VIGIL_ISOLATION=mode)
    for name in ("VIGIL_DATABASE_URL", "VIGIL_WORKSPACE"):
        env.pop(name, None)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def vigil_runner(mode: str, src: Path | None = None) -> Callable[[Workload, Path], None]:
    """``vigil run plan.yaml -j 2`` in a fresh workspace."""
    exe = vigil_exe() if src is None else [sys.executable, "-m", "vigil.cli.main"]

    def run(w: Workload, tmp: Path) -> None:
        ws = tmp / "ws"
        ws.mkdir()
        (ws / "plan.yaml").write_text(plan_yaml(w))
        argv = [*exe, "run", "plan.yaml", "-j", "2", "-o", "json", "-w", str(ws)]
        run_checked(argv, cwd=ws, env=vigil_env(mode, src))

    return run


def isolation_modes() -> list[tuple[str, str]]:
    """(value, effective mode) for each distinct mode ``vigil doctor`` reports."""
    values = list(CANDIDATE_MODES)
    try:
        from typing import get_args

        from vigil.workspace.isolation import Mode

        values = [*get_args(Mode), *values]
    except ImportError:
        pass
    found: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for value in dict.fromkeys(values):
            done = subprocess.run(
                [*vigil_exe(), "doctor", "-o", "json", "-w", tmp],
                env=vigil_env(value),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                print(f"  VIGIL_ISOLATION={value}: skipped, doctor failed: {done.stderr.strip()}")
                continue
            mode = json.loads(done.stdout)["isolation"]["mode"]
            if mode in found.values():
                continue
            found[value] = mode
    return list(found.items())


def probe(name: str, runner: Callable[[Workload, Path], None]) -> str | None:
    """Why ``runner`` cannot run a one-task workload here, or None if it can."""
    tiny = Workload("probe", [("p0", "true", [])])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            runner(tiny, Path(tmp))
        except (RuntimeError, OSError) as exc:
            return str(exc)
    return None


def optional_frameworks() -> list[str]:
    """DBOS and Prefect: reported, measured only if installed (this script installs nothing)."""
    notes = []
    for module, label in (("dbos", "DBOS"), ("prefect", "Prefect")):
        if importlib.util.find_spec(module) is None:
            notes.append(f"{label}: not installed, skipped")
        else:
            notes.append(f"{label}: installed, but this script has no runner for it yet")
    return notes


def main() -> None:
    """Discover runners, run interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma list: true,chain,dag,work")
    parser.add_argument("--baseline-src", type=Path, default=None, help="another vigil's src")
    parser.add_argument("--modes", default=None, help="comma list of isolation modes to keep")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    loads = workloads(args.quick)
    if args.only:
        wanted = args.only.split(",")
        loads = [w for w in loads if w.name.split()[0] in wanted]

    print("discovering runners ...")
    runners: dict[str, Callable[[Workload, Path], None]] = {"xargs": xargs_runner([])}
    candidates: dict[str, Callable[[Workload, Path], None]] = {
        "xargs+unshare": xargs_runner(UNSHARE),
        "make": make_runner,
    }
    for value, mode in isolation_modes():
        if args.modes and mode not in args.modes.split(","):
            continue
        candidates[f"vigil {mode}"] = vigil_runner(value)
        if args.baseline_src is not None:
            candidates[f"vigil {mode}, baseline"] = vigil_runner(value, args.baseline_src.resolve())
    for name, runner in candidates.items():
        if name.startswith("make") and shutil.which("make") is None:
            print(f"  {name}: skipped, make not found")
            continue
        why = probe(name, runner)
        if why is None:
            runners[name] = runner
        else:
            print(f"  {name}: skipped, {why}")
    for note in optional_frameworks():
        print(f"  {note}")

    times: dict[tuple[str, str], list[float]] = {}
    names = list(runners)
    for r in range(rounds):
        for w in loads:
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                with tempfile.TemporaryDirectory() as tmp:
                    started = time.perf_counter()
                    runners[name](w, Path(tmp))
                    times.setdefault((w.name, name), []).append(time.perf_counter() - started)
        print(f"  round {r + 1}/{rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)

    print()
    print(
        f"medians of {rounds} interleaved rounds; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    width = max(len(n) for n in names)
    header = f"{'':<{width}}" + "".join(f" {w.name:>20}" for w in loads)
    print(header)
    for name in names:
        cells = []
        for w in loads:
            t = statistics.median(times[(w.name, name)])
            base = statistics.median(times[(w.name, "xargs")])
            extra = f"{t / len(w.tasks) * 1000:.1f}ms/hop" if w.sequential else f"{t / base:.1f}x"
            cells.append(f" {t:8.2f}s {extra:>10}")
        print(f"{name:<{width}}" + "".join(cells))
    print("ratios are to plain xargs on the same workload; chain shows time per hop")


if __name__ == "__main__":
    main()
