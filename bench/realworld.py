"""vigil's wall time against a shell's on real projects' nightly jobs (issue 17).

The projects and the job are those of ``tests/realworld`` (real sdists from PyPI, pinned
by version and hash; a venv with the test dependency installed from the index, the test
suite, ``compileall``, ``pip wheel``, a validated one-line change). Each round, for each
project, runs the job once in ``bash`` and once as ``vigil run PLAN --grant G`` (overlay
or whatever isolation the machine gives, SQLite store, no review), each on a fresh copy
of the unpacked tree, in alternating order (the shell gets this process's environment
less ``PYTHONDONTWRITEBYTECODE``, which vigil does not pass to steps). Both sides keep
their own pip cache across rounds; a first, untimed round warms them. Prints medians and
the ratio; passes or fails nothing.

Usage: python bench/realworld.py [ROUNDS] [--project NAME]...   (default: 3 rounds, all)
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "realworld"))

from projects import PROJECTS, VIGIL_TOML, Project, plan, run_direct, shell_env, unpack

VIGIL = [sys.executable, "-m", "vigil.cli.main"]


def _vigil(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VIGIL, *args], cwd=cwd, env=env, capture_output=True, text=True)


class Bench:
    def __init__(self, project: Project, base: Path) -> None:
        self.project = project
        self.base = base / project.name
        self.base.mkdir()
        self.shell_env = shell_env(self.base / "home-shell")
        host = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        self.vigil_env = {
            **host,
            "HOME": str(self.base / "home-vigil"),
            "VIGIL_CONFIG_DIR": str(self.base / "config"),
        }
        self.plan = self.base / "nightly.yaml"
        self.plan.write_text(yaml.safe_dump(plan(project), sort_keys=False))
        done = _vigil("keys", "init", cwd=self.base, env=self.vigil_env)
        assert done.returncode == 0, done.stderr
        made = _vigil(
            "grant", "create", "--project", project.name, "--env", "dev", "--allow",
            "network", "--plan", str(self.plan), "--expires-in", "12h",
            cwd=self.base, env=self.vigil_env,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        self.grant = made.stdout.strip()
        self.count = 0

    def _fresh(self, kind: str) -> Path:
        self.count += 1
        where = self.base / f"{kind}-{self.count}"
        unpack(self.project, where)
        return where

    def shell(self) -> float:
        ws = self._fresh("shell")
        start = time.perf_counter()
        codes = run_direct(self.project, ws, ws.parent / f"{ws.name}-logs", self.shell_env)
        took = time.perf_counter() - start
        assert set(codes.values()) == {0}, (ws, codes)
        shutil.rmtree(ws)
        return took

    def vigil(self) -> float:
        ws = self._fresh("vigil")
        (ws / "vigil.toml").write_text(VIGIL_TOML)
        start = time.perf_counter()
        done = _vigil("run", str(self.plan), "--grant", self.grant, cwd=ws, env=self.vigil_env)
        took = time.perf_counter() - start
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        shutil.rmtree(ws)
        return took


def _machine(where: Path) -> str:
    done = _vigil("doctor", "--format", "json", cwd=where, env=dict(os.environ))
    isolation = json.loads(done.stdout)["isolation"]
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; isolation "
        f"{isolation['mode']}; steps run as {isolation.get('steps_run_as') or 'you'}"
    )


def main() -> None:
    args = sys.argv[1:]
    names: list[str] = []
    while "--project" in args:
        at = args.index("--project")
        names.append(args[at + 1])
        del args[at : at + 2]
    rounds = int(args[0]) if args else 3
    chosen = [PROJECTS[n] for n in names] if names else list(PROJECTS.values())
    with tempfile.TemporaryDirectory(prefix="vigil-realworld-", dir="/var/tmp") as tmp:
        print(f"machine: {_machine(Path(tmp))}")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        benches = [Bench(p, Path(tmp)) for p in chosen]
        print("untimed first round (warms both pip caches)...", flush=True)
        for bench in benches:
            bench.shell()
            bench.vigil()
        times: dict[str, dict[str, list[float]]] = {
            b.project.name: {"shell": [], "vigil": []} for b in benches
        }
        for n in range(rounds):
            for bench in benches:
                sides = ["shell", "vigil"] if n % 2 == 0 else ["vigil", "shell"]
                for side in sides:
                    took = bench.shell() if side == "shell" else bench.vigil()
                    times[bench.project.name][side].append(took)
                    print(f"  round {n + 1} {bench.project.name} {side}: {took:.1f} s", flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print(f"medians of {rounds} interleaved rounds (wall time, whole job):")
    print(f"{'project':<24} {'shell':>9} {'vigil':>9} {'vigil/shell':>12}")
    for name, sides in times.items():
        shell, vig = statistics.median(sides["shell"]), statistics.median(sides["vigil"])
        version = PROJECTS[name].version
        print(f"{name + ' ' + version:<24} {shell:>8.1f}s {vig:>8.1f}s {vig / shell:>11.2f}x")


if __name__ == "__main__":
    main()
