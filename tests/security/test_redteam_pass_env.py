"""Red team: ``pass_env``, the host variables a step gets.

A hostile plan wants the person's cloud credentials (``AWS_*``) and tokens in a task that
has the network, where it can send them anywhere. ``vigil.toml`` passes only ``PIP_*``.
Each way a plan might widen that (a task's ``pass_env: ["*"]``, a phase's or the plan's
own ``pass_env``, an ``env:`` expression reading the host, a secret named after the
variable, a runbook attribute, ``VIGIL_*``) must leave the credentials out of the step,
and no value may appear in what vigil prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clitools import vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow

HOST = {
    "AWS_ACCESS_KEY_ID": "AKIA-redteam-VALUE-1",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-redteam-VALUE-2",
    "GITHUB_TOKEN": "ghp-redteam-VALUE-3",
    "PIP_INDEX_URL": "https://mirror.example/simple",
}
VALUES = [v for k, v in HOST.items() if not k.startswith("PIP_")]
PROJECT = '[workspace]\npass_env = ["PIP_*"]\n\n[policy]\nfree = { "*" = ["network"] }\n'
DUMP = "env > seen.env; touch ran"


def plan_of(task: dict[str, Any], **top: Any) -> dict[str, Any]:
    phase: dict[str, Any] = {"id": "p", "tasks": [task]}
    phase.update(top.pop("phase", {}))
    return {"name": "e", "project": "e", **top, "phases": [phase]}


def network_task(**extra: Any) -> dict[str, Any]:
    return {"id": "exfil", "requires": ["network"], "run": DUMP, **extra}


WIDENINGS: dict[str, dict[str, Any]] = {
    "task pass_env *": plan_of(network_task(pass_env=["*"])),
    "task pass_env AWS_*": plan_of(network_task(pass_env=["AWS_*", "GITHUB_TOKEN"])),
    "task pass_env ?*": plan_of(network_task(pass_env=["?*", "A*", "*KEY*"])),
    "phase pass_env": plan_of(network_task(), phase={"pass_env": ["*"]}),
    "plan pass_env": plan_of(network_task(), pass_env=["*"]),
    "defaults pass_env": plan_of(network_task(), defaults={"pass_env": ["*"]}),
    "plan workspace table": plan_of(network_task(), workspace={"pass_env": ["*"]}),
    "env expression": plan_of(
        network_task(
            env={
                "AWS_SECRET_ACCESS_KEY": "${{ env.AWS_SECRET_ACCESS_KEY }}",
                "K": "${{ env['AWS_ACCESS_KEY_ID'] }}${{ vigil.AWS_ACCESS_KEY_ID }}",
            }
        )
    ),
    "plan env expression": plan_of(network_task(), env={"GITHUB_TOKEN": "${{ env.GITHUB_TOKEN }}"}),
    "secret named after it": plan_of(network_task(secrets=["AWS_SECRET_ACCESS_KEY"])),
    "VIGIL_ prefix": plan_of(network_task(pass_env=["VIGIL_*", "*"])),
}


def seen(ws: Path) -> dict[str, str]:
    if not (ws / "seen.env").exists():
        return {}
    lines = (ws / "seen.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def leaked(ws: Path, *texts: str) -> list[str]:
    files = b"".join(p.read_bytes() for p in ws.rglob("*") if p.is_file())
    return [v for v in VALUES if v.encode() in files or any(v in t for t in texts)]


@pytest.mark.parametrize("name", list(WIDENINGS))
def test_a_plan_cannot_widen_pass_env_for_a_network_task(tmp_path: Path, name: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(PROJECT)
    write_plan(ws / "p.yaml", WIDENINGS[name])
    env = {**HOST, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws, env=env)
    shown = vigil("status", "r1", "--format", "json", cwd=ws, env=env)
    assert leaked(ws, done.stdout, done.stderr, shown.stdout) == [], done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if (ws / "ran").exists():
        got = seen(ws)
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN"} & {
            k for k, v in got.items() if v
        }
        # What vigil.toml allows still arrives, narrowed by nothing the plan said.
        if name not in ("task pass_env AWS_*",):
            assert got.get("PIP_INDEX_URL") == HOST["PIP_INDEX_URL"], name
    else:  # refused before anything ran: a plan error or an unknown secret
        assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr


def test_a_runbook_cannot_widen_pass_env(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(PROJECT)
    runbook = (
        "---\nname: e\nproject: e\n---\n\n# Phase p\n\n"
        "```sh {id=exfil requires=network pass_env=*,AWS_*}\n" + DUMP + "\n```\n"
    )
    (ws / "book.md").write_text(runbook)
    env = {**HOST, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("run", "book.md", "--run-id", "r1", cwd=ws, env=env)
    assert (ws / "ran").exists(), done.stdout + done.stderr
    assert leaked(ws, done.stdout, done.stderr) == []
    assert seen(ws).get("PIP_INDEX_URL") == HOST["PIP_INDEX_URL"]


def test_the_withheld_notice_names_variables_never_values(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(PROJECT)
    write_plan(ws / "p.yaml", plan_of(network_task()))
    env = {**HOST, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert "withheld from tasks with the network (exfil)" in done.stderr
    assert "AWS_SECRET_ACCESS_KEY" in done.stderr and leaked(ws, done.stderr) == []


def test_pass_env_in_the_users_configuration_is_the_persons_too(tmp_path: Path) -> None:
    # The user's config.toml is the person's (hidden from steps), like vigil.toml: what it
    # passes, steps get; a plan still cannot add to it.
    ws = tmp_path / "ws"
    ws.mkdir()
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.toml").write_text('[workspace]\npass_env = ["GITHUB_TOKEN"]\n')
    (ws / "vigil.toml").write_text('[policy]\nfree = { "*" = ["network"] }\n')
    write_plan(ws / "p.yaml", plan_of(network_task(pass_env=["GITHUB_TOKEN", "AWS_*"])))
    env = {**HOST, "VIGIL_CONFIG_DIR": str(config)}
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws, env=env)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    got = seen(ws)
    assert got.get("GITHUB_TOKEN") == HOST["GITHUB_TOKEN"]
    assert "AWS_SECRET_ACCESS_KEY" not in got and "AWS_ACCESS_KEY_ID" not in got
    assert json.dumps(yaml.safe_load((ws / "p.yaml").read_text()))  # the plan as written
