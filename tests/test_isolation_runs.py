"""Isolated attempts through the engine: atomic tasks, real dry runs, review, rollback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode
from vigil.layout import rollback_log
from vigil.workspace import tree_hash

pytestmark = pytest.mark.slow

EDITS = (
    "echo world >> a.txt && rm gone.txt && chmod +x a.txt && ln -sfn gone.txt link "
    "&& mkdir -p new && echo fresh > new/f && rm -r olddir"
)


def seed(ws: Path) -> None:
    (ws / "a.txt").write_text("hello\n")
    (ws / "gone.txt").write_text("bye\n")
    (ws / "olddir").mkdir()
    (ws / "olddir" / "inner.txt").write_text("inner\n")
    os.symlink("a.txt", ws / "link")


def edit_plan() -> dict[str, Any]:
    return {
        "name": "edits",
        "project": "edits",
        "phases": [
            {
                "id": "p",
                "tasks": [
                    {"id": "edit", "run": EDITS, "rollback": "echo compensated"},
                    {"id": "after", "needs": ["edit"], "run": "grep world a.txt > seen.txt"},
                ],
            },
            {"id": "q", "tasks": [{"id": "last", "run": "cat seen.txt > last.txt"}]},
        ],
    }


@pytest.fixture(params=["overlay", "snapshot"])
def ws(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    path = tmp_path / "ws"
    path.mkdir()
    seed(path)
    write_plan(tmp_path / "plan.yaml", edit_plan())
    return path, {"VIGIL_ISOLATION": request.param}


def test_dry_run_changes_nothing_and_shows_what_the_real_run_commits(ws: Any) -> None:
    path, env = ws
    before = tree_hash(path)
    plan = str(path.parent / "plan.yaml")
    dry = vigil("run", plan, "--dry-run", "--run-id", "dry", "--format", "json", cwd=path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert tree_hash(path) == before, "a dry run changed the workspace"
    shown = json.loads(dry.stdout)
    assert shown["dry_run"] is True and "+world" in shown["diff"]
    # Stacked: `after` saw `edit`'s uncommitted change, `last` saw both.
    assert "+world" in vigil("diff", "dry", cwd=path, env=env).stdout
    real = vigil("run", plan, "--run-id", "real", cwd=path, env=env)
    assert real.returncode == 0, real.stderr
    assert tree_hash(path) != before
    assert (
        vigil("diff", "real", cwd=path, env=env).stdout
        == vigil("diff", "dry", cwd=path, env=env).stdout
    )
    assert (path / "a.txt").read_text() == "hello\nworld\n"
    assert os.readlink(path / "link") == "gone.txt"
    report = json.loads(vigil("report", "real", "--format", "json", cwd=path, env=env).stdout)
    changed = {t["id"]: t["changes"] for t in report["tasks"]}
    assert changed["after"] == 1 and changed["edit"] >= 5
    assert not (path / "olddir").exists() and (path / "last.txt").read_text() == "world\n"


def test_rollback_restores_the_tree_and_refuses_drift(ws: Any) -> None:
    path, env = ws
    before = tree_hash(path)
    plan = str(path.parent / "plan.yaml")
    assert vigil("run", plan, "--run-id", "r", cwd=path, env=env).returncode == 0
    (path / "seen.txt").write_text("edited by a person\n")
    edited = tree_hash(path)
    refused = vigil("rollback", "r", cwd=path, env=env)
    assert refused.returncode != 0
    assert "VIGIL-DRIFT" in refused.stderr and "seen.txt" in refused.stderr
    assert (path / "seen.txt").read_text() == "edited by a person\n", "drift was overwritten"
    assert tree_hash(path) == edited, "a refused rollback changed files"
    forced = vigil("rollback", "r", "--all", "--force", cwd=path, env=env)
    assert forced.returncode == 0, forced.stderr
    assert tree_hash(path) == before
    assert "rollback command of edit: ok" in forced.stdout, forced.stdout
    log = rollback_log(path / ".vigil", "r", "edit").read_text()
    assert "compensated\n" in log, log


def test_rollback_of_one_file(ws: Any) -> None:
    path, env = ws
    plan = str(path.parent / "plan.yaml")
    assert vigil("run", plan, "--run-id", "r", cwd=path, env=env).returncode == 0
    out = vigil("rollback", "r", "--file", "a.txt", cwd=path, env=env)
    assert out.returncode == 0, out.stderr
    assert (path / "a.txt").read_text() == "hello\n"
    assert not (path / "gone.txt").exists(), "a file outside --file was rolled back"


def test_failed_attempt_leaves_the_workspace_as_it_was(ws: Any) -> None:
    path, env = ws
    before = tree_hash(path)
    write_plan(
        path.parent / "bad.yaml",
        {
            "name": "bad",
            "project": "bad",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {
                            "id": "half",
                            "run": "echo partial > a.txt; rm gone.txt; touch new.txt; exit 3",
                            "retry": {"attempts": 2, "initial": 0},
                        },
                        {"id": "invalid", "run": "echo x > b.txt", "validate": "test -f nowhere"},
                    ],
                }
            ],
        },
    )
    out = vigil("run", str(path.parent / "bad.yaml"), cwd=path, env=env)
    assert out.returncode == ExitCode.RUN_FAILED
    assert tree_hash(path) == before


def test_parallel_tasks_changing_one_path_conflict(tmp_path: Path) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "shared.txt").write_text("base\n")
    # `one` commits while `two` is still running; `two` then writes the same file, whose
    # copy in its overlay is already `one`'s version: only the commit log can tell.
    write_plan(
        tmp_path / "p.yaml",
        {
            "name": "race",
            "project": "race",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "one", "run": "echo one > shared.txt"},
                        {"id": "two", "run": "sleep 1.5; echo two > shared.txt"},
                    ],
                }
            ],
        },
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "--run-id", "race", "-j", "2", cwd=path)
    assert out.returncode == ExitCode.RUN_FAILED, out.stdout + out.stderr
    tasks = {t["id"]: t for t in status("race", path)["tasks"]}
    assert tasks["one"]["state"] == "succeeded"
    assert tasks["two"]["state"] == "failed"
    reason = tasks["two"]["attempts"][-1]["reason"]
    assert "VIGIL-CONFLICT" in reason and "shared.txt" in reason
    assert (path / "shared.txt").read_text() == "one\n", "a change was overwritten silently"


def test_tasks_creating_the_same_directory_converge(tmp_path: Path) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    write_plan(
        tmp_path / "p.yaml",
        {
            "name": "dirs",
            "project": "dirs",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "a", "run": "mkdir -p build && echo a > build/a"},
                        {"id": "b", "run": "sleep 1; mkdir -p build && echo b > build/b"},
                    ],
                }
            ],
        },
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "-j", "2", cwd=path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in (path / "build").iterdir()) == ["a", "b"]


def test_review_holds_changes_and_dependents_until_approved(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    write_plan(
        tmp_path / "p.yaml",
        {
            "name": "rev",
            "project": "rev",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "change", "run": "echo reviewed > out.txt", "review": "required"},
                        {"id": "uses", "needs": ["change"], "run": "cat out.txt > used.txt"},
                        {"id": "free", "run": "echo free > free.txt"},
                    ],
                }
            ],
        },
    )
    plan = str(tmp_path / "p.yaml")
    held = vigil("run", plan, "--run-id", "rv", cwd=path)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    assert not (path / "out.txt").exists(), "a held change reached the workspace"
    assert (path / "free.txt").exists(), "an independent task waited on the review"
    shown = {
        c["task"]: c for c in json.loads(vigil("review", "rv", "--format", "json", cwd=path).stdout)
    }
    assert shown["change"]["held"] and "+reviewed" in shown["change"]["diff"]
    assert not shown["free"]["held"] and shown["free"]["committed"]
    ok = vigil("review", "rv", "--approve", "--comment", "fine", cwd=path)
    assert ok.returncode == 0, ok.stderr
    assert status("rv", path)["state"] == "succeeded"
    assert (path / "used.txt").read_text() == "reviewed\n"


def test_rejected_review_discards_and_skips_dependents(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    write_plan(
        tmp_path / "p.yaml",
        {
            "name": "rev",
            "project": "rev",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "change", "run": "echo nope > out.txt"},
                        {"id": "uses", "needs": ["change"], "run": "cat out.txt > used.txt"},
                    ],
                }
            ],
        },
    )
    held = vigil("run", str(tmp_path / "p.yaml"), "--review", "--run-id", "rj", cwd=path)
    assert held.returncode == ExitCode.WAITING
    no = vigil("review", "rj", "--reject", "-m", "wrong approach", cwd=path)
    assert no.returncode == 0, no.stderr
    view = status("rj", path)
    assert view["state"] == "failed"
    states = {t["id"]: t["state"] for t in view["tasks"]}
    assert states == {"change": "failed", "uses": "skipped"}
    assert not (path / "out.txt").exists()


def test_doctor_reports_the_isolation_mode(tmp_path: Path) -> None:
    out = vigil("doctor", "--format", "json", cwd=tmp_path)
    assert json.loads(out.stdout)["isolation"]["mode"] == "overlay"
    forced = vigil("doctor", "--format", "json", cwd=tmp_path, env={"VIGIL_ISOLATION": "snapshot"})
    report = json.loads(forced.stdout)["isolation"]
    assert report["mode"] == "snapshot" and report["warning"]
