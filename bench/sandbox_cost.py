"""What the sandbox costs, measured side by side in interleaved rounds.

- bare: ``subprocess.run(["true"])``;
- command: one sandboxed ``true`` (one bubblewrap exec, plus ``setpriv`` when vigil runs
  as root), with and without the limits (the attempt's cgroup, or the ``prlimit``
  wrapper where no cgroup can be made);
- attempt: prepare + ``true`` + capture + discard, overlay (offline, online) and snapshot.

With ``--old-src DIR`` (the ``src`` directory of an older vigil, e.g. from
``git archive``), that version's sandboxed command is timed in the same rounds.

Usage: python bench/sandbox_cost.py [ROUNDS] [--old-src DIR]   (medians, p10, in ms)
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vigil.workspace import SandboxSettings, Workspace, spawn

_OLD = """
import json, sys
from pathlib import Path
from vigil.workspace import Workspace
root = Path(sys.argv[1])
sandbox = Workspace(root, Path(sys.argv[2]), mode="overlay").prepare("bench/old")
spec = sandbox.command(["true"], env={})
print(json.dumps([spec.argv, spec.env, spec.cwd]))
"""


def _old_command(src: str, root: Path) -> Callable[[], None]:
    """The older version's sandboxed `true`, prepared once in a separate interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _OLD, str(root), str(root.parent / "old-state")],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        check=True,
    )
    argv, env, cwd = json.loads(out.stdout)
    return lambda: subprocess.run(argv, env=env, cwd=cwd, check=True) and None


def main() -> None:
    args = sys.argv[1:]
    old_src = None
    if "--old-src" in args:
        at = args.index("--old-src")
        old_src = args[at + 1]
        del args[at : at + 2]
    rounds = int(args[0]) if args else 200
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        for i in range(50):
            (root / f"f{i}.txt").write_text(f"{i}\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        limited = Workspace(root, root / ".vigil", mode="overlay")
        unlimited = Workspace(
            root,
            root / ".vigil",
            mode="overlay",
            settings=SandboxSettings(max_processes=0, max_memory=0),
        )
        snapshot = Workspace(root, root / ".vigil", mode="snapshot")
        held = {
            "command (limits on)": limited.prepare("bench/held-limited"),
            "command (limits off)": unlimited.prepare("bench/held-unlimited"),
        }
        counter = iter(range(10**9))

        def command(name: str) -> Callable[[], None]:
            def run() -> None:
                # A spec is spawned once: a cgroup's way in is made for one command.
                assert spawn.run(held[name].command(["true"], env={})).returncode == 0

            return run

        def attempt(ws: Workspace, network: bool) -> Callable[[], None]:
            def run() -> None:
                sandbox = ws.prepare(f"bench/{next(counter)}", network=network)
                with sandbox.lock():
                    spec = sandbox.command(["true"], env={})
                    assert spawn.run(spec).returncode == 0
                    assert sandbox.capture().is_empty
                    sandbox.discard()

            return run

        cases: dict[str, Callable[[], None]] = {
            "bare subprocess `true`": lambda: subprocess.run(["true"], env=env, check=True),
            "sandboxed command, limits on": command("command (limits on)"),
            "sandboxed command, limits off": command("command (limits off)"),
            "attempt, overlay": attempt(limited, False),
            "attempt, overlay + network": attempt(limited, True),
            "attempt, snapshot (50 files)": attempt(snapshot, False),
        }
        if old_src:
            cases["older version's command"] = _old_command(old_src, root)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        try:
            for _ in range(rounds):
                for name in random.sample(list(cases), len(cases)):
                    used = _cpu()
                    start = time.perf_counter()
                    cases[name]()
                    samples[name].append((time.perf_counter() - start) * 1000)
                    cpu[name].append((_cpu() - used) * 1000)
        finally:  # the held sandboxes' cgroups outlive the temporary directory
            for sandbox in held.values():
                sandbox.discard()
    bare = statistics.median(samples["bare subprocess `true`"])
    print(
        f"{platform.node()}: {os.cpu_count()} cores, Linux {platform.release()}, "
        f"load {os.getloadavg()[0]:.1f}, uid {os.getuid()}, {rounds} interleaved rounds"
    )
    print("wall time: median, 10th percentile; CPU time (all processes): median")
    for name, values in samples.items():
        median = statistics.median(values)
        p10 = statistics.quantiles(values, n=10)[0]
        used = statistics.median(cpu[name])
        over = f"  (+{median - bare:.2f} over bare)" if name != "bare subprocess `true`" else ""
        print(f"{name:32s} {median:6.2f} ms  p10 {p10:6.2f} ms  cpu {used:6.2f} ms{over}")


def _cpu() -> float:
    """CPU seconds used so far by this process and every child it waited for."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
