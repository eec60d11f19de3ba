"""Warnings for what is valid but probably not meant (issue 17, item 9; vigil.plan.lint).

A runbook found on disk runs every bash block, including one its text calls an
alternative; a plain `run:` step can start a coding agent with its approvals switched
off. `vigil plan check` and `vigil run` say so with a stable code at file:line:col, and a
block marked `{example}` is text that never runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import vigil, write_plan
from vigil.errors import ExitCode
from vigil.plan.lint import AUTO_APPROVE, EXAMPLE_BLOCK, auto_approving

RUNBOOK = """# Release

## Build

Build the wheel:

```bash
echo built > built.txt
```

Alternatively, you can build it with Docker:

```bash
touch docker-ran.txt
```

Or:

```bash {example}
touch example-ran.txt
```
"""


@pytest.mark.slow
def test_a_block_the_text_calls_an_alternative_is_flagged_and_an_example_never_runs(
    tmp_path: Path,
) -> None:
    (tmp_path / "release.md").write_text(RUNBOOK)
    checked = vigil("plan", "check", "release.md", "--format", "json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    warnings = json.loads(checked.stdout)["warnings"]
    assert [(w["code"], w["line"]) for w in warnings] == [(EXAMPLE_BLOCK, 13)]
    assert "alternatively" in warnings[0]["cause"].lower() and "{example}" in warnings[0]["fix"]
    text = vigil("plan", "check", "release.md", cwd=tmp_path)
    assert f"release.md:13:1: {EXAMPLE_BLOCK}" in text.stdout

    converted = vigil("plan", "convert", "release.md", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    assert "example-ran" not in converted.stdout.split("description")[0]
    ran = vigil("run", "release.md", "--run-id", "r", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert f"warning: release.md:13:1: {EXAMPLE_BLOCK}" in ran.stderr
    assert (tmp_path / "built.txt").exists() and (tmp_path / "docker-ran.txt").exists()
    assert not (tmp_path / "example-ran.txt").exists(), "an {example} block ran"


def test_an_unknown_bare_word_in_a_block_is_still_an_error(tmp_path: Path) -> None:
    (tmp_path / "r.md").write_text("# R\n\n## A\n\n```bash {examples}\ntrue\n```\n")
    out = vigil("plan", "check", "r.md", cwd=tmp_path)
    assert out.returncode == ExitCode.USAGE
    assert "r.md:5:" in out.stderr and "'example'" in out.stderr


def test_an_agent_started_with_its_approvals_off_in_a_plain_step_is_flagged(
    tmp_path: Path,
) -> None:
    write_plan(
        tmp_path / "p.yaml",
        {
            "name": "agents",
            "project": "shop",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "safe", "run": "echo claude is a name here"},
                        {"id": "yolo", "run": "claude -p 'fix it' --dangerously-skip-permissions"},
                    ],
                }
            ],
        },
    )
    checked = vigil("plan", "check", "p.yaml", "--format", "json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    [warning] = json.loads(checked.stdout)["warnings"]
    assert warning["code"] == AUTO_APPROVE and "'yolo'" in warning["cause"]
    source = (tmp_path / "p.yaml").read_text().splitlines()
    assert "dangerously" in source[warning["line"] - 1]


@pytest.mark.parametrize(
    ("script", "found"),
    [
        (
            "claude -p 'x' --dangerously-skip-permissions",
            [("claude", "--dangerously-skip-permissions")],
        ),
        ("cd src && codex exec --full-auto 'do it'", [("codex", "--full-auto")]),
        ("aider --yes-always --message hi", [("aider", "--yes-always")]),
        ("env A=1 npx @google/gemini-cli --yolo", [("gemini", "--yolo")]),
        ("uvx --from aider-chat aider --yes", [("aider", "--yes")]),
        ("gemini --approval-mode yolo", [("gemini", "--approval-mode=yolo")]),
        (
            "/opt/bin/claude --permission-mode bypassPermissions",
            [("claude", "--permission-mode=bypassPermissions")],
        ),
        ("ls -y; aider -y", [("aider", "-y")]),
        (
            "anything --dangerously-bypass-approvals-and-sandbox",
            [("a program", "--dangerously-bypass-approvals-and-sandbox")],
        ),
        ("git commit -m aider --yes", []),
        ("echo claude --yes", []),
        ("apt-get install -y gcc", []),
        ("claude -p 'review this'", []),
        ("# claude --dangerously-skip-permissions", []),
    ],
)
def test_which_command_lines_approve_everything(script: str, found: list[tuple[str, str]]) -> None:
    assert auto_approving(script) == found
