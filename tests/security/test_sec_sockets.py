"""No network means no host sockets either: filesystem Unix sockets anywhere the step can
name them, and abstract ones. Each attack connects from inside a real sandbox to a real
server the test runs (or to the host's PostgreSQL), and the invariant is checked on both
sides: the step failed, and the server accepted nothing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sec_support import (
    UnixServer,
    as_root,
    connect_from,
    host_can_connect,
    make_workspace,
    needs_overlay,
    open_to_all,
)

pytestmark = needs_overlay

PG_SOCKETS = ("/var/run/postgresql/.s.PGSQL.5432", "/run/postgresql/.s.PGSQL.5432")


def _attack(ws_parent: Path, address: str, *, network: bool = False, rounds: int = 2) -> None:
    server = UnixServer(address)
    try:
        assert host_can_connect(address), "control: the server must be reachable from the host"
        server.wait_for(1)
        before = server.accepted
        ws = make_workspace(ws_parent)
        for i in range(rounds):
            sandbox = ws.prepare(f"sock-{uuid.uuid4().hex[:8]}-{i}", network=network)
            try:
                proc = connect_from(sandbox, address)
            finally:
                sandbox.discard()
            assert proc.returncode != 0, proc.stdout + proc.stderr
            assert "connected" not in proc.stdout
            assert server.accepted == before
    finally:
        server.close()


@pytest.mark.parametrize("path", PG_SOCKETS)
def test_host_postgresql_socket_is_unreachable(tmp_path: Path, path: str) -> None:
    if not os.path.exists(path):
        pytest.skip(f"no PostgreSQL socket at {path} on this machine")
    ws = make_workspace(tmp_path)
    sandbox = ws.prepare("pg")
    try:
        proc = connect_from(sandbox, path)
    finally:
        sandbox.discard()
    assert proc.returncode != 0
    assert "connected" not in proc.stdout
    assert host_can_connect(path), "control: the socket works from the host"


def test_socket_under_host_tmp_is_unreachable(tmp_path: Path) -> None:
    address = f"/tmp/vigil-sec-{uuid.uuid4().hex[:8]}.sock"
    _attack(tmp_path, address)


def test_socket_under_run_is_unreachable(tmp_path: Path) -> None:
    base = Path("/run") if as_root else Path(os.environ.get("XDG_RUNTIME_DIR") or "/nonexistent")
    if not os.access(base, os.W_OK):
        pytest.skip(f"{base} is not writable by this user")
    _attack(tmp_path, str(base / f"vigil-sec-{uuid.uuid4().hex[:8]}.sock"))


def test_socket_in_home_is_unreachable(tmp_path: Path) -> None:
    home = Path.home()
    if not os.access(home, os.W_OK):
        pytest.skip("HOME is not writable")
    _attack(tmp_path, str(home / f".vigil-sec-{uuid.uuid4().hex[:8]}.sock"))


def test_socket_in_the_workspace_parent_is_unreachable(tmp_path: Path) -> None:
    open_to_all(tmp_path)
    _attack(tmp_path, str(tmp_path / "agent.sock"))


def test_socket_inside_the_workspace_is_unreachable(tmp_path: Path) -> None:
    open_to_all(tmp_path)
    ws = make_workspace(tmp_path)
    server = UnixServer(str(ws.root / "dev-server.sock"))
    try:
        assert host_can_connect(server.address)
        server.wait_for(1)
        before = server.accepted
        sandbox = ws.prepare("inside")
        try:
            proc = connect_from(sandbox, server.address)
        finally:
            sandbox.discard()
        assert proc.returncode != 0
        assert server.accepted == before
    finally:
        server.close()


def test_socket_in_a_tool_directory_on_path_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory on PATH is visible read-only; a socket in it must still be dead."""
    tools = tmp_path / "tools"
    (tools / "bin").mkdir(parents=True)
    open_to_all(tools / "bin")
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    _attack(tmp_path, str(tools / "tool.sock"))


def test_socket_in_a_declared_read_only_path_is_unreachable(tmp_path: Path) -> None:
    from vigil.workspace import SandboxSettings

    extra = tmp_path / "shared"
    extra.mkdir()
    open_to_all(extra)
    server = UnixServer(str(extra / "shared.sock"))
    try:
        ws = make_workspace(tmp_path, settings=SandboxSettings(read_only_paths=(str(extra),)))
        sandbox = ws.prepare("extra")
        try:
            listing = connect_from(sandbox, server.address)
            seen = sandbox_ls(sandbox, str(extra))
        finally:
            sandbox.discard()
        assert "shared.sock" in seen, "the declared path is visible"
        assert listing.returncode != 0
        assert server.accepted == 0
    finally:
        server.close()


def sandbox_ls(sandbox: object, path: str) -> str:
    from sec_support import sh

    return sh(sandbox, f"ls -A {path}").stdout  # type: ignore[arg-type]


def test_abstract_socket_is_unreachable_without_network(tmp_path: Path) -> None:
    _attack(tmp_path, f"@vigil-sec-{uuid.uuid4().hex[:8]}")


def test_abstract_socket_is_reachable_with_network_as_documented(tmp_path: Path) -> None:
    """With `network` the host's network namespace is shared, and so are its abstract
    sockets and loopback services: docs/isolation.md says so; this keeps it honest."""
    server = UnixServer(f"@vigil-sec-{uuid.uuid4().hex[:8]}")
    try:
        ws = make_workspace(tmp_path)
        sandbox = ws.prepare("online", network=True)
        try:
            proc = connect_from(sandbox, server.address)
        finally:
            sandbox.discard()
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        server.close()


def test_filesystem_sockets_stay_unreachable_even_with_network(tmp_path: Path) -> None:
    _attack(tmp_path, f"/tmp/vigil-sec-{uuid.uuid4().hex[:8]}.sock", network=True, rounds=1)
