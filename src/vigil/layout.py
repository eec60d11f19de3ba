"""Where vigil keeps a workspace's files under its state directory (``.vigil/``), and how.

One place for the layout, so the engine that writes these files and the commands, the
dashboard and the reports that read them agree without importing one another.

Everything in the state directory is private to vigil's user, whatever the umask: the
objects hold pre- and post-images of workspace files (a 0600 secret among them), the
store and the logs hold what steps printed. Directories are made 0700 and files 0600
(:func:`private_dir`, :func:`open_private`); a state directory an older vigil left
open to others is closed again when it is opened (:func:`secure_state_dir`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Make directory ``path`` and its missing parents, each 0700; returns ``path``.

    ``Path.mkdir(parents=True, mode=...)`` gives the parents the umask's mode, so a fresh
    ``.vigil`` made on the way to ``.vigil/logs/RUN`` would be readable by everyone.
    """
    missing: list[Path] = []
    here = path
    while not here.is_dir():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for part in reversed(missing):
        try:
            os.mkdir(part, PRIVATE_DIR)
        except FileExistsError:
            if not part.is_dir():  # a file in the way: the caller reports it
                raise
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` of a file in the state directory: created 0600, never through a link;
    an existing file that others may read (an older vigil's) is made 0600 first."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o077)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), as a 0600 file in a 0700 directory."""
    private_dir(path.parent)
    fd = open_private(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def secure_state_dir(state_dir: Path) -> int | None:
    """Close an existing state directory to other users (0700); the mode it had if it
    was changed, else None. One ``stat``: what lies inside is unreachable once its
    directory is closed. A directory of another owner is left for ``vigil doctor``."""
    try:
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not st.st_mode & 0o077 or st.st_uid != os.geteuid():
            return None
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~0o077)
        return stat.S_IMODE(st.st_mode)
    except OSError:
        return None
    finally:
        os.close(fd)


def state_dir_exposure(state_dir: Path) -> str | None:
    """Why other users can reach ``state_dir`` (for ``vigil doctor``), or None if they
    cannot (or it does not exist yet: it is made private)."""
    try:
        st = os.stat(state_dir, follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return f"the state directory {state_dir} is a symbolic link"
    if st.st_mode & 0o077:
        return (
            f"the state directory {state_dir} is open to other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid})"
        )
    return None


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
        private_dir(state_dir)
        fd = os.open(state_dir / ".gitignore", flags, 0o600)
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
