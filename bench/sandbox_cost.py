"""Cost per attempt of the sandbox (prepare + run `true` + capture + discard) vs bare `true`.

Usage: python bench/sandbox_cost.py [ROUNDS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vigil.workspace import Workspace


def _measure(fn: Callable[[int], None], rounds: int) -> tuple[float, float]:
    samples = []
    for i in range(rounds):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), statistics.quantiles(samples, n=10)[-1]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        for i in range(50):
            (root / f"f{i}.txt").write_text(f"{i}\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

        def bare(_: int) -> None:
            subprocess.run(["true"], env=env, check=True)

        print(f"bare subprocess `true`: median {_measure(bare, rounds)[0]:.2f} ms")
        for mode in ("overlay", "snapshot"):
            ws = Workspace(root, root / ".vigil", mode=mode)  # type: ignore[arg-type]
            for network in (False, True):
                if mode == "snapshot" and network:
                    continue

                def sandboxed(i: int, ws: Workspace = ws, network: bool = network) -> None:
                    sandbox = ws.prepare(f"bench/{i}", network=network)
                    with sandbox.lock():
                        spec = sandbox.command(["true"], env={})
                        subprocess.run(spec.argv, env=spec.env, cwd=spec.cwd, check=True)
                        assert sandbox.capture().is_empty
                        sandbox.discard()

                median, p90 = _measure(sandboxed, rounds)
                label = f"{mode}{' +network' if network else ''}"
                print(f"sandboxed attempt ({label}): median {median:.2f} ms, p90 {p90:.2f} ms")


if __name__ == "__main__":
    main()
