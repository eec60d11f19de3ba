"""Review what needs a person: ``--review TASK,...``, ``review: required``; changes of
ignored paths only are committed without being held; an approval shows the run going on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode


def plan(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "r", "project": "r", "phases": [{"id": "p", "tasks": list(tasks)}]}


def held(run_id: str, ws: Path) -> dict[str, bool]:
    shown = json.loads(vigil("review", run_id, "--format", "json", cwd=ws).stdout)
    return {c["task"]: c["held"] for c in shown}


@pytest.mark.slow
def test_review_names_the_tasks_to_hold_and_approval_shows_the_run_going_on(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        tmp_path / "p.yaml",
        plan(
            {"id": "migrate", "run": "echo v2 > schema.txt"},
            {"id": "uses", "needs": ["migrate"], "run": "cat schema.txt > used.txt"},
            {"id": "lint", "run": "echo clean > lint.txt"},
            {"id": "docs", "run": "echo docs > docs.txt", "review": "required"},
        ),
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "--review", "migrate", "--run-id", "r1", cwd=ws)
    assert out.returncode == ExitCode.WAITING, out.stdout + out.stderr
    assert held("r1", ws) == {"migrate": True, "lint": False, "docs": True}
    assert (ws / "lint.txt").exists() and not (ws / "schema.txt").exists()
    assert not (ws / "used.txt").exists()
    ok = vigil("review", "r1", "--approve", "--task", "migrate", cwd=ws)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # The approval drove the run on, and said so as it went.
    assert "r1 uses: attempt 1 started" in ok.stderr, ok.stderr
    assert "r1 uses: succeeded" in ok.stderr
    assert (ws / "used.txt").read_text() == "v2\n"
    assert status("r1", ws)["state"] == "waiting"  # docs is still held
    done = vigil("review", "r1", "--approve", cwd=ws)
    assert done.returncode == 0, done.stderr
    assert "r1 run succeeded" in done.stderr
    assert status("r1", ws)["state"] == "succeeded"


def test_changes_of_ignored_paths_only_are_committed_without_being_held(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".gitignore").write_text("build/\n.venv/\n")
    write_plan(
        tmp_path / "p.yaml",
        plan(
            {"id": "venv", "run": "mkdir -p .venv/lib && echo x > .venv/lib/site.py"},
            {"id": "compile", "run": "mkdir -p build && echo o > build/a.o", "review": "required"},
            {"id": "edit", "run": "echo fix > src.txt && mkdir -p build && echo o > build/b.o"},
        ),
    )
    out = vigil("run", "--review", str(tmp_path / "p.yaml"), "--run-id", "r2", cwd=ws)
    assert out.returncode == ExitCode.WAITING, out.stdout + out.stderr
    assert held("r2", ws) == {"venv": False, "compile": False, "edit": True}
    assert (ws / ".venv" / "lib" / "site.py").exists() and (ws / "build" / "a.o").exists()
    assert not (ws / "src.txt").exists() and not (ws / "build" / "b.o").exists()


def test_review_of_an_unknown_task_is_refused_before_anything_runs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(tmp_path / "p.yaml", plan({"id": "a", "run": "touch ran"}))
    out = vigil("run", str(tmp_path / "p.yaml"), "--review", "a,nope", "--format", "json", cwd=ws)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "VIGIL-USAGE" and "nope" in error["cause"]
    assert not (ws / "ran").exists()
    assert json.loads(vigil("runs", "--format", "json", cwd=ws).stdout) == []


def test_the_published_schema_carries_review_and_pass_env() -> None:
    out = vigil("plan", "schema", cwd=Path.cwd())
    task = json.loads(out.stdout)["$defs"]["Task"]["properties"]
    assert task["review"]["enum"] == ["required", "none"]
    assert "pass_env" in task and "never VIGIL_*" in task["pass_env"]["description"]
