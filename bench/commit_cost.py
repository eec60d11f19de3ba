"""Commit time against changeset size, including the rollback.

Sizes: 1, 10, 100, 1000 new files in one new directory, and a fresh virtualenv's shape
(3,000 new files in 100 new directories, two levels deep). Each size is committed and
rolled back ``--repeat`` times; medians are printed, as wall time and as CPU time of the
process (user + system: steadier on a busy machine).

Usage:
    python bench/commit_cost.py [--repeat N]
    python bench/commit_cost.py --old-src /path/to/other/checkout/src [--repeat N]

With ``--old-src``, the same measurements run against that source tree (e.g. a checkout
of main) in alternation with this one, and both are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = ("1", "10", "100", "1000", "venv-3000")


def _entries(ws: object, size: str) -> list[object]:
    from vigil.workspace import ChangeEntry, FileState

    put = ws.objects.put_bytes  # type: ignore[attr-defined]
    folder = FileState("dir", 0o755)
    if size.startswith("venv"):
        entries = [ChangeEntry("venv", None, folder), ChangeEntry("venv/lib", None, folder)]
        for d in range(100):
            entries.append(ChangeEntry(f"venv/lib/pkg{d}", None, folder))
            for i in range(30):
                data = f"# module {d}.{i}\n".encode() * 40
                state = FileState("file", 0o644, put(data), len(data))
                entries.append(ChangeEntry(f"venv/lib/pkg{d}/m{i}.py", None, state))
        return entries
    entries = [ChangeEntry("gen", None, folder)]
    for i in range(int(size)):
        data = f"file {i}\n".encode() * 20
        state = FileState("file", 0o644, put(data), len(data))
        entries.append(ChangeEntry(f"gen/f{i}", None, state))
    return entries


def measure_once() -> dict[str, dict[str, float]]:
    """One commit and one rollback of each size, in a fresh workspace: milliseconds."""
    from vigil.workspace import Changeset, Workspace

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        ws = Workspace(root, root / ".vigil", mode="snapshot")
        for size in SIZES:
            cs = Changeset(tuple(_entries(ws, size)))  # type: ignore[arg-type]
            row: dict[str, float] = {}
            for name in ("commit", "rollback"):
                wall, cpu = time.perf_counter(), time.process_time()
                if name == "commit":
                    ws.commit(cs)
                else:
                    ws.rollback([cs])
                row[f"{name}_wall"] = (time.perf_counter() - wall) * 1000
                row[f"{name}_cpu"] = (time.process_time() - cpu) * 1000
            out[size] = row
    return out


def _child(src: str | None) -> dict[str, dict[str, float]]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    done = subprocess.run(
        [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, dict[str, float]] = json.loads(done.stdout)
    return result


def _medians(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        size: {key: statistics.median(r[size][key] for r in runs) for key in runs[0][size]}
        for size in SIZES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--old-src", help="another source tree to measure alongside")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_once()))
        return
    here = str(Path(__file__).resolve().parent.parent / "src")
    new: list[dict[str, dict[str, float]]] = []
    old: list[dict[str, dict[str, float]]] = []
    for _ in range(args.repeat):  # alternated, so a busy spell hits both alike
        if args.old_src:
            old.append(_child(args.old_src))
        new.append(_child(here))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpu(s), {platform.platform()}")
    print(f"medians of {args.repeat} runs, ms (wall / cpu)")
    a, b = _medians(new), (_medians(old) if old else None)
    for size in SIZES:
        for op in ("commit", "rollback"):
            now = f"{a[size][op + '_wall']:8.1f} / {a[size][op + '_cpu']:7.1f}"
            line = f"{size:>10} {op:8}: this {now}"
            if b is not None:
                line += f"   old {b[size][op + '_wall']:8.1f} / {b[size][op + '_cpu']:7.1f}"
            print(line)


if __name__ == "__main__":
    main()
