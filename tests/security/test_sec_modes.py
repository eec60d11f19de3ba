"""A step cannot plant a setuid program, or a file others can write, through a commit.

A root-run vigil writes a commit as root: a step's ``chmod 4755`` on a copy of a shell
would become a setuid-root shell any local user can run (and without root, a program
that runs as vigil's user, who holds the signing key). vigil writes only the permission
bits in ``KEPT_MODE`` (0775): never setuid, setgid, sticky or write-for-others, whether
the mode comes from a capture, a changeset in the store, a rollback or a snapshot
restore. As root, each test also runs the committed program as ``nobody`` and checks the
effective uid it gets; a control shows that this filesystem does honour setuid.
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

from clitools import vigil, write_plan
from enginetools import HANG
from test_workspace_support import attempt, overlay_available
from vigil.workspace import ChangeEntry, Changeset, FileState, Workspace
from vigil.workspace.beneath import KEPT_MODE
from vigil.workspace.state import Kind

MODES = sorted({"overlay" if overlay_available() else "snapshot", "snapshot"})
NOBODY = 65534
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")
root_only = pytest.mark.skipif(not as_root, reason="running a file as another uid needs root")

# What a hostile step does: setuid and setgid programs, a shared world-writable directory,
# a sticky one, a file anyone may write, and setuid added to an existing file.
PLANT = (
    "cp /usr/bin/id suid-id && chmod 4755 suid-id"
    " && cp /bin/sh rootsh && chmod 6755 rootsh"
    " && mkdir shared && chmod 2777 shared"
    " && mkdir sticky && chmod 1777 sticky"
    " && echo x > open.txt && chmod 666 open.txt"
    " && chmod u+s,o+w README.md"  # only bits vigil never writes: no change at all
)
EXPECTED = {
    "suid-id": 0o755,
    "rootsh": 0o755,
    "shared": 0o775,
    "sticky": 0o775,
    "open.txt": 0o664,
}


def _ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> Workspace:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "README.md").write_text("hello\n")
    return Workspace(root, root / ".vigil", mode=mode)


def _raw_modes(root: Path, names: list[str]) -> dict[str, int]:
    return {name: stat.S_IMODE(os.lstat(root / name).st_mode) for name in names}


def _euid_as_nobody(program: Path, *args: str) -> str:
    """What ``id -u`` says when user nobody runs ``program`` (the effective uid)."""
    assert SETPRIV is not None
    as_nobody = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    done = subprocess.run(
        [*as_nobody, str(program), *args],
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _setuid_is_honoured_here(directory: Path) -> None:
    """The control: a setuid-root copy of ``id`` made here does give nobody euid 0, so the
    uid the committed files give is what vigil wrote, not a ``nosuid`` mount."""
    control = directory / "control-id"
    shutil.copy("/usr/bin/id", control)
    try:
        os.chown(control, 0, 0)
        os.chmod(control, 0o4755)
        assert _euid_as_nobody(control, "-u") == "0"
    finally:
        control.unlink()


@pytest.mark.parametrize("mode", MODES)
def test_a_steps_special_bits_never_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    ws = _ws(tmp_path, monkeypatch, mode)
    changeset = attempt(ws, "plant", [PLANT])
    recorded = {e.path: e.after.mode for e in changeset.entries if e.after is not None}
    assert recorded == EXPECTED
    # The journal's form carries the same modes: nothing to forge back from.
    stored = Changeset.from_dict(json.loads(json.dumps(changeset.to_dict())))
    assert all(e.after is None or e.after.mode & ~KEPT_MODE == 0 for e in stored.entries)
    ws.commit(changeset)
    assert _raw_modes(ws.root, [*EXPECTED, "README.md"]) == {**EXPECTED, "README.md": 0o644}
    if as_root:
        assert (ws.root / "rootsh").stat().st_uid == 0  # written by vigil, as root
        open_to_all(ws.root)
        _setuid_is_honoured_here(ws.root)
        assert _euid_as_nobody(ws.root / "suid-id", "-u") == str(NOBODY)
        assert _euid_as_nobody(ws.root / "rootsh", "-p", "-c", "id -u") == str(NOBODY)


def _forced(kind: Kind, mode: int, sha: str | None = None, size: int = 0) -> FileState:
    """A state carrying bits a FileState never holds, as a bug or a forgery might make one
    past its constructor: the write itself must still refuse them."""
    state = FileState(kind, 0o755, sha, size)
    object.__setattr__(state, "mode", mode)
    return state


def test_a_forged_changeset_cannot_set_the_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _ws(tmp_path, monkeypatch, MODES[0])
    program = Path("/usr/bin/id").read_bytes()
    sha = ws.objects.put_bytes(program)
    file = {"kind": "file", "mode": 0o4755, "sha256": sha, "size": len(program)}
    forged = {
        "version": 1,
        "entries": [
            {"path": "from-store", "before": None, "after": file},
            {"path": "dir-from-store", "before": None, "after": {"kind": "dir", "mode": 0o3777}},
        ],
    }
    ws.commit(Changeset.from_dict(forged))
    # Past the changeset's own check: the write to the workspace cuts the mode again.
    direct = Changeset(
        (
            ChangeEntry("applied", None, _forced("file", 0o6777, sha, len(program))),
            ChangeEntry("dir-applied", None, _forced("dir", 0o7777)),
        )
    )
    ws.applier.apply(direct, purpose="commit")
    names = ["from-store", "dir-from-store", "applied", "dir-applied"]
    assert _raw_modes(ws.root, names) == {
        "from-store": 0o755,
        "dir-from-store": 0o775,
        "applied": 0o775,
        "dir-applied": 0o775,
    }
    if as_root:
        open_to_all(ws.root)
        _setuid_is_honoured_here(ws.root)
        assert _euid_as_nobody(ws.root / "from-store", "-u") == str(NOBODY)
        assert _euid_as_nobody(ws.root / "applied", "-u") == str(NOBODY)


def test_a_rollback_never_restores_the_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _ws(tmp_path, monkeypatch, MODES[0])
    program = Path("/usr/bin/id").read_bytes()
    old = ws.objects.put_bytes(program)
    (ws.root / "tool").write_bytes(b"new\n")
    os.chmod(ws.root / "tool", 0o755)
    new = ws.objects.put_bytes(b"new\n")
    # A committed change whose recorded pre-image (from a store someone else can write)
    # claims setuid, on a file and on a directory that rollback will recreate.
    history = Changeset(
        (
            ChangeEntry(
                "tool",
                _forced("file", 0o4755, old, len(program)),
                FileState("file", 0o755, new, 4),
            ),
            ChangeEntry("gone", _forced("dir", 0o3777), None),
        )
    )
    ws.rollback([history])
    assert (ws.root / "tool").read_bytes() == program
    assert _raw_modes(ws.root, ["tool", "gone"]) == {"tool": 0o755, "gone": 0o775}
    if as_root:
        open_to_all(ws.root)
        assert _euid_as_nobody(ws.root / "tool", "-u") == str(NOBODY)


def test_a_snapshot_attempt_leaves_no_bit_it_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = _ws(tmp_path, monkeypatch, "snapshot")
    root = ws.root
    (root / "tool").write_text("#!/bin/sh\n")
    os.chmod(root / "tool", 0o755)
    (root / "plain").mkdir()
    os.chmod(root / "plain", 0o755)
    # The workspace's own special bits are the person's: a restore keeps them.
    (root / "team").mkdir()
    os.chmod(root / "team", 0o2775)
    (root / "drop").mkdir()
    os.chmod(root / "drop", 0o1777)
    names = ["tool", "plain", "team", "drop", "README.md"]
    before = _raw_modes(root, names)
    changeset = attempt(ws, "snap", ["chmod 4755 tool && chmod 2755 plain && chmod o+w README.md"])
    assert changeset.is_empty  # the bits are no change vigil would commit
    assert _raw_modes(root, names) == before


@pytest.mark.parametrize("mode", MODES)
def test_a_directory_made_in_a_setgid_directory_keeps_the_inherited_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    ws = _ws(tmp_path, monkeypatch, mode)
    (ws.root / "team").mkdir()
    os.chmod(ws.root / "team", 0o2775)
    changeset = attempt(ws, "team", ["mkdir team/new && chmod 755 team/new && chmod g-w team"])
    assert {e.path: e.after.mode for e in changeset.entries if e.after} == {
        "team": 0o755,
        "team/new": 0o755,
    }
    ws.commit(changeset)
    made = os.lstat(ws.root / "team" / "new").st_mode
    # The kernel gave it its parent's setgid, as to any directory made there; vigil set
    # the rest of the mode and added nothing.
    assert made & stat.S_ISGID and not made & (stat.S_ISUID | stat.S_ISVTX)
    assert made & KEPT_MODE == 0o755
    # The person's own setgid directory keeps its bit through a change of its mode.
    assert stat.S_IMODE(os.lstat(ws.root / "team").st_mode) == 0o2755


@root_only
def test_a_root_run_gives_no_local_user_root(tmp_path: Path) -> None:
    """The reported attack, end to end: a plan run by root plants a setuid shell."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README.md").write_text("hello\n")
    write_plan(ws / "suid.yaml", {"name": "suid", "project": "atk", "phases": [
        {"id": "a", "tasks": [{"id": "mk", "run": PLANT}]}
    ]})  # fmt: skip
    done = vigil("run", "suid.yaml", cwd=ws, env={"VIGIL_CONFIG_DIR": str(tmp_path / "c")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert _raw_modes(ws, list(EXPECTED)) == EXPECTED
    open_to_all(ws)
    _setuid_is_honoured_here(ws)
    assert _euid_as_nobody(ws / "rootsh", "-p", "-c", "id -u") == str(NOBODY)
    assert _euid_as_nobody(ws / "suid-id", "-u") == str(NOBODY)
