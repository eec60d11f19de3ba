"""Protected files are protected by what they are, not by how a step spells them.

``vigil.toml`` and ``.vigil/`` are refused at capture and at commit under any name that
reaches them: a link, ``..``, a case variant, a hard link; and policy is never read
through a link a step could redirect.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from clitools import status, vigil, write_plan
from sentinel import Sentinel
from test_workspace_support import attempt, overlay_available, run
from vigil.config import load_config
from vigil.errors import ConfigError, ExitCode
from vigil.workspace import (
    ChangeEntry,
    Changeset,
    Conflict,
    FileState,
    ProtectedPathChanged,
    Workspace,
)
from vigil.workspace.state import tree_hash

MODE = "overlay" if overlay_available() else "snapshot"
POLICY = b'[policy]\nprotected = ["prod"]\n'
WIDE = '[policy]\nprotected = []\nfree = { "*" = ["deploy"] }\n'


@pytest.fixture(params=sorted({MODE, "snapshot"}))
def ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Workspace:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "ws"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("f\n")
    (root / "vigil.toml").write_bytes(POLICY)
    return Workspace(root, root / ".vigil", mode=request.param)


def _assert_policy_intact(ws: Workspace) -> None:
    path = ws.root / "vigil.toml"
    assert not path.is_symlink() and path.read_bytes() == POLICY
    assert not any(
        p.name.casefold() == "vigil.toml" and p.name != "vigil.toml" for p in ws.root.iterdir()
    )


ALIASES = {
    "case-variant": "printf '%s' \"$WIDE\" > VIGIL.TOML",
    "case-variant-dir": "mkdir -p .Vigil && echo x > .Vigil/vigil.db",
    "link-to-policy": "ln -s vigil.toml alias",
    "link-to-policy-dotdot": "ln -s d/../vigil.toml alias",
    "link-to-state": "ln -s ../.vigil d/x",
    "link-to-policy-case": "ln -s ./VIGIL.toml alias",
    "link-into-state": "ln -s .vigil/objects objs",
    "replace-policy": "printf '%s' \"$WIDE\" > t && mv -f t vigil.toml",
}


@pytest.mark.parametrize("script", list(ALIASES.values()), ids=list(ALIASES))
def test_capture_refuses_every_spelling_of_a_protected_path(ws: Workspace, script: str) -> None:
    before = tree_hash(ws.root)
    sandbox = ws.prepare("alias")
    with sandbox.lock():
        try:
            proc = run(sandbox, script, env={"WIDE": WIDE}, check=False)
            if proc.returncode != 0:
                # Only the overlay sandbox may stop the step itself (vigil.toml is bound
                # read-only there); then the step failed and its attempt with it.
                assert ws.isolation.mode == "overlay", proc.stderr
            else:
                with pytest.raises(ProtectedPathChanged) as err:
                    sandbox.capture()
                assert err.value.code == "VIGIL-PROTECTED-PATH"
        finally:
            sandbox.discard()
    assert tree_hash(ws.root) == before
    _assert_policy_intact(ws)


def test_snapshot_capture_refuses_a_hard_link_to_the_policy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In snapshot mode a step can hard-link vigil.toml; the new name shares its inode."""
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "snap"
    root.mkdir()
    (root / "vigil.toml").write_bytes(POLICY)
    ws = Workspace(root, root / ".vigil", mode="snapshot")
    with pytest.raises(ProtectedPathChanged) as err:
        attempt(ws, "hard", ["ln vigil.toml policy-alias.toml"])
    assert "hard link" in str(err.value)
    assert not (root / "policy-alias.toml").exists()
    _assert_policy_intact(ws)


def _file(ws: Workspace, data: bytes) -> FileState:
    return FileState("file", 0o644, ws.objects.put_bytes(data), len(data))


FORGED = {
    "case-variant": ("VIGIL.TOML", "file"),
    "unicode-fold": ("ＶＩＧＩＬ.toml", "file"),
    "state-case": (".VIGIL/objects/x", "file"),
    "state": (".vigil/audit/log.jsonl", "file"),
    "link-to-policy": ("alias", "link:vigil.toml"),
    "link-out-of-dir": ("d/alias", "link:../.vigil/audit"),
}


@pytest.mark.parametrize("path,kind", list(FORGED.values()), ids=list(FORGED))
def test_commit_refuses_a_forged_changeset_under_any_spelling(
    ws: Workspace, path: str, kind: str
) -> None:
    """A changeset read back from a store a step could reach is checked again at commit."""
    after = (
        FileState("symlink", target=kind.removeprefix("link:"))
        if kind.startswith("link:")
        else _file(ws, WIDE.encode())
    )
    forged = Changeset((ChangeEntry(path, None, after),))
    before = tree_hash(ws.root)
    with pytest.raises(ProtectedPathChanged):
        ws.commit(forged)
    assert tree_hash(ws.root) == before
    _assert_policy_intact(ws)
    assert not list((ws.root / ".vigil" / "commits").glob("*.json")), "refused after the intent"


def test_commit_refuses_a_path_that_is_a_hard_link_to_the_policy_file(ws: Workspace) -> None:
    """Identity, not spelling: on a case-insensitive filesystem VIGIL.TOML *is* vigil.toml,
    exactly as a hard link is; both are caught by comparing (st_dev, st_ino)."""
    os.link(ws.root / "vigil.toml", ws.root / "d" / "policy.toml")
    state = FileState("file", 0o644, ws.objects.put_bytes(POLICY), len(POLICY))
    forged = Changeset((ChangeEntry("d/policy.toml", state, _file(ws, WIDE.encode())),))
    with pytest.raises(ProtectedPathChanged) as err:
        ws.commit(forged)
    assert "hard link" in str(err.value)
    _assert_policy_intact(ws)


def test_a_link_made_by_one_task_cannot_carry_another_tasks_policy(
    ws: Workspace, tmp_path: Path
) -> None:
    """The seen attack: A makes ``d`` a link to the workspace root, B writes d/vigil.toml."""
    link = attempt(ws, "a", ["rm -rf d && ln -s . d"])
    write = attempt(ws, "b", [f"printf '%s' '{WIDE}' > d/vigil.toml"])
    ws.commit(link)
    with pytest.raises(Conflict):
        ws.commit(write)
    _assert_policy_intact(ws)


def test_policy_is_not_read_through_a_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "proj"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "policy.toml").write_text(WIDE)
    os.symlink("conf/policy.toml", root / "vigil.toml")
    with pytest.raises(ConfigError) as err:
        load_config(root)
    assert "symbolic link" in err.value.cause
    (root / "vigil.toml").unlink()
    (root / "vigil.toml").write_bytes(POLICY)
    assert load_config(root).data["policy"]["protected"] == ["prod"]


# ------------------------------------------------------------------- end to end


def _cli_ws(tmp_path: Path) -> tuple[Path, dict[str, str], Sentinel]:
    path = tmp_path / "e2e"
    (path / "d").mkdir(parents=True)
    (path / "d" / "keep.txt").write_text("keep\n")
    (path / "vigil.toml").write_bytes(POLICY)
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    return path, env, Sentinel.make(tmp_path / "outside")


@pytest.mark.slow
def test_a_run_cannot_widen_its_own_policy_through_another_name(
    tmp_path: Path, backend: str
) -> None:
    path, env, outside = _cli_ws(tmp_path)
    q = WIDE.replace("\n", "\\n")
    attacks = {
        "case": f"printf '{q}' > VIGIL.TOML",
        "alias": "ln -s vigil.toml alias",
        "state": "mkdir -p x && ln -s ../.vigil x/state",
        "swap": f"rm -rf d && ln -s {outside.root} d",
    }
    tasks = [{"id": k, "run": v} for k, v in attacks.items()]
    # `later` ran in parallel with `swap` from the same start: its file must not follow d.
    tasks.append({"id": "later", "run": f"printf '{q}' > d/vigil.toml && echo x > d/new"})
    write_plan(path / "p.yaml", {"name": "p", "project": "shop", "phases": [
        {"id": "main", "tasks": tasks},
    ]})  # fmt: skip
    out = vigil("run", "p.yaml", "--run-id", "attack", "-j", "4", cwd=path, env=env)
    assert out.returncode == ExitCode.RUN_FAILED, out.stdout + out.stderr
    view = {t["id"]: t for t in status("attack", path, env)["tasks"]}
    for task in ("case", "alias", "state"):
        assert view[task]["state"] == "failed", view[task]
    assert (path / "vigil.toml").read_bytes() == POLICY
    assert not (path / "alias").exists() and not (path / "x").exists()
    outside.assert_unchanged()
    # Whichever of `swap` and `later` committed first, the other was a conflict.
    assert {view["swap"]["state"], view["later"]["state"]} == {"succeeded", "failed"}
    policy = json.loads(vigil("policy", "show", "--format", "json", cwd=path, env=env).stdout)
    assert policy["policy"]["free"] == {} and policy["policy"]["protected"] == ["prod"]


GIT_ATTACKS = {
    "hook": "printf '#!/bin/sh\\ntouch /tmp/owned\\n' > .git/hooks/post-checkout"
    " && chmod +x .git/hooks/post-checkout",
    "fsmonitor": "git config core.fsmonitor 'touch /tmp/owned; false'",
    "config-case": "printf '[core]\\n\\tfsmonitor = touch /tmp/owned\\n' >> .GIT/CONFIG",
    "hooks-dir-swap": "mv .git/hooks .git/hooks.old && mkdir .git/hooks"
    " && printf '#!/bin/sh\\n' > .git/hooks/pre-commit",
    "commondir": "mkdir -p .g && printf '[core]\\n\\tfsmonitor = touch /tmp/owned\\n' > .g/config"
    " && echo ../.g > .git/commondir",
    "pointer-in-a-subdirectory": "mkdir -p sub .h && printf 'gitdir: ../.h\\n' > sub/.git",
    "nested-repository": "git init -q nested",
    "alternates": "echo /tmp > .git/objects/info/alternates",
    "info-attributes": "printf '* filter=x\\n' > .git/info/attributes",
    "submodule-hook": "mkdir -p .git/modules/sub/hooks"
    " && printf x > .git/modules/sub/hooks/post-merge",
}


@pytest.mark.parametrize("attack", list(GIT_ATTACKS))
def test_a_step_cannot_plant_what_git_runs_on_the_host(
    tmp_path: Path, attack: str, backend: str
) -> None:
    path, env, _ = _cli_ws(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", str(path)], check=True)
    subprocess.run([*git, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-qm", "start"], check=True)
    config_before = (path / ".git" / "config").read_bytes()
    hooks_before = sorted(p.name for p in (path / ".git" / "hooks").iterdir())
    tasks = [
        {"id": "attack", "run": GIT_ATTACKS[attack]},
        # What a step may do with the repository: commit (objects, refs, index, logs).
        {
            "id": "commit",
            "run": "echo change > d/keep.txt && git -c user.name=s -c user.email=s@example.com"
            " commit -qam step",
        },
    ]
    write_plan(path / "p.yaml", {"name": "p", "project": "shop", "phases": [
        {"id": "main", "tasks": tasks},
    ]})  # fmt: skip
    vigil("run", "p.yaml", "--run-id", "git", "-j", "1", cwd=path, env=env)
    view = {t["id"]: t for t in status("git", path, env)["tasks"]}
    assert view["attack"]["state"] == "failed", view["attack"]
    assert (path / ".git" / "config").read_bytes() == config_before
    assert sorted(p.name for p in (path / ".git" / "hooks").iterdir()) == hooks_before
    assert not (path / ".git" / "modules").exists()
    for planted in (".git/commondir", "sub/.git", "nested/.git", ".git/objects/info/alternates"):
        assert not (path / planted).exists(), planted
    assert not (path / ".git" / "info" / "attributes").exists()
    assert view["commit"]["state"] == "succeeded", view["commit"]
    log = subprocess.run(
        ["git", "-C", str(path), "log", "--format=%s"], capture_output=True, text=True
    )
    assert log.stdout.split() == ["step", "start"]
