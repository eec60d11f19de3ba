"""People in the loop: questions block one task, everything else runs on, answers resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(tmp_path: Path, backend: str) -> Path:
    """A workspace whose commands use each store in turn (see conftest ``backend``)."""
    path = tmp_path / "ws"
    path.mkdir()
    return path


def plan_with(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "people", "project": "people", "phases": [{"id": "p", "tasks": list(tasks)}]}


TEN = [{"id": f"t{i}", "run": f"echo {i} > t{i}.txt"} for i in range(10)]


def open_questions(ws: Path) -> list[dict[str, Any]]:
    out = vigil("escalations", "--format", "json", cwd=ws)
    assert out.returncode == 0, out.stderr
    found: list[dict[str, Any]] = json.loads(out.stdout)
    return found


def test_a_question_blocks_one_task_and_the_answer_completes_the_run(ws: Path) -> None:
    write_plan(
        ws / "p.yaml",
        plan_with(
            {"id": "ask", "approval": {"question": "Ship it?"}},
            {"id": "ship", "needs": ["ask"], "run": "echo shipped > shipped.txt"},
            *TEN,
        ),
    )
    first = vigil("run", "p.yaml", "--run-id", "q1", cwd=ws)
    assert first.returncode == ExitCode.WAITING, first.stdout + first.stderr
    view = status("q1", ws)
    assert view["state"] == "waiting"
    states = {t["id"]: t["state"] for t in view["tasks"]}
    assert all(states[f"t{i}"] == "succeeded" for i in range(10)), states
    assert states["ask"] == "waiting" and states["ship"] == "pending"
    (question,) = open_questions(ws)
    assert question["task"] == "ask" and question["question"] == "Ship it?"
    answered = vigil("escalations", "answer", question["id"], "--approve", "-m", "go", cwd=ws)
    assert answered.returncode == 0, answered.stderr
    assert status("q1", ws)["state"] == "succeeded"
    assert (ws / "shipped.txt").exists()
    # The answer drove the run on here, and showed it going.
    assert "q1 ship: attempt 1 started" in answered.stderr, answered.stderr
    assert "q1 run succeeded" in answered.stderr
    assert open_questions(ws) == []
    audit = (ws / ".vigil" / "audit" / "log.jsonl").read_text()
    assert "escalation.answer" in audit and question["id"] not in open_questions(ws)


def test_a_rejection_skips_exactly_the_dependents(ws: Path) -> None:
    write_plan(
        ws / "p.yaml",
        plan_with(
            {"id": "ask", "approval": {"question": "Deploy?"}},
            {"id": "deploy", "needs": ["ask"], "run": "touch deployed"},
            {"id": "announce", "needs": ["deploy"], "run": "touch announced"},
            {"id": "cleanup", "run": "touch cleaned"},
        ),
    )
    assert vigil("run", "p.yaml", "--run-id", "q2", cwd=ws).returncode == ExitCode.WAITING
    (question,) = open_questions(ws)
    out = vigil("escalations", "answer", question["id"], "--reject", "-m", "not tonight", cwd=ws)
    assert out.returncode == 0, out.stderr
    view = status("q2", ws)
    states = {t["id"]: t["state"] for t in view["tasks"]}
    assert states == {
        "ask": "failed",
        "deploy": "skipped",
        "announce": "skipped",
        "cleanup": "succeeded",
    }
    assert "not tonight" in next(t for t in view["tasks"] if t["id"] == "ask")["reason"]
    assert not (ws / "deployed").exists() and (ws / "cleaned").exists()


def test_a_timed_out_question_takes_its_default(ws: Path) -> None:
    write_plan(
        ws / "p.yaml",
        plan_with(
            {
                "id": "pick",
                "approval": {
                    "question": "Which region?",
                    "choices": ["eu", "us"],
                    "timeout": "1s",
                    "on_timeout": "default",
                    "default": "eu",
                },
            },
            {"id": "use", "needs": ["pick"], "run": "true"},
        ),
    )
    out = vigil("run", "p.yaml", "--run-id", "q3", cwd=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    pick = next(t for t in status("q3", ws)["tasks"] if t["id"] == "pick")
    assert pick["state"] == "succeeded" and "default" in pick["reason"]


def test_a_value_must_be_one_of_the_choices(ws: Path) -> None:
    write_plan(
        ws / "p.yaml",
        plan_with(
            {"id": "pick", "approval": {"question": "Which region?", "choices": ["eu", "us"]}},
        ),
    )
    assert vigil("run", "p.yaml", "--run-id", "q4", cwd=ws).returncode == ExitCode.WAITING
    (question,) = open_questions(ws)
    bad = vigil("escalations", "answer", question["id"], "--value", "mars", cwd=ws)
    assert bad.returncode == ExitCode.USAGE and "VIGIL-ESCALATION-ANSWER" in bad.stderr
    ok = vigil("escalations", "answer", question["id"], "--value", "us", cwd=ws)
    assert ok.returncode == 0
    report = json.loads(vigil("report", "q4", "--format", "json", cwd=ws).stdout)
    assert report["state"] == "succeeded"


def test_a_failure_can_be_deferred_to_a_person_who_asks_for_a_retry(ws: Path) -> None:
    write_plan(
        ws / "p.yaml",
        plan_with(
            {
                "id": "flaky",
                "run": 'test "$VIGIL_ATTEMPT" -ge 2',
                "escalate": {"on_failure": "defer"},
            },
            {"id": "after", "needs": ["flaky"], "run": "true"},
            {"id": "other", "run": "true"},
        ),
    )
    assert vigil("run", "p.yaml", "--run-id", "q5", cwd=ws).returncode == ExitCode.WAITING
    (question,) = open_questions(ws)
    assert question["kind"] == "failure"
    assert question["context"]["attempts"][0]["exit_code"] == 1
    out = vigil("escalations", "answer", question["id"], "--approve", cwd=ws)
    assert out.returncode == 0, out.stderr
    view = status("q5", ws)
    assert view["state"] == "succeeded"
    flaky = next(t for t in view["tasks"] if t["id"] == "flaky")
    assert [a["state"] for a in flaky["attempts"]] == ["failed", "succeeded"]
