"""The overlay sandbox keeps a step inside its box: real namespaces, real mounts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from enginetools import HANG
from test_workspace_support import make_project, overlay_available, run
from vigil.workspace import Workspace, spawn, tree_hash

pytestmark = pytest.mark.skipif(not overlay_available(), reason="needs userns + overlayfs")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    config = tmp_path / "home" / ".config" / "vigil"
    config.mkdir(parents=True)
    (config / "signing.key").write_text("SECRET-KEY-MATERIAL\n")
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(config))
    root = make_project(tmp_path / "project")
    (root / ".vigil").mkdir()
    (root / ".vigil" / "audit.log").write_text("entry 1\n")
    return Workspace(root, root / ".vigil", mode="overlay")


def test_root_filesystem_and_usr_are_read_only(ws: Workspace) -> None:
    sandbox = ws.prepare("ro")
    for target in ("/etc/vigil-escape", "/usr/vigil-escape", "/vigil-escape"):
        proc = run(sandbox, f"echo x > {target}", check=False)
        assert proc.returncode != 0
        assert "Read-only file system" in proc.stderr or "Permission denied" in proc.stderr
        assert not Path(target).exists()
    sandbox.discard()


def test_home_is_private_and_empty(ws: Workspace) -> None:
    home = Path.home()
    marker = home / f"vigil-home-marker-{os.getpid()}"
    marker.write_text("host secret")
    try:
        sandbox = ws.prepare("home")
        proc = run(sandbox, f'ls -A "$HOME"; cat {marker}; echo x > "$HOME/scratch"', check=False)
        assert "host secret" not in proc.stdout
        assert marker.name not in proc.stdout
        assert not (home / "scratch").exists()
        sandbox.discard()
    finally:
        marker.unlink()


def test_tmp_is_private_and_empty(ws: Workspace, tmp_path: Path) -> None:
    marker = Path("/tmp") / f"vigil-host-marker-{os.getpid()}"
    marker.write_text("host")
    try:
        sandbox = ws.prepare("tmp")
        out = run(sandbox, "ls -A /tmp; echo inside > /tmp/scratch").stdout.split()
        # Only the workspace's own path may show when the workspace lives under /tmp,
        # and the read-only homes of programs the step may run (a virtualenv there).
        from vigil.workspace.rootfs import tool_dirs

        tmp_tools = [Path(d) for d in tool_dirs() if d.startswith("/tmp/")]
        allowed = {ws.root.parts[2]} | {d.parts[2] for d in tmp_tools}
        assert marker.name not in out
        assert all(name in allowed for name in out)
        assert not (Path("/tmp") / "scratch").exists()
        sandbox.discard()
    finally:
        marker.unlink()


def test_cannot_escape_by_unmounting_or_remounting(ws: Workspace) -> None:
    sandbox = ws.prepare("escape")
    script = (
        "umount .vigil; mount -o remount,rw /; unshare -r true;"
        " cat .vigil/audit.log; echo x > /etc/vigil-escape"
    )
    proc = run(sandbox, script, check=False)
    assert "entry 1" not in proc.stdout
    assert not Path("/etc/vigil-escape").exists()
    sandbox.discard()


def test_state_dir_and_user_keys_are_hidden(ws: Workspace) -> None:
    from vigil.config import user_config_dir

    sandbox = ws.prepare("hidden")
    config = user_config_dir()
    proc = run(sandbox, f"ls -A .vigil {config}; cat {config}/signing.key", check=False)
    assert "audit.log" not in proc.stdout
    assert "SECRET-KEY-MATERIAL" not in proc.stdout
    assert "signing.key" not in proc.stdout
    write = run(sandbox, "echo forged > .vigil/audit.log", check=False)
    assert write.returncode != 0
    assert (ws.root / ".vigil" / "audit.log").read_text() == "entry 1\n"
    sandbox.discard()


def test_policy_file_is_read_only(ws: Workspace) -> None:
    sandbox = ws.prepare("policy")
    proc = run(sandbox, "cat vigil.toml; echo 'allow=[\"*\"]' > vigil.toml", check=False)
    assert "[policy]" in proc.stdout
    assert proc.returncode != 0
    rm = run(sandbox, "rm -f vigil.toml; mv README.md vigil.toml", check=False)
    assert rm.returncode != 0
    assert sandbox.capture().paths == []
    sandbox.discard()


def test_creating_a_missing_policy_file_is_refused(ws: Workspace) -> None:
    from vigil.workspace import ProtectedPathChanged

    (ws.root / "vigil.toml").unlink()
    sandbox = ws.prepare("policy-new")
    run(sandbox, "echo 'allow=[\"*\"]' > vigil.toml")
    with pytest.raises(ProtectedPathChanged) as err:
        sandbox.capture()
    assert err.value.code == "VIGIL-PROTECTED-PATH"
    sandbox.discard()


def test_environment_is_reduced_to_the_allowlist(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak-me")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    sandbox = ws.prepare("env")
    out = run(sandbox, "env", env={"GIVEN": "yes"}).stdout
    assert "leak-me" not in out
    assert "GIVEN=yes" in out
    assert "LC_ALL=C.UTF-8" in out
    assert "PATH=" in out
    sandbox.discard()


class _Server:
    """A real TCP server on the host's loopback that records accepted connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.sendall(b"hello\n")
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


CONNECT = (
    "python3 -c \"import socket,sys; s=socket.create_connection(('127.0.0.1', {port}), 5);"
    ' print(s.recv(10).decode().strip())"'
)


def test_no_network_by_default(ws: Workspace, server: _Server) -> None:
    sandbox = ws.prepare("offline")
    proc = run(sandbox, CONNECT.format(port=server.port), check=False)
    assert proc.returncode != 0
    assert "hello" not in proc.stdout
    assert server.accepted == 0
    # Loopback inside the box works, so local test servers still run.
    local = run(sandbox, "python3 -c \"import socket; socket.socket().bind(('127.0.0.1', 0))\"")
    assert local.returncode == 0
    sandbox.discard()


def test_network_when_requested(ws: Workspace, server: _Server) -> None:
    sandbox = ws.prepare("online", network=True)
    proc = run(sandbox, CONNECT.format(port=server.port))
    assert proc.stdout.strip() == "hello"
    assert server.accepted == 1
    sandbox.discard()


def test_workspace_appears_at_its_real_path(ws: Workspace) -> None:
    sandbox = ws.prepare("path")
    assert run(sandbox, "pwd").stdout.strip() == str(ws.root)
    assert run(sandbox, "pwd", cwd="src/lib").stdout.strip() == str(ws.root / "src" / "lib")
    assert run(sandbox, "cat README.md").stdout == "hello\n"
    sandbox.discard()


def test_killing_the_spawned_process_kills_the_whole_tree(ws: Workspace, tmp_path: Path) -> None:
    sandbox = ws.prepare("tree")
    spec = sandbox.command(
        ["sh", "-c", "(sleep 300 & sleep 300 & wait) & echo started; wait"], env={}
    )
    proc = spawn.start(spec, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"started"
    deadline = time.monotonic() + HANG
    inner = _descendants(proc.pid)
    # sh as init, the step's sh, the subshell and both sleeps.
    while len(inner) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
        inner = _descendants(proc.pid)
    assert len(inner) >= 5
    # Only the direct child dies, as when the engine dies and PDEATHSIG fires.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline and any(_alive(p) for p in inner):
        time.sleep(0.05)
    assert not [p for p in inner if _alive(p)]
    sandbox.discard()


@pytest.mark.parametrize("round_", range(3))
def test_sigterm_reaches_the_step(ws: Workspace, round_: int) -> None:
    """Stopping a sandboxed command (as the engine does on timeout, cancel or Ctrl-C)
    delivers SIGTERM to the step itself, and the sandbox reports the step's own status."""
    from vigil.executors.process import TAG_VARIABLE, end_tree

    sandbox = ws.prepare(f"term-{round_}")
    spec = sandbox.command(
        ["sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"],
        env={},
    )
    assert spec.supervisor
    tag = f"term-test/{os.getpid()}/{round_}"
    proc = spawn.start(
        spec, env={**spec.env, TAG_VARIABLE: tag}, stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    survivors = end_tree(proc.pid, tag, grace=30.0, spare=proc.pid)
    out, _ = proc.communicate(timeout=HANG)
    assert survivors == []
    assert b"got-term" in out
    assert proc.returncode == 7
    sandbox.discard()


def test_discard_leaves_workspace_unchanged(ws: Workspace) -> None:
    before = tree_hash(ws.root)
    sandbox = ws.prepare("discard")
    run(sandbox, "rm -rf src old README.md && echo junk > new.txt && chmod 600 script.sh")
    sandbox.discard()
    sandbox.discard()
    assert tree_hash(ws.root) == before
    assert not any((ws.root / ".vigil" / "attempts").iterdir())


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True)
    children: dict[int, list[int]] = {}
    for line in out.stdout.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
