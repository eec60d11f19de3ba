"""The example plans do what their comments say when their commands really run.

A minimal stand-in for the engine (attempts, retry on listed exit codes, fallback,
``on_failure: continue``, task and phase validation) runs every command with bash in a
fresh directory, in the order :func:`execution_order` gives.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from enginetools import HANG
from vigil.plan import Check, Plan, execution_order, load_plan

EXAMPLES = Path(__file__).parent.parent / "examples"


def _sh(script: str, cwd: Path, env: dict[str, str]) -> int:
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        timeout=HANG,
        check=False,
    )
    return done.returncode


def _checks_pass(checks: tuple[Check, ...], cwd: Path, env: dict[str, str]) -> bool:
    return all(_sh(c.run, cwd, env) == 0 for c in checks)


def simulate(plan: Plan, workspace: Path) -> dict[str, tuple[str, int]]:
    """task id -> (outcome, attempts) where outcome is ok, degraded or failed."""
    outcomes: dict[str, tuple[str, int]] = {}
    for order in execution_order(plan):
        phase = next(p for p in plan.phases if p.id == order.phase)
        for wave in order.waves:
            for task_id in wave:
                task = plan.task(task_id)
                cwd = workspace / (task.workdir or ".")
                policy = plan.retry_for(task)
                outcome = "failed"
                attempt = 0
                for attempt in range(1, policy.attempts + 1):
                    env = {**plan.env, **task.env, "VIGIL_ATTEMPT": str(attempt)}
                    code = _sh(task.run, cwd, env)
                    if code == 0 and _checks_pass(task.checks, cwd, env):
                        outcome = "ok"
                        break
                    if not policy.retries(exit_code=code, timed_out=False):
                        break
                fallback = task.fallback
                if outcome == "failed" and fallback and _sh(fallback, cwd, {**plan.env}) == 0:
                    outcome = "degraded"
                outcomes[task_id] = (outcome, attempt)
                assert outcome != "failed" or task.on_failure == "continue", task_id
        assert _checks_pass(phase.checks, workspace, dict(plan.env)), phase.id
    return outcomes


def test_release_example_runs_as_described(tmp_path: Path) -> None:
    outcomes = simulate(load_plan(EXAMPLES / "release.yaml").plan, tmp_path)
    assert outcomes.pop("lint") == ("failed", 1)
    assert outcomes.pop("integration") == ("ok", 2)
    assert outcomes.pop("publish") == ("degraded", 1)
    assert set(outcomes.values()) == {("ok", 1)}
    assert (tmp_path / "outbox" / "greeter-1.4.0.tar.gz").is_file()
    assert not (tmp_path / ".integration-tried").exists()


def test_runbook_example_runs_as_described(tmp_path: Path) -> None:
    outcomes = simulate(load_plan(EXAMPLES / "runbook.md").plan, tmp_path)
    assert outcomes.pop("links") == ("ok", 2)
    assert set(outcomes.values()) == {("ok", 1)}
    assert "<li>billing: up</li>" in (tmp_path / "public" / "index.html").read_text()


@pytest.mark.parametrize("name", ["release.yaml", "runbook.md", "deploy-inputs.yaml"])
def test_examples_stay_inside_the_workspace(name: str) -> None:
    plan = load_plan(EXAMPLES / name).plan
    for _, task in plan.tasks():
        for script in (task.run, task.fallback or "", *(c.run for c in task.checks)):
            assert " /" not in script.replace(" />", "") and "../" not in script, script
