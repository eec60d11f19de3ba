"""vigil's state directory is private to vigil's user, whatever the umask.

``.vigil/objects`` keeps the pre- and post-image of every file a step changed (a 0600
secret among them); the store, the logs and the reports hold what steps printed. Every
directory vigil makes there is 0700 and every file 0600, and a state directory an older
vigil left open is closed when vigil opens it. As root, each test also tries to read
the files as ``nobody`` (after checking ``nobody`` can reach the workspace itself).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from sec_support import as_root, open_to_all

from clitools import VIGIL, cli_env, vigil, write_plan
from enginetools import HANG
from test_workspace_support import overlay_available
from vigil.workspace import Workspace, spawn

MODES = sorted({"overlay" if overlay_available() else "snapshot", "snapshot"})

NOBODY = 65534
SECRET = "hunter2-very-secret"
root_only = pytest.mark.skipif(not as_root, reason="reading as another uid needs root")


def _run_with_umask(ws: Path, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [*VIGIL, *args],
        cwd=ws,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        preexec_fn=lambda: os.umask(0),  # the loosest umask there is
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _readable_as_nobody(path: Path) -> bool:
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    assert setpriv is not None
    done = subprocess.run(
        [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "cat", str(path)],
        capture_output=True,
        timeout=HANG,
        check=False,
    )
    return done.returncode == 0


def _entries(state: Path) -> list[Path]:
    return [state, *sorted(state.rglob("*"))]


@pytest.mark.parametrize("mode", MODES)
def test_everything_vigil_keeps_is_private_whatever_the_umask(tmp_path: Path, mode: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "creds.env").write_text(f"DB_PASSWORD={SECRET}\n")
    os.chmod(ws / "creds.env", 0o600)
    (ws / "README.md").write_text("public\n")
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config"), "VIGIL_ISOLATION": mode}
    assert vigil("keys", "init", cwd=ws, env=env).returncode == 0  # audit checkpoints too
    write_plan(ws / "edit.yaml", {"name": "edit", "project": "p", "phases": [{"id": "a", "tasks": [
        {"id": "t", "run": "sed -i 's/hunter2/rotated/' creds.env && echo printed-by-step"},
    ]}]})  # fmt: skip
    _run_with_umask(ws, env, "run", "edit.yaml", "--run-id", "r1")
    state = ws / ".vigil"
    entries = _entries(state)
    names = {p.relative_to(state).parts[0] for p in entries if p != state}
    # Each kind of thing vigil keeps was made, so the modes below cover all of them.
    assert {"objects", "vigil.db", "logs", "reports", "audit", "commits.log", "locks"} <= names
    assert ("snapshots" if mode == "snapshot" else "attempts") in names
    wide = [
        f"{p.relative_to(tmp_path)} {stat.S_IMODE(p.lstat().st_mode):04o}"
        for p in entries
        if p.lstat().st_mode & 0o077
    ]
    assert wide == []
    for p in entries:
        expected = 0o700 if p.is_dir() else 0o600
        assert stat.S_IMODE(p.lstat().st_mode) == expected, p
    blobs = [p for p in (state / "objects").rglob("*") if p.is_file()]
    assert any(SECRET in p.read_text(errors="replace") for p in blobs)  # the pre-image
    if as_root:
        open_to_all(ws)
        assert _readable_as_nobody(ws / "README.md"), "the control: nobody reaches the workspace"
        readable = [p for p in entries if p.is_file() and _readable_as_nobody(p)]
        assert readable == []


def test_an_open_state_directory_is_closed_when_vigil_opens_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    old = ws / ".vigil" / "objects" / "ab"
    old.mkdir(parents=True)
    (old / "cdef").write_text(f"{SECRET}\n")  # as an older vigil left it: 0644 in 0755 dirs
    for p in (ws / ".vigil", ws / ".vigil" / "objects", old):
        os.chmod(p, 0o755)
    os.chmod(old / "cdef", 0o644)
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("doctor", "--format", "json", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state_dir_exposed"] is None
    assert stat.S_IMODE((ws / ".vigil").stat().st_mode) == 0o700
    if as_root:
        open_to_all(ws)
        assert not _readable_as_nobody(old / "cdef")


@root_only
def test_doctor_warns_about_a_state_directory_it_cannot_close(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".vigil").mkdir(parents=True)
    os.chown(ws / ".vigil", NOBODY, NOBODY)  # not vigil's: vigil leaves its mode alone
    os.chmod(ws / ".vigil", 0o755)
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("doctor", "--format", "json", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    exposed = json.loads(done.stdout)["state_dir_exposed"]
    assert "open to other users" in exposed and "0755" in exposed
    text = " ".join(vigil("doctor", cwd=ws, env=env).stdout.split())  # unwrapped
    assert "open to other users" in text and "chmod 700" in text


def test_a_store_outside_the_state_directory_is_private_too(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    db = tmp_path / "elsewhere" / "deeper" / "runs.db"
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config"), "VIGIL_DATABASE_URL": f"sqlite:///{db}"}
    write_plan(ws / "p.yaml", {"name": "p", "project": "p", "phases": [
        {"id": "a", "tasks": [{"id": "t", "run": "echo hi"}]}
    ]})  # fmt: skip
    _run_with_umask(ws, env, "run", "p.yaml")
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db.parent.parent.stat().st_mode) == 0o700


def test_an_attempts_directory_is_private_and_its_sandbox_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    ws = Workspace(root, root / ".vigil", mode=MODES[0])
    sandbox = ws.prepare("private")
    try:
        if MODES[0] == "overlay":
            attempt_dir = next((root / ".vigil" / "attempts").iterdir())
            st = attempt_dir.stat()
            assert stat.S_IMODE(st.st_mode) == 0o700
            # As root, bubblewrap runs as the step's user and must enter it.
            owner = ws.identity.uid if ws.identity is not None else os.getuid()
            assert st.st_uid == owner
        spec = sandbox.command(["sh", "-c", "echo b > b.txt && cat a.txt"], env={})
        done = spawn.run(spec, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout == "a\n", done.stderr
        assert [e.path for e in sandbox.capture().entries] == ["b.txt"]
    finally:
        sandbox.discard()
    assert stat.S_IMODE((root / ".vigil").stat().st_mode) == 0o700
