"""Postmortems of real failed runs: the first failure, its log, the timeline, what to change."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from clitools import vigil, write_plan
from vigil.config import load_config
from vigil.engine.runs import start_run
from vigil.errors import ExitCode
from vigil.plan.models import Plan
from vigil.report.postmortem import postmortem_for, render_markdown
from vigil.store import open_store

FAILING = {
    "name": "nightly",
    "project": "shop",
    "phases": [
        {
            "id": "build",
            "tasks": [
                {
                    "id": "compile",
                    "run": "echo compiling; echo 'error: missing semicolon' >&2; exit 3",
                },
                {"id": "slow", "run": "sleep 30", "timeout": "0.3s", "on_failure": "continue"},
                {
                    "id": "flaky",
                    # The first attempt fails; the retry passes (attempt number tells them apart).
                    "run": 'test "$VIGIL_ATTEMPT" -gt 1',
                    "retry": {"attempts": 2, "initial": "0.05s"},
                },
            ],
        },
        {"id": "ship", "tasks": [{"id": "publish", "run": "echo shipped"}]},
    ],
}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.mark.slow
def test_postmortem_of_a_real_failed_run(ws: Path) -> None:
    write_plan(ws / "p.yaml", FAILING)
    assert vigil("run", "p.yaml", "--run-id", "f1", cwd=ws).returncode == ExitCode.RUN_FAILED
    out = vigil("postmortem", "f1", cwd=ws)
    assert out.returncode == 0, out.stderr
    md = out.stdout
    assert md.startswith("# Postmortem: run f1 FAILED")
    assert "It went wrong first at task `compile`: command exited with code 3." in md
    first = md.split("## First failure", 1)[1].split("## What to change", 1)[0]
    assert "attempt 1 (failed, exit code 3)" in first
    # The tail of the failing task's own log, as stored.
    assert "compiling" in first and "error: missing semicolon" in first
    change = md.split("## What to change", 1)[1].split("## Timeline", 1)[0]
    assert "`slow` timed out 1 time (timeout 300ms): raise `timeout`" in change
    # A command that exited non-zero by itself said why: no fallback or retry advice.
    assert "`compile` exited with code 3: its output says why" in change
    assert "`compile` is critical and has no `fallback`" not in change
    assert "What it said:" in first and "error: missing semicolon" in first
    assert "`flaky` is flaky: it passed only after 1 failed attempt" in change
    assert "1 task never ran" in change
    # A phase failed by a critical task is not blamed on its validation.
    assert "what its `validate` checks" not in change
    timeline = md.split("## Timeline", 1)[1]
    for line in (
        "`flaky` attempt 1 started (start)",
        "`flaky` attempt 2 started (retry)",
        "`slow` attempt 1 timed out",
        "`publish` skipped (blocked by `phase:build`)",
        "phase `build` failed",
        "run failed",
    ):
        assert line in timeline, line
    rows = [r for r in timeline.splitlines() if r.startswith("| 20")]
    stamps = [r.split("|")[1].strip() for r in rows]
    assert stamps == sorted(stamps) and len(rows) >= 15
    assert "| slow | 1 | main | timed out |" in md
    assert "Nothing was rolled back." in md

    js = json.loads(vigil("postmortem", "f1", "--format", "json", cwd=ws).stdout)
    assert js["first_failure"]["task"] == "compile"
    assert js["first_failure"]["exit_code"] == 3


@pytest.mark.slow
def test_a_succeeded_run_is_refused_unless_forced(ws: Path) -> None:
    write_plan(
        ws / "ok.yaml",
        {
            "name": "ok",
            "project": "ok",
            "phases": [{"id": "m", "tasks": [{"id": "a", "run": "true"}]}],
        },
    )
    assert vigil("run", "ok.yaml", "--run-id", "ok1", cwd=ws).returncode == 0
    refused = vigil("postmortem", "ok1", cwd=ws)
    assert refused.returncode == ExitCode.USAGE
    assert "VIGIL-POSTMORTEM-NOT-FAILED" in refused.stderr and "Traceback" not in refused.stderr
    assert refused.stdout == ""
    target = ws / "out" / "pm.md"
    forced = vigil("postmortem", "ok1", "--force", "--output", str(target), cwd=ws)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text().startswith("# Postmortem: run ok1 SUCCEEDED")
    missing = vigil("postmortem", "nope", cwd=ws)
    assert missing.returncode == ExitCode.USAGE and "VIGIL-RUN-NOT-FOUND" in missing.stderr
    explained = vigil("explain", "VIGIL-POSTMORTEM-NOT-FAILED", cwd=ws)
    assert explained.returncode == 0


@pytest.mark.slow
def test_phase_validation_failure_points_at_the_check(ws: Path) -> None:
    plan = {
        "name": "checked",
        "project": "shop",
        "phases": [
            {
                "id": "build",
                "tasks": [{"id": "a", "run": "echo built"}],
                "validate": [{"name": "artifact", "run": "echo 'no artifact here'; exit 1"}],
            },
            {"id": "ship", "tasks": [{"id": "b", "run": "true"}]},
        ],
    }
    write_plan(ws / "p.yaml", plan)
    assert vigil("run", "p.yaml", "--run-id", "v1", cwd=ws).returncode == ExitCode.RUN_FAILED
    data = json.loads(vigil("postmortem", "v1", "--format", "json", cwd=ws).stdout)
    failure = data["first_failure"]
    assert failure["phase"] == "build" and "task" not in failure
    assert "no artifact here" in (failure["log_tail"] or "")
    assert any("Phase `build` did not pass" in s and "`validate`" in s for s in data["suggestions"])


def test_escalations_and_rollbacks_from_the_journal(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On both stores: escalation and rollback events a run journals end up in the postmortem."""
    monkeypatch.setenv("VIGIL_DATABASE_URL", store_url)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    config = load_config(workspace)
    plan = Plan.model_validate(
        {
            "name": "deploy",
            "project": "shop",
            "phases": [{"id": "m", "tasks": [{"id": "migrate", "run": "echo migrating; exit 9"}]}],
        }
    )
    with open_store(store_url) as store:
        out = start_run(config, store, plan, "plan.yaml", run_id="d1")
        assert out.state == "failed"
        later = time.time()
        events: list[tuple[str, dict[str, Any]]] = [
            (
                "escalation.opened",
                {
                    "id": "e1",
                    "task": "migrate",
                    "kind": "approval",
                    "question": "Drop the old table?",
                    "choices": ["yes", "no"],
                    "context": {},
                },
            ),
            (
                "escalation.answered",
                {"id": "e1", "decision": "no", "value": None, "comment": "keep it", "by": "ana"},
            ),
            (
                "escalation.opened",
                {"id": "e2", "task": "migrate", "kind": "question", "question": "Retry now?"},
            ),
            (
                "rollback.done",
                {"task": "migrate", "paths": ["db/schema.sql", "db/seed.sql"], "by": "ana"},
            ),
        ]
        store.append("d1", events, at=later)
        data = postmortem_for(config, store, "d1")
    md = render_markdown(data)
    assert "escalation e1 opened on `migrate`: Drop the old table?" in md
    assert "escalation e1 answered by ana: no (keep it)" in md
    assert "- e1 on `migrate` (approval): Drop the old table? → answered by ana" in md
    assert "- e2 on `migrate` (question): Retry now? → never answered" in md
    assert "`migrate` by ana: `db/schema.sql`, `db/seed.sql`" in md
    assert "rolled back `migrate` by ana: 2 paths" in md
    assert any("Escalation e2 was never answered" in s for s in data["suggestions"])
    assert "migrating" in data["first_failure"]["log_tail"]
