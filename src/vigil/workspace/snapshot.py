"""The fallback where namespaces or overlayfs are unavailable: run in place, under a lock.

Before the attempt the workspace is scanned and every file copied into the object store;
after it, a second scan gives the same :class:`Changeset` overlay mode would. The
workspace is then put back as it was, so commit and discard work exactly as in overlay
mode. A manifest of the before-scan on disk lets :func:`restore_interrupted` undo an
attempt that was running when vigil died.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from vigil.errors import LimitExceeded
from vigil.layout import write_private
from vigil.workspace.apply import RESTORE, Applier, locked
from vigil.workspace.beneath import Blocked, Tree, UnsafePath
from vigil.workspace.capture import check_protected, diff_states, states_reader, store_images
from vigil.workspace.changeset import Changeset, compose
from vigil.workspace.errors import ProtectedPathChanged
from vigil.workspace.ignore import IgnoreRules
from vigil.workspace.limits import Limits, Tally
from vigil.workspace.objects import ObjectStore, fsync_dir, sync_filesystem
from vigil.workspace.outputs import FILE_NAME, OutputFile
from vigil.workspace.protect import Protection, summary
from vigil.workspace.removal import remove_tree
from vigil.workspace.spawn import SpawnSpec, reduced_env, resolve_cwd
from vigil.workspace.state import FileState, scan, scan_against, walk


class SnapshotSandbox:
    """An attempt that runs directly in the workspace, isolated only by a lock."""

    mode = "snapshot"

    def __init__(
        self,
        *,
        root: Path,
        state_dir: Path,
        key: str,
        objects: ObjectStore,
        applier: Applier,
        exclude: Sequence[str],
        protected: Sequence[str],
        base_layers: Sequence[Changeset],
        limits: Limits | None = None,
    ) -> None:
        self.root = root
        self.objects = objects
        self.applier = applier
        self.exclude = exclude
        self.protected = protected
        self.base_layers = list(base_layers)
        self.limits = limits or Limits()
        self.manifest = state_dir / "snapshots" / f"{key}.json"
        self.lock_file = state_dir / "locks" / "snapshot.lock"
        io = state_dir / "attempts" / key / "io"
        self.outputs = OutputFile(io, str(io / FILE_NAME))
        self.outputs.create()
        self._before: dict[str, FileState] | None = None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise writers: hold this around the whole attempt, capture and commit."""
        with locked(self.lock_file):
            yield

    def _start(self) -> dict[str, FileState]:
        if self._before is None:
            extra: dict[str, int] = {}
            before = scan(self.root, self.exclude, extra=extra)
            store_images(self.root, before, self.objects)
            sync_filesystem(self.objects.root)
            body = {k: v.to_dict() for k, v in before.items()}
            tmp = self.manifest.with_suffix(".tmp")
            record = {"root": str(self.root), "before": body, "extra": extra}
            write_private(tmp, json.dumps(record))
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.manifest)
            fsync_dir(self.manifest.parent)
            if self.base_layers:
                # A dry run stacks its dependencies' changes; the manifest undoes them.
                with locked(self.applier.lock_file):
                    self.applier.apply(compose(self.base_layers), purpose="stack")
            self._before = scan(self.root, self.exclude)
        return self._before

    def command(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None
    ) -> SpawnSpec:
        """The Popen arguments that run ``argv`` in the workspace itself."""
        self._start()
        workdir = resolve_cwd(self.root, cwd)
        return SpawnSpec(list(argv), reduced_env(env), str(workdir))

    def limit_hit(self) -> LimitExceeded | None:
        """Snapshot attempts have no process or memory limits to hit."""
        return None

    def capture(self) -> Changeset:
        """The attempt's changes; the workspace is put back to how it was before."""
        before = self._start()
        # Identities are read before the step's changes are undone: a hard link the
        # step made to vigil.toml shares its inode only until then.
        protection = Protection.of(self.root, [*self.protected, *self.exclude])
        try:
            self._precount(before, self.limits.tally())
            after = scan(self.root, self.exclude)
            # The rules are read now, from the tree the step left, before it is put back.
            changeset = diff_states(
                before,
                after,
                IgnoreRules.for_workspace(self.root),
                ignore_before=IgnoreRules.of(states_reader(before, self.objects)),
            )
            self._check(changeset, protection)
            changed = {e.path: e.after for e in changeset.entries if e.after is not None}
            store_images(self.root, changed, self.objects)
        finally:
            self.discard()
        return changeset

    def count_changes(self, tally: Tally) -> bool:
        """What the running step changed so far, counted into ``tally`` (which raises
        VIGIL-LIMIT); for the disk watchdog. True: every directory could be read."""
        before = self._before
        if before is not None:
            self._precount(before, tally)
        return True

    def _precount(self, before: Mapping[str, FileState], tally: Tally) -> None:
        """VIGIL-LIMIT from ``lstat`` alone, before anything new is hashed or copied: paths
        that are new, changed kind or changed size count with their full size."""
        for rel, _fd, _name, st in walk(self.root, self.exclude):
            old = before.get(rel)
            if stat.S_ISREG(st.st_mode):
                if old is None or old.kind != "file" or old.size != st.st_size:
                    tally.path(rel)
                    tally.content(rel, st.st_size)
            elif old is None:
                tally.path(rel)

    def _check(self, changeset: Changeset, protection: Protection) -> None:
        """Protected paths (name, link, identity) and limits, before any content is copied."""
        check_protected(changeset, protection)
        tally = self.limits.tally()
        with Tree(self.root) as tree:
            for entry in changeset.entries:
                tally.path(entry.path)
                after = entry.after
                if after is None or after.kind != "file":
                    continue
                tally.content(entry.path, after.size)
                st = tree.lstat(entry.path)
                reason = None if st is None else protection.identity_reason(entry.path, st)
                if reason is not None:
                    raise ProtectedPathChanged(summary([reason]), details=[entry.path])

    def discard(self) -> None:
        """Put the workspace back as it was before the attempt; idempotent."""
        if self.manifest.exists():
            restore_interrupted(self.applier, self.root, self.manifest, self.exclude)
        self._before = None
        remove_tree(self.outputs.directory.parent)


def restore_interrupted(
    applier: Applier, root: Path, manifest: Path, exclude: Sequence[str]
) -> list[str]:
    """Undo a snapshot attempt recorded in ``manifest``; returns the paths put back.

    Setuid, setgid, sticky and write-for-others bits are not part of a changeset, so the
    ones the attempt added are taken off here; the ones the workspace had stay. None is
    ever added back.
    """
    data = json.loads(manifest.read_text())
    before = {k: FileState.from_dict(v) for k, v in data["before"].items()}
    had = data.get("extra")
    with locked(applier.lock_file):
        extra: dict[str, int] = {}
        now = scan_against(root, before, exclude, extra=extra)
        back = _outermost(diff_states(now, before, IgnoreRules()))
        applier.apply(back, purpose=RESTORE)
        if isinstance(had, dict):  # a manifest written before vigil recorded them
            _clear_added_bits(root, extra, {k: int(v) for k, v in had.items()})
    manifest.unlink()
    return back.paths


def _outermost(changeset: Changeset) -> Changeset:
    """``changeset`` without the paths below a directory it removes: the restore removes
    such a directory whole (:mod:`vigil.workspace.removal`), so a tree of any depth the
    attempt made goes, even below what a scan enters."""
    removed: set[str] = set()  # removed whole, with everything found below them so far
    kept = []
    for entry in changeset.entries:  # sorted: a directory comes before what lies in it
        if entry.path.rpartition("/")[0] in removed:
            removed.add(entry.path)
            continue
        kept.append(entry)
        before, after = entry.before, entry.after
        if before is not None and before.kind == "dir" and (after is None or after.kind != "dir"):
            removed.add(entry.path)
    return Changeset(tuple(kept))


def _clear_added_bits(root: Path, now: Mapping[str, int], had: Mapping[str, int]) -> None:
    with Tree(root) as tree:
        for rel, bits in now.items():
            added = bits & ~had.get(rel, 0)
            if added:
                # Gone or replaced by the restore already: nothing of it is left to clear.
                with contextlib.suppress(FileNotFoundError, Blocked, UnsafePath):
                    tree.clear_bits(rel, added)
