"""Commit time against changeset size (1, 10, 100, 1000 files), including the rollback.

Usage: python bench/commit_cost.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from vigil.workspace import ChangeEntry, Changeset, FileState, Workspace


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        ws = Workspace(root, root / ".vigil", mode="snapshot")
        for size in (1, 10, 100, 1000):
            entries = [ChangeEntry("gen", None, FileState("dir", 0o755))]
            for i in range(size):
                data = f"file {i}\n".encode() * 20
                sha = ws.objects.put_bytes(data)
                entries.append(
                    ChangeEntry(f"gen/f{i}", None, FileState("file", 0o644, sha, len(data)))
                )
            cs = Changeset(tuple(entries))
            commits, rollbacks = [], []
            for _ in range(5):
                start = time.perf_counter()
                ws.commit(cs)
                commits.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                ws.rollback([cs])
                rollbacks.append((time.perf_counter() - start) * 1000)
            print(
                f"{size:5d} files: commit median {statistics.median(commits):8.1f} ms,"
                f" rollback median {statistics.median(rollbacks):8.1f} ms"
            )


if __name__ == "__main__":
    main()
