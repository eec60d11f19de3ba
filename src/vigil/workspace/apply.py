"""Apply a changeset to the real workspace, crash-safely, one writer at a time.

The protocol: make the objects durable, write an intent record (fsync'd), apply each
operation idempotently (temp file in the same directory, then rename), sync the
filesystem, delete the intent. After a crash :func:`recover` finds the intent and rolls
the changeset forward to the end, so the workspace holds all of it or none of it.

Every read and write resolves its path beneath the workspace without following a link
in any component (:mod:`vigil.workspace.beneath`). A parent that is no longer a
directory is a conflict, never followed; a protected file is refused under any name
(:mod:`vigil.workspace.protect`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vigil.layout import open_private, private_dir
from vigil.words import plural
from vigil.workspace.beneath import KEPT_MODE, Blocked, Tree, UnsafePath
from vigil.workspace.changeset import ChangeEntry, Changeset
from vigil.workspace.errors import Conflict, ProtectedPathChanged
from vigil.workspace.objects import ObjectStore, fsync_dir, sync_filesystem
from vigil.workspace.protect import Protection, summary
from vigil.workspace.removal import remove_at
from vigil.workspace.state import FileState, state_at

# The one purpose whose changes may touch protected paths: a snapshot attempt wrote the
# real workspace (vigil.toml included) and its restore puts back what a person wrote.
RESTORE = "restore"


@dataclass
class Faults:
    """Hooks a test installs to break a commit on purpose; production leaves them empty.

    ``before_op`` is called before each write to the workspace (a test's hook may kill
    the process there to prove recovery).
    """

    before_op: Callable[[], None] | None = None


FAULTS = Faults()

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
    private_dir(lock_file.parent)
    fd = open_private(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
    finally:
        os.close(fd)


_BLOCKED = object()
_KINDS = {stat.S_IFREG: "file", stat.S_IFLNK: "symlink", stat.S_IFDIR: "dir"}


def _current(tree: Tree, rel: str, expected: Mapping[str, FileState | None]) -> object:
    """The state at ``rel``, read without following links.

    Below a parent that is a link or a file there is nothing, which is consistent only
    when the changeset itself expects that parent to be a link or file now (it replaces
    it); otherwise the path is :data:`_BLOCKED`.
    """
    try:
        return state_at(tree, rel)
    except Blocked as exc:
        seen = expected.get(exc.rel)
        return None if seen is not None and seen.kind != "dir" else _BLOCKED
    except UnsafePath:
        return _BLOCKED


def mismatches(root: Path, changeset: Changeset, *, expect: str) -> list[str]:
    """Paths whose current state is not the changeset's ``expect`` side ("before"/"after").

    Read without following links: a path below a parent that became a link or a file
    (and that the changeset does not change itself) is a mismatch.
    """
    entries = {e.path: e for e in changeset.entries}
    wanted = {e.path: e.before if expect == "before" else e.after for e in changeset.entries}
    bad: list[str] = []
    with Tree(root) as tree, tree.cached_dirs():
        for entry in changeset.entries:
            want = wanted[entry.path]
            now = _current(tree, entry.path, wanted)
            if now != want:
                bad.append(entry.path)
                continue
            other = entry.after if expect == "before" else entry.before
            removed = other is None or other.kind != "dir"
            if isinstance(now, FileState) and now.kind == "dir" and removed:
                # The directory will be removed: anything new inside it would be lost.
                for name in tree.listdir(entry.path):
                    child = f"{entry.path}/{name}"
                    if child not in entries:
                        bad.append(child)
            parent = entry.path.rpartition("/")[0]
            if parent and parent not in entries:
                up = _current(tree, parent, wanted)
                if not (isinstance(up, FileState) and up.kind == "dir"):
                    bad.append(parent)
    return sorted(set(bad))


def blocked_paths(root: Path, changeset: Changeset) -> list[str]:
    """Paths of ``changeset`` that lie below a link or a file the changeset does not change."""
    befores = {e.path: e.before for e in changeset.entries}
    out = []
    with Tree(root) as tree, tree.cached_dirs():
        for path in changeset.paths:
            try:
                tree.lstat(path)  # no content is read: only whether the path resolves
            except Blocked as exc:
                seen = befores.get(exc.rel)
                if seen is None or seen.kind == "dir":
                    out.append(path)
            except UnsafePath:
                out.append(path)
    return out


def protected_refusals(root: Path, changeset: Changeset, protection: Protection) -> list[str]:
    """Why ``changeset`` may not be applied to ``root``: protected names, link targets and
    identities (an existing entry or its directory that is a protected file or directory)."""
    reasons = protection.refusals((e.path, e.after) for e in changeset.entries)
    with Tree(root) as tree, tree.cached_dirs():
        for entry in changeset.entries:
            reason = _identity(tree, entry.path, protection)
            if reason is not None:
                reasons.append(reason)
    return reasons


def _identity(tree: Tree, rel: str, protection: Protection) -> str | None:
    try:
        with tree.parent(rel) as (fd, name):
            reason = protection.identity_reason(rel.rpartition("/")[0] or ".", os.fstat(fd))
            if reason is None:
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    reason = protection.identity_reason(rel, st)
            return reason
    except (Blocked, UnsafePath, FileNotFoundError):
        return None  # nothing is reached through it; the conflict check reports it


class _Ops:
    """Idempotent steps: each one checks whether its effect is already there."""

    def __init__(
        self,
        tree: Tree,
        objects: ObjectStore,
        protection: Protection | None,
        faults: Faults,
        *,
        whole_dirs: bool = False,
    ) -> None:
        self.tree = tree
        self.objects = objects
        self.protection = protection
        self.faults = faults
        # Undoing a snapshot attempt removes whole trees it made, however deep (a scan
        # does not enter paths longer than MAX_PATH, so their contents are not listed).
        self.whole_dirs = whole_dirs
        # Directories this pass made where nothing was: what goes into them is new.
        self.fresh: set[str] = set()

    def _tick(self) -> None:
        if self.faults.before_op is not None:
            self.faults.before_op()

    def _now(self, rel: str) -> FileState | None:
        try:
            return state_at(self.tree, rel)
        except Blocked as exc:
            raise Conflict(
                f"{exc.rel} became a {exc.what} while a change to {rel} was applied; "
                "vigil does not write through links",
                "Put the directory back (or remove what replaced it) and run `vigil resume`; "
                "the half-applied change is kept in .vigil/commits until it is finished.",
                details=[rel],
            ) from None

    def _guard(self, rel: str) -> None:
        if self.protection is None:
            return
        reason = _identity(self.tree, rel, self.protection)
        if reason is not None:
            raise ProtectedPathChanged(summary([reason]), details=[rel])

    def remove(self, entry: ChangeEntry) -> None:
        try:
            st = self.tree.lstat(entry.path)
        except Blocked:
            st = None
            self._now(entry.path)  # raises the conflict
        if st is None:
            return
        after = entry.after
        # Only a path of the final kind can already be in its final state; a file that is
        # to be removed anyway (a huge one a step left behind) is not read.
        same_kind = after is not None and after.kind == _KINDS.get(stat.S_IFMT(st.st_mode))
        if same_kind and self._now(entry.path) == after:
            return
        self._guard(entry.path)
        self._tick()
        if stat.S_ISDIR(st.st_mode) and self.whole_dirs:
            with self.tree.parent(entry.path) as (fd, name):
                remove_at(fd, name)
        elif stat.S_ISDIR(st.st_mode):
            self.tree.rmdir(entry.path)
        else:
            self.tree.unlink(entry.path)

    def put(self, entry: ChangeEntry, after: FileState | None) -> None:
        if after is None:
            return
        rel = entry.path
        if after.kind == "dir":
            now = self._now(rel)
            if now is None or now.kind != "dir":
                self._guard(rel)
                self._tick()
                # Owner-writable until set_dir_mode gives it its mode, after its children.
                self.tree.mkdir(rel, 0o700)
                if now is None:
                    self.fresh.add(rel)
            return
        if entry.before is None and rel.rpartition("/")[0] in self.fresh and self._create(entry):
            return
        if self._now(rel) == after:
            self.tree.discard_tmp(rel)
            return
        self._guard(rel)
        self._tick()
        if after.kind == "symlink":
            self.tree.symlink(rel, after.target or "")
        else:
            sha = after.sha256 or ""
            self.tree.write_file(
                rel, lambda fd: self.objects.copy_into(sha, fd), after.mode, after.mtime_ns
            )

    def _create(self, entry: ChangeEntry) -> bool:
        """Write a new path straight under its final name in a directory this pass made:
        no temporary, no rename, no check of what was there (nothing was). False if
        something is there after all (then the ordinary, checked way writes it).

        A crash can leave a partial file under the final name; recovery compares every
        path with the changeset and rewrites it (temporary and rename), as for any other.
        """
        after = entry.after
        assert after is not None
        with self.tree.parent(entry.path) as (fd, name):
            self._tick()
            if after.kind == "symlink":
                try:
                    os.symlink(after.target or "", name, dir_fd=fd)
                except FileExistsError:
                    return False
                return True
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                out = os.open(name, flags, 0o600, dir_fd=fd)
            except FileExistsError:
                return False
            try:
                self.objects.copy_into(after.sha256 or "", out)
                os.fchmod(out, after.mode & KEPT_MODE)
                if after.mtime_ns is not None:
                    # The time the step left (a venv's .pyc files stay current).
                    os.utime(out, ns=(after.mtime_ns, after.mtime_ns))
            finally:
                os.close(out)
            return True

    def set_dir_mode(self, entry: ChangeEntry, after: FileState | None) -> None:
        if after is None:
            return
        try:
            st = self.tree.lstat(entry.path)
        except Blocked:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            self._now(entry.path)  # a blocked parent is a conflict; a missing dir is not ours
            return
        if st.st_mode & KEPT_MODE != after.mode:
            self._tick()
            self.tree.chmod(entry.path, after.mode)

    def run(self, changeset: Changeset) -> None:
        """Removals deepest first, then creations parents first, then directory modes."""
        entries = changeset.entries
        if self.protection is not None:
            refused = self.protection.refusals((e.path, e.after) for e in entries)
            if refused:
                raise ProtectedPathChanged(summary(refused), details=refused)
        deepest_first = sorted(entries, key=lambda e: e.path.count("/"), reverse=True)
        # Each phase resolves a directory once (beneath the root, no link followed). Removals
        # go deepest first, so no directory is looked into after it was removed; the later
        # phases remove nothing.
        with self.tree.cached_dirs():
            for entry in deepest_first:
                before, after = entry.before, entry.after
                if before is not None and (after is None or after.kind != before.kind):
                    self._step(self.remove, entry)
        with self.tree.cached_dirs():
            for entry in entries:
                if entry.after is not None:
                    self._step(lambda e: self.put(e, e.after), entry)
            for entry in deepest_first:
                if entry.after is not None and entry.after.kind == "dir":
                    self._step(lambda e: self.set_dir_mode(e, e.after), entry)

    def _step(self, op: Callable[[ChangeEntry], None], entry: ChangeEntry) -> None:
        """One operation; a directory that vanished or became a link under it is a conflict."""
        try:
            op(entry)
        except (Blocked, FileNotFoundError, NotADirectoryError) as exc:
            raise Conflict(
                f"{entry.path} could not be applied: {exc}; vigil does not write through "
                "links or into directories that moved",
                "Put the directory back (or remove what replaced it) and run `vigil resume`; "
                "the half-applied change is kept in .vigil/commits until it is finished.",
                details=[entry.path],
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EISDIR, errno.EEXIST):
                raise
            # A directory is in the way: one to remove holds what this change did not make,
            # or one was made where a file is to go (put there or moved in since). vigil
            # never deletes it, even when forced.
            raise Conflict(
                f"{entry.path} could not be applied: a directory holding files this change "
                "did not make is in the way",
                "Move those files out of the way (or keep the directory) and run the command "
                "again; nothing of theirs was deleted.",
                details=[entry.path],
            ) from None


class Applier:
    """Crash-safe application of changesets to one workspace."""

    def __init__(
        self,
        root: Path,
        state_dir: Path,
        objects: ObjectStore,
        *,
        protected: Sequence[str] = (),
        faults: Faults | None = None,
    ) -> None:
        self.root = root
        self.objects = objects
        self.protected = tuple(protected)
        self.faults = faults
        self.intents = state_dir / "commits"
        self.lock_file = state_dir / "locks" / "commit.lock"

    def protection(self) -> Protection:
        """The protected paths with the identities they have now."""
        return Protection.of(self.root, self.protected)

    def apply(self, changeset: Changeset, *, purpose: str) -> None:
        """Apply ``changeset``; the caller holds :attr:`lock_file` and checked conflicts.

        Protected paths are refused (by name, link target and identity) before anything
        is written, except when a snapshot attempt's own writes are undone.
        """
        if changeset.is_empty:
            return
        protection = None if purpose == RESTORE else self.protection()
        if protection is not None:
            refused = protected_refusals(self.root, changeset, protection)
            if refused:
                raise ProtectedPathChanged(summary(refused), details=refused)
        blocked = blocked_paths(self.root, changeset)
        if blocked:
            raise Conflict(
                f"{plural(len(blocked), 'path')} below a link or file that replaced a directory: "
                + ", ".join(blocked[:5]),
                "vigil never writes through links: put the directory back, then try again.",
                details=blocked,
            )
        with self.objects.reading():
            for entry in changeset.entries:
                sha = entry.after.sha256 if entry.after is not None else None
                if sha is not None and not self.objects.has(sha):
                    raise FileNotFoundError(f"object {sha} for {entry.path} is missing")
        sync_filesystem(self.objects.root)
        intent = self._write_intent(changeset, purpose)
        self._run(changeset, protection, purpose)
        self._finish(intent)

    def _run(self, changeset: Changeset, protection: Protection | None, purpose: str) -> None:
        with Tree(self.root) as tree, self.objects.reading():
            faults = self.faults or FAULTS
            ops = _Ops(tree, self.objects, protection, faults, whole_dirs=purpose == RESTORE)
            ops.run(changeset)

    def recover(self) -> list[str]:
        """Finish every half-applied changeset; returns one line per intent handled."""
        if not self.intents.is_dir():
            return []
        done: list[str] = []
        for intent in sorted(self.intents.glob("*.json")):
            data = json.loads(intent.read_text())
            changeset = Changeset.from_dict(data["changeset"])
            purpose = str(data["purpose"])
            self._run(changeset, None if purpose == RESTORE else self.protection(), purpose)
            self._finish(intent)
            done.append(f"finished {purpose} of {plural(len(changeset.entries), 'path')}")
        for stray in self.intents.glob("*.tmp"):
            stray.unlink()
        return done

    def _write_intent(self, changeset: Changeset, purpose: str) -> Path:
        private_dir(self.intents)
        final = self.intents / f"{purpose}-{changeset.id}.json"
        tmp = final.with_suffix(".tmp")
        body = json.dumps({"purpose": purpose, "changeset": changeset.to_dict()})
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        with os.fdopen(fd, "w") as fh:
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
