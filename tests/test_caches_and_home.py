"""Declared caches persist across attempts and runs and never reach what vigil hides; the
host's git configuration is readable in a step, so ``git commit`` knows its author."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from test_workspace_support import overlay_available
from vigil.errors import ExitCode

pytestmark = pytest.mark.skipif(not overlay_available(), reason="needs userns + overlayfs")


def plan(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "c", "project": "c", "phases": [{"id": "p", "tasks": list(tasks)}]}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    home = tmp_path / "home"
    keys = home / ".config" / "vigil"
    keys.mkdir(parents=True)
    (keys / "signing.key").write_text("KEY-MATERIAL-NEVER-SHOWN\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    # The configuration directory is HOME's (whatever the test session's default is).
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return ws, home, {**env, "VIGIL_ISOLATION": "overlay"}


def test_a_cache_persists_across_attempts_and_runs_outside_every_changeset(
    setup: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    ws, home, env = setup
    (ws / "vigil.toml").write_text('[workspace]\ncaches = ["~/.cache/pipsim"]\n')
    # A download the first attempt makes is found by the second (which then succeeds),
    # as pip finds a wheel it downloaded before.
    fetch = (
        "if [ -f ~/.cache/pipsim/demo-1.0.whl ]; then echo hit > fetched.txt; "
        "else echo wheel-bytes > ~/.cache/pipsim/demo-1.0.whl; exit 1; fi"
    )
    write_plan(
        tmp_path / "one.yaml",
        plan({"id": "fetch", "run": fetch, "retry": {"attempts": 2, "initial": 0}}),
    )
    first = vigil("run", str(tmp_path / "one.yaml"), "--run-id", "r1", cwd=ws, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (ws / "fetched.txt").read_text() == "hit\n"
    assert (home / ".cache" / "pipsim" / "demo-1.0.whl").read_text() == "wheel-bytes\n"
    diff = vigil("diff", "r1", cwd=ws, env=env).stdout
    assert "fetched.txt" in diff and "pipsim" not in diff and "demo-1.0" not in diff
    # The next run starts with the cache as the last one left it.
    write_plan(
        tmp_path / "two.yaml",
        plan({"id": "use", "run": "cat ~/.cache/pipsim/demo-1.0.whl > seen.txt"}),
    )
    second = vigil("run", str(tmp_path / "two.yaml"), "--run-id", "r2", cwd=ws, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert (ws / "seen.txt").read_text() == "wheel-bytes\n"


def test_a_cache_cannot_lead_a_step_to_the_keys(
    setup: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    ws, _, env = setup
    (ws / "vigil.toml").write_text('[workspace]\ncaches = ["~/.cache/tool"]\n')
    # A link planted in the cache (by a step, or a tool) resolves inside the sandbox,
    # where the configuration directory is not there to be found.
    probe = (
        "ln -sfn ~/.config/vigil ~/.cache/tool/keys; "
        "(cat ~/.cache/tool/keys/signing.key; ls -A ~/.config) > got.txt 2>&1 || true"
    )
    write_plan(tmp_path / "p.yaml", plan({"id": "probe", "run": probe}))
    out = vigil("run", str(tmp_path / "p.yaml"), cwd=ws, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    got = (ws / "got.txt").read_text()
    assert "KEY-MATERIAL" not in got
    assert "keys/signing.key: No such file" in got and ".config': No such file" in got


@pytest.mark.parametrize(
    "entry",
    [
        "~",
        "/",
        "~/.config",
        "~/.config/vigil",
        "~/.config/vigil/cache",
        "~/.cache/../.config/vigil",
        "~/.cache/sneaky",  # a link to the configuration directory
        "{ws}",
        "{ws}/build-cache",
        "{ws}/.vigil/cache",
        "{parent}",
        "/usr/lib/cache",
        "relative/cache",
    ],
)
def test_a_cache_that_overlaps_what_vigil_hides_is_refused(
    setup: tuple[Path, Path, dict[str, str]], tmp_path: Path, entry: str
) -> None:
    ws, home, env = setup
    (home / ".cache").mkdir()
    os.symlink(home / ".config" / "vigil", home / ".cache" / "sneaky")
    entry = entry.format(ws=ws, parent=tmp_path)
    (ws / "vigil.toml").write_text(f"[workspace]\ncaches = [{json.dumps(entry)}]\n")
    write_plan(tmp_path / "p.yaml", plan({"id": "t", "run": "echo ran > ran.txt"}))
    out = vigil("run", str(tmp_path / "p.yaml"), "--format", "json", cwd=ws, env=env)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    error = json.loads(out.stdout)["error"]
    expected = "VIGIL-CONFIG" if entry.startswith("relative") else "VIGIL-CACHE-PATH"
    assert error["code"] == expected, error
    assert error["remedy"]
    assert not (ws / "ran.txt").exists(), "nothing may run with a refused cache"


def git(ws: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ws), *args], capture_output=True, text=True, check=True
    ).stdout


def git_workspace(ws: Path) -> None:
    git(ws, "init", "-q", "-b", "main")
    (ws / "a.txt").write_text("a\n")
    git(ws, "add", "a.txt")
    git(ws, "-c", "user.name=Setup", "-c", "user.email=setup@example.com", "commit", "-qm", "init")


def test_git_commit_in_a_step_uses_the_hosts_git_identity(
    setup: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    ws, home, env = setup
    (home / ".gitconfig").write_text("[user]\n\tname = Night Owl\n\temail = owl@example.com\n")
    git_workspace(ws)
    step = (
        "echo b > b.txt && git add b.txt && git commit -q -m 'from a step' && "
        "{ (echo tampered >> ~/.gitconfig) 2>/dev/null && echo WROTE > wrote.txt || true; }"
    )
    write_plan(tmp_path / "p.yaml", plan({"id": "commit", "run": step}))
    out = vigil("run", str(tmp_path / "p.yaml"), "--run-id", "g1", cwd=ws, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert git(ws, "log", "-1", "--format=%an <%ae> %s").strip() == (
        "Night Owl <owl@example.com> from a step"
    )
    assert not (ws / "wrote.txt").exists(), "the git configuration is read-only in a step"
    assert "tampered" not in (home / ".gitconfig").read_text()


def test_git_config_can_be_kept_from_steps(
    setup: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    ws, home, env = setup
    (home / ".gitconfig").write_text("[user]\n\tname = Night Owl\n\temail = owl@example.com\n")
    (ws / "vigil.toml").write_text("[workspace]\ngit_config = false\n")
    git_workspace(ws)
    write_plan(
        tmp_path / "p.yaml", plan({"id": "look", "run": "cat ~/.gitconfig > seen.txt 2>&1 || true"})
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "--run-id", "g2", cwd=ws, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Night Owl" not in (ws / "seen.txt").read_text()
    assert status("g2", ws, env)["state"] == "succeeded"


def test_nested_caches_are_refused(
    setup: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    # A step could turn the inner cache's directory, inside the outer cache it may write,
    # into a link to the keys: the next sandbox would bind the keys read-write.
    ws, _, env = setup
    (ws / "vigil.toml").write_text('[workspace]\ncaches = ["~/.cache/a", "~/.cache/a/b"]\n')
    write_plan(tmp_path / "p.yaml", plan({"id": "t", "run": "echo ran > ran.txt"}))
    out = vigil("run", str(tmp_path / "p.yaml"), "--format", "json", cwd=ws, env=env)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "VIGIL-CACHE-PATH" and "another cache" in error["cause"]
    assert not (ws / "ran.txt").exists()
