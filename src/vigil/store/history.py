"""Whether a workspace's state directory holds the history of earlier runs.

A store that is missing or empty while run logs, committed objects, the commit log or
reports of earlier runs lie beside it has been lost or replaced (a truncated file, a
deleted file, a changed URL). Creating a fresh store there would quietly start history
afresh, so :func:`vigil.store.open_store` refuses until a person says so
(``vigil store init --force``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

HISTORY_ENTRIES: Final = ("logs", "objects", "commits.log", "reports", "snapshots")
"""What earlier runs leave in ``.vigil/``; each is written only after a run was stored."""


def _present(path: Path) -> bool:
    try:
        if path.is_dir():
            return any(path.iterdir())
        return path.stat().st_size > 0
    except OSError:
        # Unreadable counts as present: refusing is the safe answer.
        return path.is_symlink() or path.exists()


def history_in(state_dir: Path) -> list[str]:
    """The entries of ``state_dir`` that show earlier runs, in a fixed order."""
    return [name for name in HISTORY_ENTRIES if _present(state_dir / name)]
