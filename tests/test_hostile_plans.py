"""Hostile plans: steps that go after vigil's own keys, grants, policy, store and audit log,
and runbook prose that claims authority. Real runs, real sandboxes.

The config directory is outside ``/tmp`` on purpose: the sandbox mounts a fresh ``/tmp``, so
a path there would be invisible whether or not vigil hides it. A control step reads a file
next to the config directory to prove the directory is hidden by vigil, not by accident.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data" / "hostile"
POLICY = b'[policy]\nprotected = ["prod"]\n'


@pytest.fixture
def outside() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="vigil-hostile-", dir="/var/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(outside: Path) -> dict[str, str]:
    values = {"VIGIL_CONFIG_DIR": str(outside / "config")}
    assert vigil("keys", "init", cwd=outside, env=values).returncode == 0
    return values


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "vigil.toml").write_bytes(POLICY)
    return path


def cli(ws: Path, env: dict[str, str], *args: str) -> Any:
    return vigil(*args, cwd=ws, env=env)


def tree(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its bytes (directories by their listing)."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def hostile_tasks(config: Path, outside: Path) -> list[dict[str, Any]]:
    q = shlex.quote
    bindir = str(Path(sys.executable).parent)
    mint = "grant create --project shop --env prod --allow deploy --expires-in 2h"
    widen = 'free = { "*" = ["deploy", "network", "push"] }'
    return [
        {"id": "toml-append", "run": f"printf '%s\\n' {q(widen)} >> vigil.toml"},
        {
            "id": "toml-replace",
            "run": "printf '[policy]\\nprotected = []\\n' > t.toml && mv -f t.toml vigil.toml",
        },
        {"id": "toml-remove", "run": "rm -f vigil.toml && test ! -e vigil.toml"},
        {"id": "key-read", "run": f"cat {q(str(config / 'keys' / 'signing.key'))}"},
        {"id": "key-list", "run": f"ls -la {q(str(config / 'keys'))}"},
        {
            "id": "grant-write",
            "run": f"echo forged > {q(str(config / 'grants' / 'g-forged.json'))}",
        },
        {"id": "revocations-truncate", "run": f": > {q(str(config / 'revoked.jsonl'))}"},
        {"id": "store-write", "run": "echo garbage >> .vigil/vigil.db"},
        {"id": "audit-append", "run": "echo '{\"seq\": 999}' >> .vigil/audit/log.jsonl"},
        {"id": "audit-truncate", "run": ": > .vigil/audit/log.jsonl"},
        {"id": "state-remove", "run": "rm -rf .vigil && test ! -e .vigil"},
        {
            "id": "vigil-grant",
            "run": f"export PATH={q(bindir)}:$PATH VIGIL_CONFIG_DIR={q(str(config))}; vigil {mint}",
        },
        {
            "id": "module-grant",
            "run": f"VIGIL_CONFIG_DIR={q(str(config))} {q(sys.executable)} -m vigil.cli.main "
            + mint,
        },
        {
            "id": "unhalt",
            "run": f"VIGIL_CONFIG_DIR={q(str(config))} {q(sys.executable)} -m vigil.cli.main "
            "unhalt --project shop",
        },
    ]


def test_hostile_steps_fail_and_leave_keys_grants_policy_and_audit_untouched(
    ws: Path, env: dict[str, str], outside: Path
) -> None:
    config = outside / "config"
    # The steps may read the directory that holds the config dir (declared read-only):
    # the config dir inside it must stay hidden all the same.
    outside.chmod(0o755)
    policy = POLICY + f'[workspace]\nread_only_paths = ["{outside}"]\n'.encode()
    (ws / "vigil.toml").write_bytes(policy)
    # State worth attacking: a grant, a revocation, an audit log with a checkpoint.
    kept = cli(ws, env, "grant", "create", "--project", "shop", "--env", "dev", "--allow", "x")
    gone = cli(ws, env, "grant", "create", "--project", "shop", "--env", "dev", "--allow", "y")
    assert cli(ws, env, "grant", "revoke", gone.stdout.strip()).returncode == 0
    assert kept.returncode == 0
    write_plan(ws / "warm.yaml", {"name": "warm", "project": "shop", "phases": [
        {"id": "main", "tasks": [{"id": "warm", "run": "echo warm > warm.txt"}]}
    ]})  # fmt: skip
    assert cli(ws, env, "run", "warm.yaml").returncode == 0
    (outside / "visible.txt").write_text("next to the config dir\n")

    audit_log = ws / ".vigil" / "audit" / "log.jsonl"
    config_before = tree(config)
    audit_before = audit_log.read_bytes()
    checkpoints_before = audit_log.with_name("log.checkpoints").read_bytes()
    private_key = (config / "keys" / "signing.key").read_text().strip()
    assert audit_before and checkpoints_before and private_key

    tasks = hostile_tasks(config, outside)
    control = [
        {"id": "control-read", "run": f"cat {shlex.quote(str(outside / 'visible.txt'))}"},
        {"id": "control-write", "run": "echo fine > fine.txt"},
    ]
    write_plan(ws / "hostile.yaml", {"name": "hostile", "project": "shop", "phases": [
        {"id": "main", "tasks": tasks + control}
    ]})  # fmt: skip
    done = cli(ws, env, "run", "hostile.yaml", "--run-id", "hostile", "-j", "2")
    assert done.returncode == ExitCode.RUN_FAILED, done.stdout + done.stderr

    # Every attack is a failed attempt in the journal; the honest steps worked.
    view = {t["id"]: t for t in status("hostile", ws, env)["tasks"]}
    for task in tasks:
        attempts = view[task["id"]]["attempts"]
        assert view[task["id"]]["state"] == "failed", (task["id"], attempts)
        assert attempts and attempts[-1]["exit_code"] not in (0, None), task["id"]
    assert view["control-read"]["state"] == "succeeded"
    assert view["control-write"]["state"] == "succeeded"
    assert (ws / "fine.txt").read_text() == "fine\n"

    # Nothing vigil trusts changed, byte for byte.
    assert tree(config) == config_before
    assert (ws / "vigil.toml").read_bytes() == policy
    assert audit_log.read_bytes().startswith(audit_before)
    assert audit_log.with_name("log.checkpoints").read_bytes().startswith(checkpoints_before)
    verified = cli(ws, env, "audit", "verify", "--format", "json")
    assert verified.returncode == 0, verified.stdout
    entries = json.loads(cli(ws, env, "audit", "show", "-o", "json").stdout)
    written = {(e["action"], e["task"]) for e in entries if e["run"] == "hostile"}
    assert written == {("changeset.commit", "control-write"), ("run.end", None)}
    listed = json.loads(cli(ws, env, "grant", "list", "-o", "json").stdout)
    assert sorted(g["status"] for g in listed) == ["active", "revoked"]
    runs = json.loads(cli(ws, env, "runs", "-o", "json").stdout)
    assert {r["id"] for r in runs} >= {"hostile"}  # the store still opens and holds both runs
    assert len(runs) == 2

    # The key never reached an output, and minted nothing.
    logs = cli(ws, env, "logs", "hostile").stdout
    assert private_key not in logs
    for minted in ("vigil-grant", "module-grant"):
        assert "VIGIL-KEY-MISSING" in cli(ws, env, "logs", "hostile", minted).stdout
    assert "next to the config dir" in cli(ws, env, "logs", "hostile", "control-read").stdout


def test_runbook_prose_claiming_authority_gets_only_what_grants_give(
    ws: Path, env: dict[str, str]
) -> None:
    shutil.copy(DATA / "preauthorized.md", ws / "release.md")
    refused = cli(ws, env, "run", "release.md", "--format", "json")
    assert refused.returncode == ExitCode.REFUSED, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "VIGIL-GRANT-REQUIRED"
    assert any(line.startswith("prod: run, deploy for deploy") for line in error["details"])
    assert not (ws / "deployed.txt").exists()

    # A grant for the wrong environment does not become enough because the prose says so.
    dev = cli(ws, env, "grant", "create", "--project", "shop", "--env", "dev", "--allow", "deploy")
    narrow = cli(ws, env, "run", "release.md", "--grant", dev.stdout.strip(), "-o", "json")
    assert narrow.returncode == ExitCode.REFUSED
    assert json.loads(narrow.stdout)["error"]["code"] == "VIGIL-GRANT-SCOPE"
    assert not (ws / "deployed.txt").exists()
    assert json.loads(cli(ws, env, "runs", "-o", "json").stdout) == []

    # Exactly the grant it needs, and it runs.
    prod = cli(
        ws, env, "grant", "create", "--project", "shop", "--env", "prod", "--allow", "deploy"
    )
    done = cli(ws, env, "run", "release.md", "--grant", prod.stdout.strip())
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert (ws / "deployed.txt").read_text() == "deployed\n"
