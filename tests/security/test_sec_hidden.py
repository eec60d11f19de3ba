"""Hidden paths stay hidden wherever they live: the user's keys and grants, vigil's state
and store, whatever HOME, XDG_CONFIG_HOME, VIGIL_CONFIG_DIR and the step's working
directory are, and whichever of them contains which (every mount ordering)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sec_support import make_workspace, needs_overlay, open_to_all, sh

from test_workspace_support import make_project
from vigil.workspace import Workspace

pytestmark = needs_overlay

# Built at run time: the steps grep whole trees that may hold this file's own source.
SECRET = "-".join(("SECRET", "KEY", "MATERIAL", "7f3a"))


@dataclass
class Layout:
    """Where things live in one scenario."""

    config: Path
    workspace: Path
    state: Path


def _tool_ancestor(tmp: Path, mp: pytest.MonkeyPatch) -> Layout:
    # The attack: config dir under /tmp, a tool dir bound from an ancestor of it.
    base = tmp / "tooling"
    mp.setenv("VIGIL_CONFIG_DIR", str(base / "cfg" / "vigil"))
    mp.setenv("PATH", f"{base}:{os.environ['PATH']}")
    ws = tmp / "project"
    return Layout(base / "cfg" / "vigil", ws, ws / ".vigil")


def _home_under_tmp(tmp: Path, mp: pytest.MonkeyPatch) -> Layout:
    home = tmp / "home"
    mp.setenv("HOME", str(home))
    mp.delenv("XDG_CONFIG_HOME", raising=False)
    mp.delenv("VIGIL_CONFIG_DIR", raising=False)
    mp.setenv("PATH", f"{home}/.local/bin:{home}/.config/bin:{os.environ['PATH']}")
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".config" / "bin").mkdir(parents=True)
    ws = tmp / "project"
    return Layout(home / ".config" / "vigil", ws, ws / ".vigil")


def _config_inside_workspace(tmp: Path, mp: pytest.MonkeyPatch) -> Layout:
    ws = tmp / "project"
    mp.setenv("XDG_CONFIG_HOME", str(ws / "conf"))
    mp.delenv("VIGIL_CONFIG_DIR", raising=False)
    return Layout(ws / "conf" / "vigil", ws, ws / ".vigil")


def _workspace_inside_config(tmp: Path, mp: pytest.MonkeyPatch) -> Layout:
    base = tmp / "tooling"
    cfg = base / "vigil"
    mp.setenv("VIGIL_CONFIG_DIR", str(cfg))
    mp.setenv("PATH", f"{base}:{os.environ['PATH']}")
    ws = cfg / "projects" / "p"
    return Layout(cfg, ws, ws / ".vigil")


def _state_outside_under_tool(tmp: Path, mp: pytest.MonkeyPatch) -> Layout:
    base = tmp / "tooling"
    mp.setenv("VIGIL_CONFIG_DIR", str(tmp / "elsewhere" / "vigil"))
    mp.setenv("PATH", f"{base}:{os.environ['PATH']}")
    ws = tmp / "project"
    return Layout(tmp / "elsewhere" / "vigil", ws, base / "state")


def _home_is_workspace_parent(tmp: Path, mp: pytest.MonkeyPatch) -> Layout:
    home = tmp / "home"
    mp.setenv("HOME", str(home))
    mp.setenv("XDG_CONFIG_HOME", str(home / "x"))
    mp.delenv("VIGIL_CONFIG_DIR", raising=False)
    mp.setenv("PATH", f"{home}/x/bin:{os.environ['PATH']}")
    (home / "x" / "bin").mkdir(parents=True)
    ws = home / "project"
    return Layout(home / "x" / "vigil", ws, ws / ".vigil")


SCENARIOS: dict[str, Callable[[Path, pytest.MonkeyPatch], Layout]] = {
    "config-under-tmp-tool-dir-is-its-ancestor": _tool_ancestor,
    "home-under-tmp-tools-in-home": _home_under_tmp,
    "config-inside-workspace": _config_inside_workspace,
    "workspace-inside-config": _workspace_inside_config,
    "state-dir-outside-under-a-tool-dir": _state_outside_under_tool,
    "home-holds-config-tools-and-workspace": _home_is_workspace_parent,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_keys_grants_and_state_are_invisible(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = SCENARIOS[name](tmp_path, monkeypatch)
    for sub in ("keys", "grants"):
        (layout.config / sub).mkdir(parents=True, exist_ok=True)
    (layout.config / "keys" / "signing.key").write_text(SECRET + "\n")
    (layout.config / "grants" / "g1.json").write_text(SECRET + "\n")
    make_project(layout.workspace)
    layout.state.mkdir(parents=True, exist_ok=True)
    (layout.state / "audit.log").write_text(SECRET + "\n")
    (layout.state / "vigil.db").write_text(SECRET + "\n")
    open_to_all(layout.workspace)
    ws = Workspace(layout.workspace, layout.state, mode="overlay")
    key = layout.config / "keys" / "signing.key"
    rel = os.path.relpath(key, layout.workspace / "src")
    script = (
        f"cat {key} {layout.config}/grants/g1.json {layout.state}/audit.log"
        f" {layout.state}/vigil.db {rel}; ls -AR {layout.config} {layout.state};"
        f" find /tmp $HOME {tmp_path} \\( -name signing.key -o -name g1.json"
        " -o -name audit.log \\) -print 2>/dev/null;"
        f" grep -r {SECRET} /tmp $HOME {tmp_path} 2>/dev/null; true"
    )
    for attempt in range(2):
        sandbox = ws.prepare(f"hidden-{attempt}")
        try:
            proc = sh(sandbox, script, cwd="src")
        finally:
            sandbox.discard()
        assert proc.returncode == 0, proc.stderr
        assert SECRET not in proc.stdout + proc.stderr
        assert "signing.key" not in proc.stdout
        assert "g1.json" not in proc.stdout
        assert "audit.log" not in proc.stdout
    # And they are still there, untouched, on the host.
    assert key.read_text() == SECRET + "\n"


def test_hidden_paths_cannot_be_written_or_unmasked(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    sandbox = ws.prepare("unmask")
    try:
        proc = sh(
            sandbox,
            "umount .vigil; umount -l .vigil; mount -o remount,rw .vigil; unshare -rm true;"
            " echo forged > .vigil/audit.log; cat .vigil/audit.log; true",
        )
    finally:
        sandbox.discard()
    assert "AUDIT-ENTRY" not in proc.stdout
    assert (ws.root / ".vigil" / "audit.log").read_text() == "AUDIT-ENTRY\n"


def test_extra_hidden_paths_are_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "tooling"
    secret = base / "secrets"
    secret.mkdir(parents=True)
    (secret / "token").write_text(SECRET)
    monkeypatch.setenv("PATH", f"{base}:{os.environ['PATH']}")
    root = make_project(tmp_path / "project")
    open_to_all(root)
    ws = Workspace(root, root / ".vigil", mode="overlay", hidden_paths=[secret])
    sandbox = ws.prepare("extra")
    try:
        proc = sh(sandbox, f"ls {base}; cat {secret}/token; true")
    finally:
        sandbox.discard()
    assert "secrets" in proc.stdout  # the masked directory exists, empty
    assert SECRET not in proc.stdout


def test_a_venv_in_another_project_brings_only_the_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A virtual environment of another project under HOME is on PATH: the step may run
    # its tools, and sees nothing else of that project (its .env, its sources).
    home = tmp_path / "home"
    other = home / "other"
    venv_bin = other / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (other / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    tool = venv_bin / "mytool"
    tool.write_text("#!/bin/sh\necho tool-ok\n")
    tool.chmod(0o755)
    (other / ".env").write_text(SECRET + "\n")
    (other / "src").mkdir()
    (other / "src" / "app.py").write_text(f"TOKEN = '{SECRET}'\n")
    local_bin = home / ".local" / "bin"
    local_bin.mkdir(parents=True)
    (home / ".local" / "share").mkdir()
    (home / ".local" / "share" / "note").write_text("local-ok\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{venv_bin}:{local_bin}:{os.environ['PATH']}")
    ws = make_workspace(tmp_path)
    open_to_all(tmp_path)
    sandbox = ws.prepare("venv-elsewhere")
    try:
        proc = sh(
            sandbox,
            f"mytool; cat {home}/.local/share/note; cat {other}/.env {other}/src/app.py;"
            f" ls -A {other}; grep -r {SECRET} {home} 2>/dev/null; true",
        )
    finally:
        sandbox.discard()
    assert proc.returncode == 0, proc.stderr
    assert "tool-ok" in proc.stdout  # the venv's tool runs
    assert "local-ok" in proc.stdout  # a hidden tool home comes whole
    assert SECRET not in proc.stdout + proc.stderr
    assert ".env" not in proc.stdout and "src" not in proc.stdout.split()


def test_credentials_inside_a_tool_home_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    cargo = home / ".cargo"
    (cargo / "bin").mkdir(parents=True)
    tool = cargo / "bin" / "cargo-ok"
    tool.write_text("#!/bin/sh\necho cargo-ok\n")
    tool.chmod(0o755)
    (cargo / "credentials.toml").write_text(f'[registry]\ntoken = "{SECRET}"\n')
    (cargo / ".git-credentials").write_text(SECRET + "\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", f"{cargo / 'bin'}:{os.environ['PATH']}")
    ws = make_workspace(tmp_path)
    open_to_all(tmp_path)
    sandbox = ws.prepare("cargo-creds")
    try:
        proc = sh(sandbox, f"cargo-ok; cat {cargo}/credentials.toml {cargo}/.git-credentials; true")
    finally:
        sandbox.discard()
    assert "cargo-ok" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
