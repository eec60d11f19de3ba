"""Host variables reach steps only as vigil.toml's ``pass_env`` allows, narrowed by the
task's own, never vigil's own; a run names what its network tasks do not get."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clitools import vigil, write_plan
from vigil.errors import ExitCode

HOST = {
    "PIP_INDEX_URL": "https://mirror.example/simple",
    "PIP_CERT": "/etc/company-ca.pem",
    "HTTPS_PROXY": "http://proxy.example:3128",
    "SSL_CERT_FILE": "/etc/company-ca.pem",
    "AWS_PROFILE": "prod-admin",
    "SECRET_TOKEN": "tok-VALUE-never-shown",
    "VIGIL_SERVE_TOKEN": "serve-token-VALUE",
}


def plan(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "e", "project": "e", "phases": [{"id": "p", "tasks": list(tasks)}]}


def seen(ws: Path, name: str) -> dict[str, str]:
    lines = (ws / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_pass_env_globs_pass_what_vigil_toml_allows_and_a_task_narrows(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(
        '[workspace]\npass_env = ["PIP_*", "*_PROXY", "SSL_CERT_FILE"]\n'
    )
    write_plan(
        tmp_path / "p.yaml",
        plan(
            {"id": "all", "run": "env > all.env"},
            {"id": "narrow", "run": "env > narrow.env", "pass_env": ["PIP_INDEX_URL", "AWS_*"]},
            {"id": "none", "run": "env > none.env", "pass_env": []},
        ),
    )
    out = vigil("run", str(tmp_path / "p.yaml"), cwd=ws, env=HOST)
    assert out.returncode == 0, out.stdout + out.stderr
    every = seen(ws, "all.env")
    for name in ("PIP_INDEX_URL", "PIP_CERT", "HTTPS_PROXY", "SSL_CERT_FILE"):
        assert every[name] == HOST[name]
    assert "AWS_PROFILE" not in every and "SECRET_TOKEN" not in every
    assert "VIGIL_SERVE_TOKEN" not in every
    narrow = seen(ws, "narrow.env")
    assert narrow["PIP_INDEX_URL"] == HOST["PIP_INDEX_URL"]
    # Narrowed to PIP_INDEX_URL; AWS_* is not the task's to pass: vigil.toml does not.
    assert "PIP_CERT" not in narrow and "HTTPS_PROXY" not in narrow
    assert "AWS_PROFILE" not in narrow
    none = seen(ws, "none.env")
    assert not {"PIP_INDEX_URL", "PIP_CERT", "HTTPS_PROXY", "SSL_CERT_FILE"} & set(none)
    assert "PATH" in none and "HOME" in none  # the allowlist is never narrowed


def test_vigils_own_variables_are_never_passed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text('[workspace]\npass_env = ["*"]\n')
    write_plan(tmp_path / "p.yaml", plan({"id": "all", "run": "env > all.env"}))
    cfg = tmp_path / "cfg"
    env = {**HOST, "VIGIL_CONFIG_DIR": str(cfg)}
    out = vigil("run", str(tmp_path / "p.yaml"), cwd=ws, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    every = seen(ws, "all.env")
    assert every["SECRET_TOKEN"] == HOST["SECRET_TOKEN"]  # "*" is the project's choice
    assert "VIGIL_SERVE_TOKEN" not in every and "VIGIL_CONFIG_DIR" not in every
    assert every["VIGIL_TASK_ID"] == "all"  # what vigil itself tells the step


def test_naming_vigils_own_variables_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(tmp_path / "ok.yaml", plan({"id": "t", "run": "touch ran"}))
    (ws / "vigil.toml").write_text('[workspace]\npass_env = ["VIGIL_*"]\n')
    out = vigil("run", str(tmp_path / "ok.yaml"), "--format", "json", cwd=ws)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "VIGIL-CONFIG" and "never passed" in error["cause"]
    (ws / "vigil.toml").unlink()
    write_plan(
        tmp_path / "bad.yaml",
        plan({"id": "t", "run": "touch ran", "pass_env": ["VIGIL_CONFIG_DIR"]}),
    )
    out = vigil("plan", "check", str(tmp_path / "bad.yaml"), cwd=ws)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    assert "never passed" in out.stdout + out.stderr
    out = vigil("run", str(tmp_path / "bad.yaml"), cwd=ws)
    assert out.returncode == ExitCode.USAGE
    assert not (ws / "ran").exists()


@pytest.mark.slow
def test_a_run_names_the_variables_its_network_tasks_do_not_get(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text('[workspace]\npass_env = ["PIP_*"]\n')
    write_plan(
        tmp_path / "p.yaml",
        plan(
            {"id": "fetch", "run": "true", "requires": ["network"], "env": {"AWS_PROFILE": "x"}},
            {"id": "offline", "run": "true"},
        ),
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "--dry-run", cwd=ws, env=HOST)
    assert "Traceback" not in out.stderr
    line = next(x for x in out.stderr.splitlines() if x.startswith("withheld from tasks"))
    assert "(fetch)" in line and "offline" not in line
    assert "HTTPS_PROXY" in line and "SSL_CERT_FILE" in line and "SECRET_TOKEN" in line
    # Passed by pass_env, set by the task, or vigil's own: not withheld.
    assert "PIP_INDEX_URL" not in line and "AWS_PROFILE" not in line and "VIGIL_" not in line
    assert "VALUE" not in out.stderr + out.stdout and "mirror.example" not in out.stderr
    write_plan(tmp_path / "quiet.yaml", plan({"id": "offline", "run": "true"}))
    quiet = vigil("run", str(tmp_path / "quiet.yaml"), cwd=ws, env=HOST)
    assert "withheld" not in quiet.stderr


def test_a_runbook_block_narrows_pass_env_too(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text('[workspace]\npass_env = ["PIP_*"]\n')
    (tmp_path / "book.md").write_text(
        "# Book\n\n## Install\n\n```bash {id=install pass_env=PIP_INDEX_URL}\nenv > seen.env\n```\n"
    )
    out = vigil("run", str(tmp_path / "book.md"), cwd=ws, env=HOST)
    assert out.returncode == 0, out.stdout + out.stderr
    got = seen(ws, "seen.env")
    assert got["PIP_INDEX_URL"] == HOST["PIP_INDEX_URL"] and "PIP_CERT" not in got


def test_a_plan_without_pass_env_keeps_the_hash_its_runs_and_grants_are_bound_to() -> None:
    from vigil.plan.models import Plan

    bare = Plan.model_validate(plan({"id": "t", "run": "true"}))
    assert "pass_env" not in bare.canonical_json()
    narrowed = Plan.model_validate(plan({"id": "t", "run": "true", "pass_env": ["PIP_*"]}))
    assert narrowed.content_hash() != bare.content_hash()  # a set pass_env is bound
    again = Plan.from_record(narrowed.canonical_json())
    assert again.task("t").pass_env == ("PIP_*",)
    assert again.content_hash() == narrowed.content_hash()
