"""What the sandbox attack tests share: a real sandbox, real sockets, a step's exit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from test_workspace_support import make_project, overlay_available
from vigil.workspace import AttemptSandbox, SandboxSettings, Workspace, spawn

needs_overlay = pytest.mark.skipif(not overlay_available(), reason="needs the bubblewrap sandbox")
as_root = os.getuid() == 0

# Connects to the Unix socket (path, or @name for an abstract one) given as argv[1]:
# prints "connected" and exits 0 only if the connection was accepted.
CONNECT = (
    "import socket,sys\n"
    "p=sys.argv[1]\n"
    "p='\\0'+p[1:] if p.startswith('@') else p\n"
    "s=socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(5)\n"
    "try:\n"
    "    s.connect(p); print('connected'); sys.exit(0)\n"
    "except OSError as e:\n"
    "    print('refused', e); sys.exit(3)\n"
)


def make_workspace(
    parent: Path, *, settings: SandboxSettings | None = None, name: str = "project"
) -> Workspace:
    """A project with vigil state and keys beside it, sandboxed with ``settings``."""
    root = make_project(parent / name)
    (root / ".vigil").mkdir(exist_ok=True)
    (root / ".vigil" / "audit.log").write_text("AUDIT-ENTRY\n")
    return Workspace(root, root / ".vigil", mode="overlay", settings=settings)


def run_in(
    sandbox: AttemptSandbox,
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``sandbox`` exactly as the engine spawns it."""
    spec = sandbox.command(argv, env=dict(env or {}), cwd=cwd)
    return spawn.run(spec, capture_output=True, text=True, timeout=120, start_new_session=True)


def sh(sandbox: AttemptSandbox, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a sh script in ``sandbox``."""
    return run_in(sandbox, ["sh", "-c", script], **kw)  # type: ignore[arg-type]


def connect_from(sandbox: AttemptSandbox, address: str) -> subprocess.CompletedProcess[str]:
    """Try to connect to a Unix socket from inside ``sandbox``."""
    return run_in(sandbox, ["python3", "-c", CONNECT, address])


class UnixServer:
    """A real Unix socket server (filesystem or abstract) that counts what it accepts."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX)
        bind = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind)
        if not address.startswith("@"):
            # Anyone may connect: only the sandbox may stand in the way.
            os.chmod(address, 0o777)
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.accepted = 0
        self._counted = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            with self._counted:
                self.accepted += 1
                self._counted.notify_all()
            conn.close()

    def wait_for(self, count: int) -> None:
        """Block until ``count`` connections were accepted (the control's, say)."""
        with self._counted:
            self._counted.wait_for(lambda: self.accepted >= count)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
        if not self.address.startswith("@"):
            with_suppress_unlink(self.address)


def with_suppress_unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def serve(address: str) -> Iterator[UnixServer]:
    """A running :class:`UnixServer` for a ``with`` or a fixture."""
    server = UnixServer(address)
    try:
        yield server
    finally:
        server.close()


def host_can_connect(address: str) -> bool:
    """The control: the same socket is reachable from outside the sandbox."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect("\0" + address[1:] if address.startswith("@") else address)
        return True
    except OSError:
        return False
    finally:
        s.close()


def open_to_all(path: Path) -> None:
    """Make every directory from ``path`` up to / traversable, so the step's uid is never
    what stops it (root-run tests create paths under a private /tmp/pytest-of-root)."""
    for p in [path, *path.parents]:
        if p == Path("/"):
            break
        mode = p.stat().st_mode
        if p.is_dir() and not mode & 0o001:
            os.chmod(p, mode | 0o011)
