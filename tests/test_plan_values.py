"""Inputs, outputs, expressions and conditions, through the ``vigil`` command.

A person starts a run with ``--input``/``--inputs``; a step writes ``$VIGIL_OUTPUT``;
later tasks read both with ``${{ ... }}`` in ``env:``, prompts and ``if:``; a cleanup task
with ``if: failure()`` runs after a failure. Mistakes are refused before anything runs,
at ``file:line:col`` for the plan and with a stable code for the values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def plan_of(*tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "vals", "project": "vals", **top, "phases": [{"id": "p", "tasks": list(tasks)}]}


INPUTS = {
    "version": {"type": "string", "required": True, "description": "what to release"},
    "replicas": {"type": "number", "default": 2},
    "dry": {"type": "boolean", "default": False},
    "target": {"type": "choice", "options": ["staging", "prod"], "default": "staging"},
}

ECHO_INPUTS = {
    "id": "show",
    "env": {
        "V": "${{ inputs.version }}",
        "R": "${{ inputs.replicas }}",
        "D": "${{ inputs.dry }}",
        "T": "${{ inputs.target }}",
        "WHO": "${{ vigil.project }}/${{ vigil.plan }}",
    },
    "run": 'printf "%s|%s|%s|%s|%s" "$V" "$R" "$D" "$T" "$WHO" > inputs.txt',
}


def runs(ws: Path) -> list[dict[str, Any]]:
    listed = vigil("runs", "--format", "json", cwd=ws)
    assert listed.returncode == 0, listed.stderr
    data: list[dict[str, Any]] = json.loads(listed.stdout)
    return data


def test_inputs_reach_steps_typed_and_are_recorded_and_shown(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of(ECHO_INPUTS, inputs=INPUTS))
    (ws / "in.yaml").write_text("version: '0.9'\nreplicas: 5\ntarget: prod\n")
    done = vigil(
        "run", "p.yaml", "--inputs", "in.yaml", "--input", "version=1.2.3", "-i", "dry=true",
        "--run-id", "r1", cwd=ws,
    )  # fmt: skip
    assert done.returncode == ExitCode.OK, done.stderr
    # --input wins over the file; the file over the defaults; every value typed.
    assert (ws / "inputs.txt").read_text() == "1.2.3|5|true|prod|vals/vals"
    view = status("r1", ws)
    assert view["inputs"] == {"version": "1.2.3", "replicas": 5, "dry": True, "target": "prod"}
    text = vigil("status", "r1", cwd=ws).stdout
    assert 'version="1.2.3"' in text and "replicas=5" in text and "dry=true" in text
    report = vigil("report", "r1", cwd=ws)
    assert report.returncode == 0, report.stderr
    assert "## Inputs" in report.stdout and '`"1.2.3"`' in report.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "input 'version' is required"),
        (("-i", "version="), "input 'version' is required and was given empty"),
        (("-i", "version=  "), "input 'version' is required and was given empty"),
        (("-i", "version=1", "-i", "replicas=many"), "input 'replicas' is a number, not 'many'"),
        (("-i", "version=1", "-i", "dry=maybe"), "input 'dry' is a boolean"),
        (("-i", "version=1", "-i", "target=qa"), "must be one of staging, prod, not 'qa'"),
        (("-i", "version=1", "-i", "verison=2"), "no input 'verison' (did you mean 'version'?)"),
        (("-i", "version"), "--input 'version' is not NAME=VALUE"),
        (("-i", "version=1", "--inputs", "missing.yaml"), "cannot read inputs file"),
        (("-i", "version=1", "--inputs", "list.yaml"), "is not a mapping"),
    ],
)
def test_a_wrong_input_is_refused_before_anything_runs(
    ws: Path, args: tuple[str, ...], says: str
) -> None:
    write_plan(ws / "p.yaml", plan_of(ECHO_INPUTS, inputs=INPUTS))
    (ws / "list.yaml").write_text("- a\n- b\n")
    done = vigil("run", "p.yaml", *args, cwd=ws)
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "VIGIL-INPUT-INVALID" in done.stderr and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (ws / "inputs.txt").exists()
    assert runs(ws) == []


def test_plan_check_lists_the_inputs(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of(ECHO_INPUTS, inputs=INPUTS))
    text = vigil("plan", "check", "p.yaml", cwd=ws)
    assert text.returncode == 0, text.stderr
    assert "input version: string, required (what to release)" in text.stdout
    assert 'input target: choice of staging|prod, default "staging"' in text.stdout
    data = json.loads(vigil("plan", "check", "p.yaml", "--format", "json", cwd=ws).stdout)
    assert data["inputs"]["replicas"] == {"type": "number", "default": 2}


def test_outputs_single_and_multi_line_reach_the_tasks_that_need_them(ws: Path) -> None:
    produce = {
        "id": "build",
        "run": (
            'echo "tag=v1.2" >> "$VIGIL_OUTPUT"\n'
            'echo "empty=" >> "$VIGIL_OUTPUT"\n'
            'echo "eq=a=b<<c" >> "$VIGIL_OUTPUT"\n'
            "{ echo 'notes<<EOT'; echo 'line one'; echo ''; echo 'line three'; echo 'EOT'; }"
            ' >> "$VIGIL_OUTPUT"\n'
            'echo "$VIGIL_OUTPUT" > where.txt\n'
        ),
    }
    consume = {
        "id": "use",
        "needs": "build",
        "env": {
            "TAG": "${{ needs.build.outputs.tag }}",
            "NOTES": "${{ needs.build.outputs.notes }}",
            "EQ": "${{ needs.build.outputs.eq }}",
            "RESULT": "${{ needs.build.result }}",
            "NONE": "${{ needs.build.outputs.missing }}",
        },
        "run": 'printf "%s|%s|%s|%s|%s" "$TAG" "$NOTES" "$EQ" "$RESULT" "$NONE" > got.txt',
    }
    write_plan(ws / "p.yaml", plan_of(produce, consume))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stderr
    assert (ws / "got.txt").read_text() == "v1.2|line one\n\nline three|a=b<<c|success|"
    view = status("r1", ws)
    build = next(t for t in view["tasks"] if t["id"] == "build")
    assert build["outputs"] == {
        "tag": "v1.2",
        "empty": "",
        "eq": "a=b<<c",
        "notes": "line one\n\nline three",
    }
    assert build["attempts"][-1]["outputs"] == build["outputs"]
    # The outputs file is outside the workspace: it is in no changeset.
    where = (ws / "where.txt").read_text().strip()
    assert not Path(where).is_relative_to(ws) or ".vigil" in Path(where).parts
    changed = vigil("diff", "r1", cwd=ws)
    assert "output" not in {Path(p).name for p in changed.stdout.split() if "/" not in p}


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ('echo "just words" >> "$VIGIL_OUTPUT"', "line 1 is not NAME=VALUE"),
        ('echo "bad name=1" >> "$VIGIL_OUTPUT"', "'bad name' is not an output name"),
        ('printf "a<<EOF\\nnever ends\\n" >> "$VIGIL_OUTPUT"', "the value of 'a' never ends"),
        ("printf '\\377\\376=x\\n' >> \"$VIGIL_OUTPUT\"", "not UTF-8"),
    ],
)
def test_malformed_outputs_fail_the_task_with_the_line(ws: Path, script: str, says: str) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "a", "run": script}))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    task = status("r1", ws)["tasks"][0]
    assert task["state"] == "failed"
    assert len(task["attempts"]) == 1  # malformed is not retried: it would be again
    reason = task["attempts"][0]["reason"]
    assert reason.startswith("VIGIL-OUTPUT-MALFORMED") and says in reason, reason


def test_outputs_over_the_limit_fail_the_task_as_a_limit(ws: Path) -> None:
    script = 'head -c 2000000 /dev/zero | tr "\\0" x | sed "s/^/big=/" >> "$VIGIL_OUTPUT"'
    write_plan(ws / "p.yaml", plan_of({"id": "a", "run": script}))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    task = status("r1", ws)["tasks"][0]
    reason = task["attempts"][0]["reason"]
    assert reason.startswith("VIGIL-LIMIT") and "$VIGIL_OUTPUT" in reason, reason
    assert task["outputs"] == {}


def test_a_failed_attempts_outputs_are_not_kept(ws: Path) -> None:
    step = {"id": "a", "run": 'echo "x=1" >> "$VIGIL_OUTPUT"; exit 1', "on_failure": "continue"}
    after = {
        "id": "b",
        "needs": "a",
        "if": "always()",
        "env": {"X": "${{ needs.a.outputs.x }}", "R": "${{ needs.a.result }}"},
        "run": 'printf "[%s] %s" "$X" "$R" > got.txt',
    }
    write_plan(ws / "p.yaml", plan_of(step, after))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stderr
    assert (ws / "got.txt").read_text() == "[] failure"


def test_cleanup_if_failure_runs_after_a_failure_and_skips_are_explained(ws: Path) -> None:
    tasks = [
        {"id": "build", "run": "exit 1"},
        {"id": "deploy", "needs": "build", "run": "touch deployed"},
        {
            "id": "cleanup",
            "needs": "deploy",
            "if": "${{ failure() }}",
            "env": {"R": "${{ needs.deploy.result }}"},
            "run": 'printf "%s" "$R" > cleaned',
        },
        {"id": "celebrate", "needs": "deploy", "if": "success()", "run": "touch party"},
        {"id": "gated", "if": "inputs.go", "run": "touch gated"},
    ]
    write_plan(ws / "p.yaml", plan_of(*tasks, inputs={"go": {"type": "boolean"}}))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    assert (ws / "cleaned").read_text() == "skipped"
    assert not (ws / "deployed").exists() and not (ws / "party").exists()
    assert not (ws / "gated").exists()
    view = {t["id"]: t for t in status("r1", ws)["tasks"]}
    assert view["cleanup"]["state"] == "succeeded"
    assert view["celebrate"]["state"] == "skipped"
    assert view["celebrate"]["reason"] == "condition was false: if: success()"
    assert view["gated"]["skipped_by_condition"] is True
    assert "condition was false: if: inputs.go" in vigil("status", "r1", cwd=ws).stdout
    report = vigil("report", "r1", "--format", "json", cwd=ws)
    assert report.returncode == 0, report.stderr
    advice = " ".join(json.loads(report.stdout)["recommendations"])
    # deploy did not run because build failed; celebrate and gated by their conditions,
    # which is the plan working as written, not something to fix.
    assert "1 task did not run because of: build." in advice


def test_a_run_whose_conditions_only_skip_succeeds(ws: Path) -> None:
    tasks = [
        {"id": "build", "run": "true"},
        {"id": "notify", "needs": "build", "if": "failure()", "run": "touch notified"},
    ]
    write_plan(ws / "p.yaml", plan_of(*tasks))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stderr
    assert not (ws / "notified").exists()


def test_a_phase_if_failure_runs_after_an_earlier_phase_failed(ws: Path) -> None:
    plan = {
        "name": "ph",
        "project": "ph",
        "phases": [
            {"id": "build", "tasks": [{"id": "b", "run": "exit 1"}]},
            {"id": "ship", "tasks": [{"id": "s", "run": "touch shipped"}]},
            {"id": "page", "if": "failure()", "tasks": [{"id": "p", "run": "touch paged"}]},
        ],
    }
    write_plan(ws / "p.yaml", plan)
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    assert (ws / "paged").exists() and not (ws / "shipped").exists()


def test_agent_prompts_read_expressions_as_data(ws: Path) -> None:
    agent = {
        "id": "ask",
        "needs": "build",
        "agent": {
            "command": "tee prompt.txt",
            "prompt": "Release ${{ inputs.version }} tagged ${{ needs.build.outputs.tag }}. "
            "{{ not jinja }}",
        },
    }
    build = {"id": "build", "run": 'echo "tag={{ 7*7 }}" >> "$VIGIL_OUTPUT"'}
    write_plan(ws / "p.yaml", plan_of(build, agent, inputs={"version": {"type": "string"}}))
    done = vigil("run", "p.yaml", "-i", "version={% x %}", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stderr
    # Values are inserted as they are: not read again as a template.
    assert (ws / "prompt.txt").read_text() == ("Release {% x %} tagged {{ 7*7 }}. {{ not jinja }}")


def test_plan_check_reports_expression_mistakes_at_their_place(ws: Path) -> None:
    text = """\
name: x
project: x
inputs:
  version: {type: string}
  size: {type: number, default: big}
phases:
  - id: p
    tasks:
      - id: a
        run: echo "${{ inputs.version }}"
      - id: b
        needs: a
        if: needs.a.result == 'success' && inputs.version
        env:
          X: "${{ inputs.verison }}"
          Y: "${{ needs.c.outputs.z }}"
        run: echo "$X"
      - id: c
        run: "true"
        validate: test "${{ vigil.run_id }}"
"""
    (ws / "p.yaml").write_text(text)
    done = vigil("plan", "check", "p.yaml", cwd=ws)
    assert done.returncode == ExitCode.USAGE
    err = done.stderr
    assert "VIGIL-PLAN-EXPRESSION-IN-SCRIPT" in err, err
    assert "p.yaml:10:14: run holds an expression" in err
    assert 'write "$NAME" (quoted)' in err
    assert "p.yaml:20:19: validate[0] holds an expression" in err
    assert "p.yaml:13:13: if: ${{ needs.a.result == 'success' && inputs.version }}" in err
    assert "write 'and' / 'or' instead of '&&' / '||'" in err
    assert "p.yaml:15:14: env.X: input 'verison' is not declared" in err
    assert "p.yaml:16:14: env.Y: 'c' is not in this task's needs" in err
    assert "p.yaml:5:33: the default of input 'size' is a number, not 'big'" in err


def test_an_input_declared_wrongly_is_a_plan_error(ws: Path) -> None:
    (ws / "p.yaml").write_text(
        "name: x\nproject: x\ninputs:\n  pick: {type: choice}\n"
        "  n: {type: number, options: [a]}\n"
        "phases:\n  - id: p\n    tasks:\n      - id: a\n        run: 'true'\n"
    )
    done = vigil("plan", "check", "p.yaml", cwd=ws)
    assert done.returncode == ExitCode.USAGE
    assert "p.yaml:4:9: the plan: inputs.pick is a choice without options" in done.stderr
    assert "p.yaml:5:6: the plan: inputs.n has options but is of type 'number'" in done.stderr


def test_a_plan_without_scripts_expressions_is_a_plain_plan_error(ws: Path) -> None:
    (ws / "p.yaml").write_text(
        "name: x\nproject: x\nphases:\n  - id: p\n    tasks:\n"
        "      - id: a\n        if: success() and bogus.x\n        run: 'true'\n"
    )
    done = vigil("plan", "check", "p.yaml", cwd=ws)
    assert done.returncode == ExitCode.USAGE
    assert "VIGIL-PLAN-INVALID" in done.stderr
    assert "p.yaml:7:13: if: 'bogus' is not a context" in done.stderr


def test_the_schema_covers_inputs_and_conditions(ws: Path) -> None:
    done = vigil("plan", "schema", cwd=ws)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert "inputs" in schema["properties"]
    spec = schema["$defs"]["InputSpec"]["properties"]
    assert spec["type"]["enum"] == ["string", "number", "boolean", "choice"]
    assert {"default", "description", "required", "options"} <= spec.keys()
    assert "if" in schema["$defs"]["Task"]["properties"]
    assert "if" in schema["$defs"]["Phase"]["properties"]
    import jsonschema

    plan = yaml.safe_load(
        "name: x\nproject: x\ninputs: {v: {type: choice, options: [a]}}\n"
        "phases: [{id: p, if: always(), tasks: [{id: a, if: inputs.v, run: 'true'}]}]\n"
    )
    jsonschema.validate(plan, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**plan, "inputs": {"v": {"type": "list"}}}, schema)


def test_plans_without_the_new_keys_keep_their_hash() -> None:
    from vigil.plan.models import Plan

    plan = Plan.model_validate(plan_of({"id": "a", "run": "true"}))
    assert '"if"' not in plan.canonical_json() and '"inputs"' not in plan.canonical_json()
    conditional = Plan.model_validate(plan_of({"id": "a", "run": "true", "if": "always()"}))
    assert conditional.content_hash() != plan.content_hash()


@pytest.mark.parametrize("mode", ["snapshot", "off"])
def test_outputs_work_in_every_isolation_mode(ws: Path, mode: str) -> None:
    produce = {"id": "a", "run": 'printf "v=%s\\n" "$VIGIL_ISOLATION_SEEN" >> "$VIGIL_OUTPUT"'}
    produce["env"] = {"VIGIL_ISOLATION_SEEN": mode}
    consume = {
        "id": "b",
        "needs": "a",
        "env": {"V": "${{ needs.a.outputs.v }}"},
        "run": 'printf "%s" "$V" > got.txt',
    }
    write_plan(ws / "p.yaml", plan_of(produce, consume))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws, env={"VIGIL_ISOLATION": mode})
    assert done.returncode == ExitCode.OK, done.stderr
    assert (ws / "got.txt").read_text() == mode
    # The outputs file and its directory are gone with the attempt.
    assert (
        not any((ws / ".vigil" / "attempts").glob("*/io"))
        if (ws / ".vigil" / "attempts").exists()
        else True
    )


EXAMPLE = Path(__file__).parent.parent / "examples" / "deploy-inputs.yaml"


def test_the_inputs_example_runs_as_its_comments_say(ws: Path) -> None:
    ok = vigil("run", str(EXAMPLE), "-i", "version=2.0.1", "--run-id", "ok", cwd=ws)
    assert ok.returncode == ExitCode.OK, ok.stderr
    assert (ws / "ANNOUNCEMENT.txt").read_text() == "Release 2.0.1\nfor staging\n"
    assert sorted(p.name for p in (ws / "deployed" / "staging").iterdir()) == [
        "replica-1.txt",
        "replica-2.txt",
    ]
    states = {t["id"]: t["state"] for t in status("ok", ws)["tasks"]}
    assert states["rollback-release"] == "skipped"
    assert states["smoke[probe=count]"] == states["smoke[probe=content]"] == "succeeded"
    broken = vigil(
        "run", str(EXAMPLE), "-i", "version=2.0.2", "-i", "break_smoke=true",
        "-i", "target=prod", "--run-id", "broken", cwd=ws,
    )  # fmt: skip
    assert broken.returncode == ExitCode.RUN_FAILED, broken.stderr
    states = {t["id"]: t["state"] for t in status("broken", ws)["tasks"]}
    assert states == {
        "package": "succeeded",
        "deploy": "succeeded",
        "smoke[probe=count]": "failed",
        "smoke[probe=content]": "skipped",
        "rollback-release": "succeeded",
        "announce": "skipped",
    }
    assert (ws / "rollback.log").read_text() == "rolled back prod\n"
    assert not (ws / "deployed" / "prod").exists()
    only = vigil(
        "run", str(EXAMPLE), "-i", "version=3.0.0", "--tags", "build", "--run-id", "tags",
        cwd=ws,
    )  # fmt: skip
    assert only.returncode == ExitCode.OK, only.stderr
    states = {t["id"]: (t["state"], t["left_out"]) for t in status("tags", ws)["tasks"]}
    assert states["package"] == ("succeeded", False)
    assert states["deploy"] == ("skipped", True)
    assert states["smoke[probe=count]"] == states["smoke[probe=content]"] == ("skipped", True)
    assert (ws / "dist" / "app-3.0.0.txt").exists()


def test_plan_convert_keeps_inputs_and_conditions() -> None:
    from vigil.plan import load_plan_text, to_yaml
    from vigil.plan.models import Plan

    plan = Plan.model_validate(
        {
            **plan_of(
                {"id": "a", "run": "true"},
                {"id": "b", "needs": "a", "if": "failure()", "run": "true"},
                inputs={"v": {"type": "choice", "options": ["x", "y"], "default": "x"}},
            ),
        }
    )
    plan = plan.model_copy(
        update={"phases": (plan.phases[0].model_copy(update={"if_": "always()"}),)}
    )
    again = load_plan_text(to_yaml(plan), "again.yaml").plan
    assert again == plan


def test_a_secret_written_as_an_output_is_masked_before_it_is_journalled(ws: Path) -> None:
    (ws / "vigil.toml").write_text('[secrets]\nTOKEN = { env = "MY_TOKEN" }\n')
    value = "s3cr3t-0utput-v4lue"
    leak = {
        "id": "leak",
        "secrets": ["TOKEN"],
        "run": 'echo "token=$TOKEN" >> "$VIGIL_OUTPUT"; echo "plain=ok" >> "$VIGIL_OUTPUT"',
    }
    read = {
        "id": "read",
        "needs": "leak",
        "env": {"T": "${{ needs.leak.outputs.token }}"},
        "run": 'printf "%s" "$T" > got.txt',
    }
    write_plan(ws / "p.yaml", plan_of(leak, read))
    env = {"MY_TOKEN": value, "VIGIL_CONFIG_DIR": str(ws.parent / "config")}
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    view = status("r1", ws, env)
    outputs = next(t for t in view["tasks"] if t["id"] == "leak")["outputs"]
    assert outputs["plain"] == "ok"
    assert value not in outputs["token"] and outputs["token"]
    assert value not in json.dumps(view)
    assert value not in (ws / "got.txt").read_text()
    stored = b"".join(p.read_bytes() for p in (ws / ".vigil").rglob("*") if p.is_file())
    assert value.encode() not in stored


TAGGED = {
    "name": "tags",
    "project": "tags",
    "phases": [
        {
            "id": "a",
            "tasks": [
                {"id": "build", "run": "touch built", "tags": ["fast"]},
                {"id": "test", "needs": "build", "run": "touch tested", "tags": ["slow"]},
                {"id": "lint", "run": "touch linted", "tags": ["fast", "style"]},
            ],
        },
        {
            "id": "b",
            "validate": "test -f deployed",
            "tasks": [{"id": "deploy", "needs": "test", "run": "touch deployed"}],
        },
    ],
}


@pytest.mark.parametrize(
    ("args", "ran"),
    [
        (("--only", "test"), {"tested"}),
        (("--only", "test", "--with-needs"), {"built", "tested"}),
        (("--only", "deploy,lint", "--with-needs"), {"built", "tested", "linted", "deployed"}),
        (("--skip", "test", "--skip", "lint"), {"built", "deployed"}),
        (("--tags", "fast"), {"built", "linted"}),
        (("--tags", "slow", "--with-needs", "--skip-tags", "style"), {"built", "tested"}),
        (("--skip-tags", "slow,fast"), {"deployed"}),
    ],
)
def test_partial_runs_leave_out_what_was_not_asked_for(
    ws: Path, args: tuple[str, ...], ran: set[str]
) -> None:
    write_plan(ws / "p.yaml", TAGGED)
    done = vigil("run", "p.yaml", *args, "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    made = {p.name for p in ws.iterdir()} & {"built", "tested", "linted", "deployed"}
    assert made == ran
    view = status("r1", ws)
    out = {t["id"] for t in view["tasks"] if t["left_out"]}
    assert len(out) == 4 - len(ran)
    for t in view["tasks"]:
        if t["left_out"]:
            assert t["state"] == "skipped" and t["reason"].startswith("left out")
            assert t["attempts"] == []
    if out:
        assert "left out" in done.stdout
    # The report lists them as left out, not as something to fix.
    advice = json.loads(vigil("report", "r1", "--format", "json", cwd=ws).stdout)
    assert "did not run because" not in " ".join(advice["recommendations"])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--only", "tset"), "no task 'tset' (did you mean 'test'?)"),
        (("--skip", "nope"), "no task 'nope'"),
        (("--tags", "fsat"), "no tag 'fsat' (did you mean 'fast'?)"),
        (("--tags", "fast", "--skip-tags", "fast"), "leaves every task out"),
        (("--with-needs",), "--with-needs goes with --only or --tags"),
    ],
)
def test_a_wrong_selection_is_refused_before_anything_runs(
    ws: Path, args: tuple[str, ...], says: str
) -> None:
    write_plan(ws / "p.yaml", TAGGED)
    done = vigil("run", "p.yaml", *args, cwd=ws)
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert says in done.stderr and "VIGIL-" in done.stderr
    assert runs(ws) == []


def test_options_of_a_whole_run_keep_their_recorded_form() -> None:
    """A run without inputs or left-out tasks records its options as before (its seal,
    made by an older vigil, still verifies); a partial run's are read back equal."""
    from vigil.engine.options import RunOptions

    plain = RunOptions(max_parallel=2)
    assert "left_out" not in plain.to_dict() and "inputs" not in plain.to_dict()
    partial = RunOptions(max_parallel=2, left_out={"a": "left out by --skip"})
    assert partial.to_dict()["left_out"] == {"a": "left out by --skip"}
    assert RunOptions.from_dict(partial.to_dict()) == partial


def test_a_rollback_command_gets_the_env_its_task_had_with_expressions_evaluated(
    ws: Path,
) -> None:
    plan = plan_of(
        {
            "id": "deploy",
            "env": {"RELEASE": "v${{ inputs.version }}"},
            "run": 'echo "deployed $RELEASE"',
            "rollback": 'echo "rolling back $RELEASE from $TARGET"',
        },
        inputs=INPUTS,
        env={"TARGET": "${{ inputs.target }}"},
    )
    write_plan(ws / "p.yaml", plan)
    done = vigil("run", "p.yaml", "-q", "--run-id", "rb", "-i", "version=2.0.1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    back = vigil("rollback", "rb", "--all", cwd=ws)
    assert back.returncode == ExitCode.OK, back.stdout + back.stderr
    log = (ws / ".vigil" / "logs" / "rb" / "deploy" / "rollback.log").read_text()
    assert "rolling back v2.0.1 from staging" in log, log
    assert "${{" not in log
