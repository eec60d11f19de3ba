"""What the sandbox costs, measured side by side in interleaved rounds.

- bare: ``subprocess.run(["true"])``;
- command: one sandboxed ``true`` (one bubblewrap exec, plus ``setpriv`` when vigil runs
  as root), with and without the ``prlimit`` wrapper that applies the limits;
- attempt: prepare + ``true`` + capture + discard, overlay (offline, online) and snapshot.

Usage: python bench/sandbox_cost.py [ROUNDS]    (medians and 10th percentiles, in ms)
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vigil.workspace import SandboxSettings, Workspace


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
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
            spec = held[name].command(["true"], env={})

            def run() -> None:
                subprocess.run(spec.argv, env=spec.env, cwd=spec.cwd, check=True)

            return run

        def attempt(ws: Workspace, network: bool) -> Callable[[], None]:
            def run() -> None:
                sandbox = ws.prepare(f"bench/{next(counter)}", network=network)
                with sandbox.lock():
                    spec = sandbox.command(["true"], env={})
                    subprocess.run(spec.argv, env=spec.env, cwd=spec.cwd, check=True)
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
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name in random.sample(list(cases), len(cases)):
                start = time.perf_counter()
                cases[name]()
                samples[name].append((time.perf_counter() - start) * 1000)
        for sandbox in held.values():
            sandbox.discard()
    bare = statistics.median(samples["bare subprocess `true`"])
    print(f"{platform.node()}: {os.cpu_count()} cores, Linux {platform.release()}, "
          f"load {os.getloadavg()[0]:.1f}, uid {os.getuid()}, {rounds} interleaved rounds")
    for name, values in samples.items():
        median = statistics.median(values)
        p10 = statistics.quantiles(values, n=10)[0]
        over = f"  (+{median - bare:.2f} over bare)" if name != "bare subprocess `true`" else ""
        print(f"{name:32s} median {median:6.2f} ms   p10 {p10:6.2f} ms{over}")


if __name__ == "__main__":
    main()
