"""Apply a changeset to the real workspace, crash-safely, one writer at a time.

The protocol: make the objects durable, write an intent record (fsync'd), apply each
operation idempotently (temp file in the same directory, then rename), sync the
filesystem, delete the intent. After a crash :func:`recover` finds the intent and rolls
the changeset forward to the end, so the workspace holds all of it or none of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from vigil.workspace.changeset import ChangeEntry, Changeset
from vigil.workspace.objects import ObjectStore, fsync_dir, sync_filesystem
from vigil.workspace.state import FileState, state_of

# Tests set this to SIGKILL the process after N operations, to prove recovery.
FAULT_ENV = "VIGIL_FAULT_KILL_AFTER_OPS"
TMP_SUFFIX = ".vigil-tmp"


_held = threading.local()


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (threads and processes both wait).

    Re-entrant within one thread: a commit made while the same thread holds the
    snapshot lock of its attempt must not wait for itself.
    """
    key = str(lock_file)
    held: set[str] = getattr(_held, "paths", None) or set()
    _held.paths = held
    if key in held:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)


def mismatches(root: Path, changeset: Changeset, *, expect: str) -> list[str]:
    """Paths whose current state is not the changeset's ``expect`` side ("before"/"after")."""
    entries = {e.path: e for e in changeset.entries}
    bad: list[str] = []
    for entry in changeset.entries:
        want = entry.before if expect == "before" else entry.after
        now = state_of(root / entry.path)
        if now != want:
            bad.append(entry.path)
            continue
        other = entry.after if expect == "before" else entry.before
        if now is not None and now.kind == "dir" and (other is None or other.kind != "dir"):
            # The directory will be removed: anything new inside it would be lost.
            for name in os.listdir(root / entry.path):
                child = f"{entry.path}/{name}"
                if child not in entries:
                    bad.append(child)
        parent = entry.path.rpartition("/")[0]
        if parent and parent not in entries and not (root / parent).is_dir():
            bad.append(parent)
    return sorted(set(bad))


class _Ops:
    """Idempotent steps: each one checks whether its effect is already there."""

    def __init__(self, root: Path, objects: ObjectStore) -> None:
        self.root = root
        self.objects = objects
        budget = os.environ.get(FAULT_ENV)
        self.budget = int(budget) if budget else None

    def _tick(self) -> None:
        if self.budget is None:
            return
        self.budget -= 1
        if self.budget < 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def remove(self, entry: ChangeEntry) -> None:
        path = self.root / entry.path
        now = state_of(path)
        if now is None or now == entry.after:
            return
        self._tick()
        if now.kind == "dir":
            os.rmdir(path)
        else:
            path.unlink()

    def put(self, entry: ChangeEntry, after: FileState) -> None:
        path = self.root / entry.path
        if after.kind == "dir":
            if not path.is_dir() or path.is_symlink():
                self._tick()
                path.mkdir()
            return
        if state_of(path) == after:
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + TMP_SUFFIX).unlink()
            return
        self._tick()
        tmp = path.with_name(path.name + TMP_SUFFIX)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if after.kind == "symlink":
            os.symlink(after.target or "", tmp)
        else:
            self.objects.copy_to(after.sha256 or "", tmp)
            os.chmod(tmp, after.mode)
        os.replace(tmp, path)

    def set_dir_mode(self, entry: ChangeEntry, after: FileState) -> None:
        path = self.root / entry.path
        if (path.stat().st_mode & 0o7777) != after.mode:
            self._tick()
            os.chmod(path, after.mode)

    def run(self, changeset: Changeset) -> None:
        """Removals deepest first, then creations parents first, then directory modes."""
        entries = changeset.entries
        for entry in sorted(entries, key=lambda e: e.path.count("/"), reverse=True):
            before, after = entry.before, entry.after
            if before is not None and (after is None or after.kind != before.kind):
                self.remove(entry)
        for entry in entries:
            if entry.after is not None:
                self.put(entry, entry.after)
        for entry in sorted(entries, key=lambda e: e.path.count("/"), reverse=True):
            if entry.after is not None and entry.after.kind == "dir":
                self.set_dir_mode(entry, entry.after)


class Applier:
    """Crash-safe application of changesets to one workspace."""

    def __init__(self, root: Path, state_dir: Path, objects: ObjectStore) -> None:
        self.root = root
        self.objects = objects
        self.intents = state_dir / "commits"
        self.lock_file = state_dir / "locks" / "commit.lock"

    def apply(self, changeset: Changeset, *, purpose: str) -> None:
        """Apply ``changeset``; the caller holds :attr:`lock_file` and checked conflicts."""
        if changeset.is_empty:
            return
        for entry in changeset.entries:
            sha = entry.after.sha256 if entry.after is not None else None
            if sha is not None and not self.objects.has(sha):
                raise FileNotFoundError(f"object {sha} for {entry.path} is missing")
        sync_filesystem(self.objects.root)
        intent = self._write_intent(changeset, purpose)
        _Ops(self.root, self.objects).run(changeset)
        self._finish(intent)

    def recover(self) -> list[str]:
        """Finish every half-applied changeset; returns one line per intent handled."""
        if not self.intents.is_dir():
            return []
        done: list[str] = []
        for intent in sorted(self.intents.glob("*.json")):
            data = json.loads(intent.read_text())
            changeset = Changeset.from_dict(data["changeset"])
            _Ops(self.root, self.objects).run(changeset)
            self._finish(intent)
            done.append(f"finished {data['purpose']} of {len(changeset.entries)} path(s)")
        for stray in self.intents.glob("*.tmp"):
            stray.unlink()
        return done

    def _write_intent(self, changeset: Changeset, purpose: str) -> Path:
        self.intents.mkdir(parents=True, exist_ok=True)
        final = self.intents / f"{purpose}-{changeset.id}.json"
        tmp = final.with_suffix(".tmp")
        body = json.dumps({"purpose": purpose, "changeset": changeset.to_dict()})
        with tmp.open("w") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(self.intents)
        return final

    def _finish(self, intent: Path) -> None:
        sync_filesystem(self.root)
        intent.unlink()
        fsync_dir(self.intents)
