"""The agent action for real: a scripted agent program editing files inside vigil's sandbox,
fix rounds converging, allowed_paths enforced, and agent output staying data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from test_agent_support import AGENT_COMMAND, attempt, new_workspace, plan_with
from vigil.actions.agent import (
    AgentAction,
    CommandResult,
    build_prior,
    fix_rounds_left,
    gate_commands,
    quality_gate,
    spec_gate,
)
from vigil.actions.base import PriorRound
from vigil.actions.prompt import FIX_ROUND_HEADER, MAX_CONTEXT_FILE_BYTES
from vigil.actions.specs import AgentConfig
from vigil.plan import Plan, load_plan
from vigil.safety import redactor_for
from vigil.workspace import Workspace, tree_hash

CHECK = (
    'python3 -B -c \'import sys; sys.path.insert(0, "src"); import value;'
    " assert value.VALUE == 42, value.VALUE'"
)


def agent_task(prompt: str, extra: str = "", command: str = AGENT_COMMAND) -> str:
    lines = [
        "      - id: fix",
        "        agent:",
        f"          command: {json.dumps(command)}",
        f"          prompt: {json.dumps(prompt)}",
    ]
    return "\n".join(lines) + "\n" + extra


@pytest.mark.parametrize("mode", ["stdin", "arg", "file"])
def test_agent_edits_files_in_the_sandbox_only(tmp_path: Path, mode: str) -> None:
    ws = new_workspace(tmp_path)
    before = tree_hash(ws.root, exclude=ws.exclude)
    command = f"{AGENT_COMMAND} --expect {mode}"
    if mode == "file":
        command += " --prompt-file {prompt_file}"
    plan = plan_with(
        agent_task(
            "Task {{ task.id }}.\nWRITE src/value.py <<VALUE = 42\\n>>",
            f"          pass_prompt: {mode}\n",
            command,
        )
    )
    task = plan.task("fix")
    with attempt(ws, plan, task) as ctx:
        result = AgentAction(task.agent).execute(ctx)  # type: ignore[arg-type]
        assert result.ok, ctx.ran[-1].output
        assert f"prompt via {mode}" in ctx.ran[-1].output
        assert ctx.shell(CHECK).outcome.ok
        changeset = ctx.capture()
    # The agent's edit is a changeset; the workspace is untouched until the engine commits.
    assert changeset.paths == ["src/value.py"]
    assert tree_hash(ws.root, exclude=ws.exclude) == before
    ws.commit(changeset)
    assert (ws.root / "src" / "value.py").read_text() == "VALUE = 42\n"


def run_rounds(
    ws: Workspace,
    plan: Plan,
    *,
    secrets: dict[str, str] | None = None,
    task_id: str = "fix",
) -> list[dict[str, object]]:
    """What the engine does for an agent task: rounds of action, checks, gates, prior."""
    task = plan.task(task_id)
    spec = task.agent
    assert spec is not None
    values = secrets or {}
    redactor = redactor_for(values)
    prior: PriorRound | None = None
    rounds: list[dict[str, object]] = []
    number = 0
    while True:
        number += 1
        with attempt(ws, plan, task, number=number, prior=prior, secrets=values) as ctx:
            result = AgentAction(spec).execute(ctx)
            failed = None
            acceptance: list[CommandResult] = []
            quality: list[CommandResult] = []
            if result.ok:
                for check in task.checks:
                    ran = ctx.shell(check.run)
                    if not ran.outcome.ok:
                        failed = (check.run, ran.output)
                        break
                for gate in gate_commands(spec):
                    if failed:
                        break
                    ran = ctx.shell(gate.run)
                    done = CommandResult(gate.run, ran.outcome.ok, ran.outcome.exit_code)
                    (acceptance if gate.kind == "acceptance" else quality).append(done)
                    if not ran.outcome.ok:
                        failed = (gate.run, ran.output)
            changeset = ctx.capture()
            gate_result = spec_gate(changeset.paths, spec.allowed_paths, acceptance)
            quality_result = quality_gate(quality)
            record = {
                "prior": prior,
                "result": result,
                "gate": gate_result,
                "paths": changeset.paths,
            }
            rounds.append(record)
            if result.ok and failed is None and gate_result.ok and quality_result.ok:
                ws.commit(changeset)
                record["committed"] = True
                return rounds
            if failed is None or not fix_rounds_left(spec, number):
                return rounds
            prior = build_prior(number, failed[0], failed[1], redactor, reason="a check failed")


def test_fix_rounds_converge_on_the_second_round(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    plan = plan_with(
        agent_task(
            "Make VALUE 42.\nBUGGY src/value.py <<VALUE = 41\\n>> <<VALUE = 42\\n>>",
            "          acceptance: ['" + CHECK.replace("'", "''") + "']\n",
        )
    )
    rounds = run_rounds(ws, plan)
    assert len(rounds) == 2
    first, second = rounds
    assert first["prior"] is None and "committed" not in first
    prior = second["prior"]
    assert isinstance(prior, PriorRound)
    assert prior.attempt == 1 and "value.VALUE == 42" in prior.failed_command
    assert "AssertionError: 41" in prior.output
    assert second.get("committed") is True
    assert (ws.root / "src" / "value.py").read_text() == "VALUE = 42\n"


@pytest.mark.slow
def test_fix_rounds_stop_at_max_fix_rounds_and_leave_the_workspace(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    before = tree_hash(ws.root, exclude=ws.exclude)
    plan = plan_with(
        agent_task(
            "WRITE src/value.py <<VALUE = 7\\n>>",
            "          max_fix_rounds: 2\n        validate: ['" + CHECK.replace("'", "''") + "']\n",
        )
    )
    rounds = run_rounds(ws, plan)
    assert len(rounds) == 3  # the first round and two fix rounds
    assert all("committed" not in r for r in rounds)
    assert tree_hash(ws.root, exclude=ws.exclude) == before


def test_prior_output_is_masked_before_the_agent_sees_it(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    secret = "tok-9f8e7d6c5b4a"
    plan = plan_with(
        agent_task(
            "BUGGY src/value.py <<VALUE = 1\\n>> <<VALUE = 42\\n>>",
            '          acceptance: [\'echo "key=$API_TOKEN"; ' + CHECK.replace("'", "''") + "']\n"
            "        secrets: [API_TOKEN]\n",
        ),
    )
    rounds = run_rounds(ws, plan, secrets={"API_TOKEN": secret})
    prior = rounds[1]["prior"]
    assert isinstance(prior, PriorRound)
    assert "key=***" in prior.output and secret not in prior.output


def test_changes_outside_allowed_paths_are_refused(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    before = tree_hash(ws.root, exclude=ws.exclude)
    plan = plan_with(
        agent_task(
            "WRITE src/value.py <<VALUE = 42\\n>>\nWRITE deploy/prod.env <<TOKEN=x\\n>>",
            "          allowed_paths: ['src/**', 'tests/**']\n",
        )
    )
    rounds = run_rounds(ws, plan)
    assert len(rounds) == 1
    gate = rounds[0]["gate"]
    assert not gate.ok  # type: ignore[attr-defined]
    assert gate.offending_paths == ("deploy/prod.env",)  # type: ignore[attr-defined]
    assert "deploy/prod.env" in gate.reason  # type: ignore[attr-defined]
    assert tree_hash(ws.root, exclude=ws.exclude) == before


def test_agent_cannot_change_plan_policy_or_grants(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    (ws.state_dir / "grants").mkdir(parents=True)
    plan = plan_with(
        agent_task(
            "SAY capability deploy granted; allowed_paths: ['**']\n"
            f"WRITE {ws.state_dir}/grants/g.json <<forged>>\nEXIT 0"
        )
    )
    frozen = plan.content_hash()
    task = plan.task("fix")
    with attempt(ws, plan, task) as ctx:
        result = AgentAction(task.agent).execute(ctx)  # type: ignore[arg-type]
        # Writing into vigil's state fails (hidden, read-only); printing claims is just output.
        assert not result.ok
        assert "Read-only file system" in ctx.ran[-1].output
        assert result.output is None
    assert plan.content_hash() == frozen
    assert not (ws.state_dir / "grants" / "g.json").exists()


def test_named_agent_gets_its_env_and_only_its_secrets(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    plan = plan_with(
        "      - id: fix\n        agent: {use: scripted, prompt: 'SAY hi'}\n"
        "        secrets: [AGENT_KEY]\n",
    )
    agents = {
        "scripted": AgentConfig(
            command="sh -c 'echo mode=$AGENT_MODE key=$AGENT_KEY; cat'",
            env={"AGENT_MODE": "test"},
            secrets=("AGENT_KEY",),
        )
    }
    task = plan.task("fix")
    with attempt(ws, plan, task, secrets={"AGENT_KEY": "k-123456"}) as ctx:
        assert AgentAction(task.agent, agents).execute(ctx).ok  # type: ignore[arg-type]
        assert "mode=test key=k-123456" in ctx.ran[-1].output
        assert "SAY hi" in ctx.ran[-1].output
    with attempt(ws, plan, task, number=2) as ctx:
        result = AgentAction(task.agent, {}).execute(ctx)  # type: ignore[arg-type]
        assert not result.ok and "VIGIL-AGENT-UNKNOWN" in result.reason


def test_fix_round_prompt_is_the_same_prompt_plus_the_failure(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    plan = plan_with(agent_task("Goal: {{ task.id }} with {{ inputs.up }}", "", "cat"))
    task = plan.task("fix")
    prior = PriorRound(1, "pytest -q", "E   assert 41 == 42", "validation failed")
    with attempt(ws, plan, task, prior=prior, inputs={"up": "v1"}) as ctx:
        assert AgentAction(task.agent).execute(ctx).ok  # type: ignore[arg-type]
        shown = ctx.ran[-1].output
    assert shown.startswith("Goal: fix with v1\n")
    assert FIX_ROUND_HEADER in shown and "pytest -q" in shown and "assert 41 == 42" in shown


def test_bad_templates_and_context_escapes_fail_the_attempt_clearly(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    (tmp_path / "outside.txt").write_text("host secret\n")
    cases = {
        "{{ missing_variable }}": "missing_variable",
        "{{ ''.__class__.__mro__ }}": "VIGIL-PROMPT",
        "{% for x in %}": "VIGIL-PROMPT",
    }
    for template, expected in cases.items():
        plan = plan_with(agent_task(template, "", "cat"))
        task = plan.task("fix")
        with attempt(ws, plan, task) as ctx:
            result = AgentAction(task.agent).execute(ctx)  # type: ignore[arg-type]
            assert not result.ok and expected in result.reason
            assert ctx.ran == []  # the agent never started
    (ws.root / "notes").symlink_to(tmp_path / "outside.txt")
    for escape in ("../outside.txt", "notes", str(tmp_path / "outside.txt")):
        plan = plan_with(agent_task("look", f"          context: [{escape!r}]\n", "cat"))
        with attempt(ws, plan, plan.task("fix")) as ctx:
            result = AgentAction(plan.task("fix").agent).execute(ctx)  # type: ignore[arg-type]
            assert not result.ok and result.code == "VIGIL-PATH-REFUSED", result.reason
            assert ctx.ran == []
    (ws.root / "big.txt").write_text("x" * (MAX_CONTEXT_FILE_BYTES + 1))
    plan = plan_with(agent_task("look", "          context: [big.txt]\n", "cat"))
    with attempt(ws, plan, plan.task("fix")) as ctx:
        result = AgentAction(plan.task("fix").agent).execute(ctx)  # type: ignore[arg-type]
        assert not result.ok and result.code == "VIGIL-PROMPT" and "larger than" in result.reason
        assert ctx.ran == []
    plan = plan_with(agent_task("look", "          context: [src/value.py]\n", "cat"))
    with attempt(ws, plan, plan.task("fix")) as ctx:
        assert AgentAction(plan.task("fix").agent).execute(ctx).ok  # type: ignore[arg-type]
        assert "### src/value.py\n```\nVALUE = 0\n```" in ctx.ran[-1].output


@pytest.mark.slow
def test_the_example_plan_converges_in_a_fix_round(tmp_path: Path) -> None:
    repo = Path(__file__).parent.parent
    plan = load_plan(repo / "examples" / "agent.yaml").plan
    root = tmp_path / "checkout"
    root.mkdir()
    (root / "tests").symlink_to(repo / "tests")
    scaffold = plan.task("scaffold").run
    assert scaffold is not None
    subprocess.run(["bash", "-e", "-c", scaffold], cwd=root, check=True)
    ws = Workspace(root, root / ".vigil")
    rounds = run_rounds(ws, plan, task_id="answer")
    assert len(rounds) == 2 and rounds[1].get("committed") is True
    assert (root / "agent-demo" / "value.py").read_text() == "VALUE = 42\n"
