"""The overlay sandbox one attempt runs in.

Each command runs as ``unshare`` (user + mount + pid [+ net] namespaces) -> a POSIX sh
that stays as the namespace's init -> one ``mount -a`` over a generated fstab that builds
a new root -> ``unshare --user --root`` (chroot, the caller's uid, no capabilities) ->
the command. The new root is the host's mounts bound read-only, a fresh /proc, private
tmpfs /tmp and /dev/shm, the workspace as an overlay at its real path, empty read-only
tmpfs over vigil's state and the user's keys, and vigil.toml bound read-only.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from vigil.workspace.capture import capture_upper
from vigil.workspace.changeset import Changeset, IgnoreRules
from vigil.workspace.errors import ProtectedPathChanged, SandboxUnavailable
from vigil.workspace.isolation import Tools
from vigil.workspace.objects import ObjectStore
from vigil.workspace.spawn import SpawnSpec, reduced_env, remove_tree, resolve_cwd
from vigil.workspace.view import StackedView, materialise

SETUP_FAILED = 125
# Mount points replaced by fresh private mounts; the host's copies stay hidden below.
_REPLACED = ("/proc", "/tmp", "/dev/shm")
_UNSAFE_IN_OPTIONS = set(",:\\ \t\n#=")


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


# Per-mount flags the kernel locks in a child namespace: a remount must repeat them.
_LOCKED_FLAGS = ("nosuid", "nodev", "noexec", "noatime", "nodiratime", "relatime", "strictatime")


def host_mount_points() -> dict[str, str]:
    """Mount points of this namespace (parents first) with the flags a remount must keep."""
    seen: dict[str, str] = {}
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            flags = [f for f in fields[5].split(",") if f in _LOCKED_FLAGS]
            seen[_unescape(fields[4])] = "".join("," + f for f in flags)
    order = sorted(seen, key=lambda p: (0 if p == "/" else p.count("/"), p))
    return {p: seen[p] for p in order}


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _tools_under_tmp(*inside_only: str) -> list[str]:
    """Directories under /tmp that hold this Python, its packages or programs on ``PATH``.

    Paths inside ``inside_only`` (the workspace, the attempt's own directory) are left
    out: the overlay and the attempt provide those.
    """
    wanted = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), *sys.path]
    wanted += os.environ.get("PATH", "").split(os.pathsep)
    wanted += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    found: list[str] = []
    for raw in wanted:
        if not raw or not os.path.isabs(raw):
            continue
        real = os.path.realpath(raw)
        if not _under(real, "/tmp") or real == "/tmp" or not os.path.isdir(real):
            continue
        if any(_under(real, skip) for skip in inside_only):
            continue
        if _UNSAFE_IN_OPTIONS & set(real):
            continue
        found.append(real)
    found.sort(key=len)
    kept: list[str] = []
    for path in found:
        if not any(_under(path, k) for k in kept):
            kept.append(path)
    return kept


def _fstab_field(text: str) -> str:
    out = []
    for ch in text:
        out.append(f"\\{ord(ch):03o}" if ch in " \t\n\\#" else ch)
    return "".join(out)


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
        tools: Tools,
    ) -> None:
        self.root = root
        self.dir = attempt_dir
        self.upper = attempt_dir / "upper"
        self.work = attempt_dir / "work"
        self.newroot = attempt_dir / "root"
        self.fstab = attempt_dir / "fstab"
        self.view = view
        self.objects = objects
        self.protected = protected
        self.network = network
        self.tools = tools
        for path in (root, attempt_dir):
            if _UNSAFE_IN_OPTIONS & set(str(path)):
                raise SandboxUnavailable(
                    f"path {str(path)!r} has a character overlayfs options cannot carry",
                    "Move the workspace to a path without , : = # spaces or backslashes, "
                    "or set VIGIL_ISOLATION=snapshot.",
                )
        if tools.setpriv is None and os.getuid() == 0:
            raise SandboxUnavailable(
                "setpriv is missing, so a step run by root would keep its capabilities",
                "Install util-linux's setpriv, run vigil as a normal user, or use snapshot mode.",
            )
        attempt_dir.mkdir(parents=True, exist_ok=True)
        # Stacked changesets start out in the upper directory itself: overlayfs refuses a
        # lower layer nested in another, and one layer keeps the mount cheap.
        materialise(base, objects, self.upper, StackedView(root, (), view.exclude))
        for path in (self.work, self.newroot):
            path.mkdir(exist_ok=True)
        self.fstab.write_text(self._fstab(hidden))

    def _fstab(self, hidden: Sequence[Path]) -> str:
        new = str(self.newroot)
        ws = str(self.root)

        def inside(path: str) -> str:
            return new + path if path != "/" else new

        points = host_mount_points()
        lines = [f"/ {_fstab_field(new)} none rbind,ro{points.get('/', '')} 0 0"]
        skip = (*_REPLACED, ws, str(self.dir))
        for point, flags in points.items():
            if point == "/" or any(_under(point, s) for s in skip):
                continue
            src, dst = _fstab_field(point), _fstab_field(inside(point))
            lines.append(f"{src} {dst} none rbind,ro{flags} 0 0")
        lines.append(f"proc {inside('/proc')} proc nosuid,nodev,noexec 0 0")
        sys_dir = _fstab_field(inside("/proc/sys"))
        lines.append(f"{sys_dir} {sys_dir} none bind,ro 0 0")
        lines.append(f"tmpfs {inside('/tmp')} tmpfs mode=1777,nosuid,nodev 0 0")
        if Path("/dev/shm").is_dir():
            lines.append(f"tmpfs {inside('/dev/shm')} tmpfs mode=1777,nosuid,nodev 0 0")
        for tool_dir in _tools_under_tmp(ws, str(self.dir)):
            # /tmp is private, but programs the step runs may live there (a virtualenv
            # or a CI checkout under /tmp): those directories stay visible, read-only.
            field = _fstab_field(tool_dir)
            lines.append(f"{field} {_fstab_field(inside(tool_dir))} none bind,ro,X-mount.mkdir 0 0")
        options = f"lowerdir={ws},upperdir={self.upper},workdir={self.work},userxattr"
        lines.append(f"overlay {inside(ws)} overlay {options},X-mount.mkdir 0 0")
        for path in hidden:
            text = str(path)
            replaced = not _under(text, ws) and any(_under(text, r) for r in _REPLACED)
            if path.is_dir() and not replaced:
                target = _fstab_field(inside(text))
                lines.append(f"tmpfs {target} tmpfs ro,mode=755,size=16k 0 0")
        for rel in self.protected:
            if (self.root / rel).is_file():
                target = _fstab_field(inside(f"{ws}/{rel}"))
                lines.append(f"{target} {target} none bind,ro 0 0")
        return "\n".join(lines) + "\n"

    def _script(self) -> str:
        t = self.tools
        q = shlex.quote
        drop = ""
        if os.getuid() == 0:
            drop = (
                f"{q(t.setpriv or 'setpriv')} --bounding-set=-all --inh-caps=-all --no-new-privs --"
            )
        lo = ""
        if not self.network and t.ip is not None:
            # Loopback up: tests that start local servers work; nothing leaves the box.
            lo = f"{q(t.ip)} link set lo up 2>/dev/null"
        return f"""\
{q(t.mount)} -a -T "$1" || {{ echo "vigil-sandbox: mounts failed" >&2; exit {SETUP_FAILED}; }}
{lo}
r=$2 w=$3 u=$4 g=$5; shift 5
exec 3<&0
{q(t.unshare)} --user --map-user="$u" --map-group="$g" --root="$r" --wd="$w" -- \\
  {drop} "$@" <&3 3<&- &
c=$!
exec 3<&-
trap 'kill -TERM $c 2>/dev/null' TERM
trap 'kill -INT $c 2>/dev/null' INT
trap 'kill -HUP $c 2>/dev/null' HUP
while :; do wait $c; s=$?; kill -0 $c 2>/dev/null || exit $s; done
"""

    def command(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None
    ) -> SpawnSpec:
        """The Popen arguments that run ``argv`` inside this sandbox."""
        workdir = resolve_cwd(self.root, cwd)
        outer = [self.tools.unshare, "--user", "--map-root-user", "--mount", "--pid", "--fork"]
        outer.append("--kill-child")
        if not self.network:
            outer.append("--net")
        args = [str(self.fstab), str(self.newroot), str(workdir), str(os.getuid())]
        args.append(str(os.getgid()))
        full = [*outer, "--", self.tools.sh, "-c", self._script(), "vigil-sandbox", *args, *argv]
        return SpawnSpec(full, reduced_env(env), str(self.root))

    def capture(self) -> Changeset:
        """The changes the attempt's commands made, with all images stored."""
        ignore = IgnoreRules.for_workspace(self.root)
        changeset = capture_upper(self.upper, self.view, self.objects, ignore)
        touched = [p for p in changeset.paths if p in self.protected]
        if touched:
            raise ProtectedPathChanged(f"the step changed {', '.join(touched)}")
        return changeset

    def discard(self) -> None:
        """Drop the attempt's upper and work directories; idempotent."""
        remove_tree(self.dir)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Overlay attempts need no workspace-wide lock; present for the common interface."""
        yield
