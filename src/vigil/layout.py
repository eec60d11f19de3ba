"""Where vigil keeps a workspace's files under its state directory (``.vigil/``).

One place for the layout, so the engine that writes these files and the commands, the
dashboard and the reports that read them agree without importing one another.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

STATE_GITIGNORE = "*\n"
"""What ``.gitignore`` in the state directory holds: git ignores the whole directory, as
pytest's ``.pytest_cache/`` does, with or without ``vigil init``."""


def make_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` (and its parents) if missing, with a ``.gitignore`` in it
    holding ``*`` unless it has one (of any kind) already.

    Best effort: the file only keeps vigil's state out of ``git status``, and whatever
    needs the directory reports its own failure to create it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with contextlib.suppress(OSError):
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / ".gitignore", flags, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(STATE_GITIGNORE)


def logs_dir(state_dir: Path, run_id: str) -> Path:
    """Where a run's captured output lives."""
    return state_dir / "logs" / run_id


def attempt_log(state_dir: Path, run_id: str, task_id: str, attempt: int) -> Path:
    """The log file of one attempt."""
    return logs_dir(state_dir, run_id) / task_id / f"{attempt}.log"


def phase_log(state_dir: Path, run_id: str, phase_id: str) -> Path:
    """The log file of one phase's completion checks."""
    return logs_dir(state_dir, run_id) / f"_phase.{phase_id}.log"


def rollback_log(state_dir: Path, run_id: str, task_id: str) -> Path:
    """The log file of a task's rollback steps."""
    return logs_dir(state_dir, run_id) / task_id / "rollback.log"


def reports_dir(state_dir: Path) -> Path:
    """Where completion reports are written."""
    return state_dir / "reports"


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC timestamp (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_tag(workspace: Path, run_id: str) -> str:
    """The start of the ``VIGIL_PROCESS_TAG`` of every process a run starts.

    Run ids are unique within one store, not on one machine: two workspaces may each hold
    a run called ``nightly``. The hashed workspace path in front keeps a resume or cancel
    in one from ending the other's processes.
    """
    scope = hashlib.sha256(str(workspace).encode()).hexdigest()[:12]
    return f"{scope}:{run_id}/"


def process_tag(workspace: Path, run_id: str, task_id: str, attempt: int | str) -> str:
    """The tag every process of one attempt (or a task's rollback steps) carries."""
    return f"{run_tag(workspace, run_id)}{task_id}/{attempt}"
