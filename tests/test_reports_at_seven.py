"""Reports that help at 7 a.m.: what a failed task said, advice that fits the failure, the
`needs` that orders two clashing tasks, and lists of thousands of paths that fit a screen.

Every test drives the real ``vigil`` command and reads what it printed.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clitools import vigil, write_plan
from vigil.engine.excerpt import FALLBACK_LINES, MAX_LINES, MAX_WIDTH, key_lines
from vigil.errors import ExitCode

PYTEST_LIKE = r"""
printf 'collected 12 items\n\n'
printf 'tests/test_cart.py .F.F........\n\n'
printf '=================================== FAILURES ===================================\n'
printf 'E       AssertionError: assert 3 == 4\n'
printf 'tests/test_cart.py:12: AssertionError\n'
printf '=========================== short test summary info ============================\n'
printf '\033[31mFAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4\033[0m\n'
printf 'FAILED tests/test_cart.py::test_tax - ValueError: no rate for XX\n'
printf '========================= 2 failed, 10 passed in 1.21s =========================\n'
exit 1
"""

SUMMARY = "2 failed, 10 passed in 1.21s"


def _plan(tasks: list[dict[str, object]], name: str = "nightly") -> dict[str, object]:
    return {"name": name, "project": "shop", "phases": [{"id": "main", "tasks": tasks}]}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.mark.slow
def test_a_failing_test_suite_is_quoted_and_not_told_to_add_a_fallback(ws: Path) -> None:
    write_plan(ws / "p.yaml", _plan([{"id": "tests", "run": PYTEST_LIKE}]))
    run = vigil("run", "p.yaml", "-q", "--run-id", "t1", cwd=ws)
    assert run.returncode == ExitCode.RUN_FAILED, run.stderr
    said = run.stdout.split("tests said", 1)[1]
    # The summary, both FAILED lines, without the terminal colours; not the noise above.
    assert f"| {'=' * 25} {SUMMARY} {'=' * 25}" in said
    assert "| FAILED tests/test_cart.py::test_total - AssertionError: assert 3 == 4\n" in said
    assert "| FAILED tests/test_cart.py::test_tax - ValueError: no rate for XX" in said
    assert "\033" not in run.stdout and "collected 12 items" not in run.stdout
    assert "vigil logs t1 tests" in run.stdout
    assert "fallback" not in run.stdout and "on_failure" not in run.stdout

    report = (ws / ".vigil" / "reports" / "t1.md").read_text()
    todo = report.split("## What to do", 1)[1].split("\n## ", 1)[0]
    assert "Start with tests: `tests` exited with code 1: its output says why" in todo
    quoted = report.split("## What the failed tasks said", 1)[1].split("\n## ", 1)[0]
    assert SUMMARY in quoted and "FAILED tests/test_cart.py::test_tax" in quoted
    assert "fallback" not in todo.replace("a retry or a fallback would only", "")

    pm = vigil("postmortem", "t1", cwd=ws)
    assert pm.returncode == 0, pm.stderr
    first = pm.stdout.split("## First failure", 1)[1].split("## What to change", 1)[0]
    assert "What it said:" in first and SUMMARY in first
    change = pm.stdout.split("## What to change", 1)[1].split("## Timeline", 1)[0]
    assert "`tests` exited with code 1" in change
    assert "has no `fallback`" not in change and "on_failure: continue" not in change
    assert "give it a `retry`" not in change

    data = json.loads(vigil("report", "t1", "--format", "json", cwd=ws).stdout)
    (task,) = data["tasks"]
    assert task["excerpt"][-1].endswith(f"{SUMMARY} {'=' * 25}")
    assert len(task["excerpt"]) == 3


@pytest.mark.slow
def test_a_timeout_still_gets_the_fallback_and_retry_advice(ws: Path) -> None:
    # A hang is the kind of failure a retry, a fallback or `on_failure` can help with.
    write_plan(ws / "p.yaml", _plan([{"id": "hangs", "run": "sleep 30", "timeout": "0.3s"}]))
    assert vigil("run", "p.yaml", "-q", "--run-id", "h1", cwd=ws).returncode == ExitCode.RUN_FAILED
    change = vigil("postmortem", "h1", cwd=ws).stdout.split("## What to change", 1)[1]
    assert "`hangs` is critical and has no `fallback`" in change
    assert "exited with code" not in change.split("## Timeline", 1)[0]


@pytest.mark.slow
def test_the_quoted_lines_are_redacted_like_the_log(ws: Path, tmp_path: Path) -> None:
    (ws / "vigil.toml").write_text('[secrets]\nTOKEN = { env = "MY_TOKEN" }\n')
    step = "echo \"error: login with $TOKEN refused\"; echo 'Error: giving up'; exit 2"
    write_plan(ws / "p.yaml", _plan([{"id": "login", "secrets": ["TOKEN"], "run": step}]))
    env = {"MY_TOKEN": "hunter2-very-secret", "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    run = vigil("run", "p.yaml", "-q", "--run-id", "s1", cwd=ws, env=env)
    assert run.returncode == ExitCode.RUN_FAILED, run.stderr
    assert "| error: login with *** refused" in run.stdout
    assert "| Error: giving up" in run.stdout
    report = vigil("report", "s1", "--format", "json", cwd=ws, env=env).stdout
    assert json.loads(report)["tasks"][0]["excerpt"] == [
        "error: login with *** refused",
        "Error: giving up",
    ]
    for out in (run.stdout, report, vigil("status", "s1", "-o", "json", cwd=ws, env=env).stdout):
        assert "hunter2" not in out


@pytest.mark.slow
def test_a_conflict_names_both_tasks_and_the_needs_line_to_add(ws: Path) -> None:
    tasks: list[dict[str, object]] = [
        {"id": "setup", "run": "true"},
        {"id": "gen-a", "needs": ["setup"], "run": "sleep 0.5; echo a > shared.txt"},
        {"id": "gen-b", "needs": ["setup"], "run": "sleep 0.5; echo b > shared.txt"},
    ]
    write_plan(ws / "p.yaml", _plan(tasks, name="clash"))
    run = vigil("run", "p.yaml", "-q", "--run-id", "c1", cwd=ws)
    assert run.returncode == ExitCode.RUN_FAILED, run.stdout + run.stderr
    # Whichever committed first, the later task in the plan is told to need the earlier,
    # keeping the `needs` it has.
    line = "add to task `gen-b` the line `needs: [setup, gen-a]`"
    assert "`gen-a` and `gen-b` ran at the same time and both changed shared.txt" in run.stdout
    assert line in run.stdout and "VIGIL-CONFLICT" in run.stdout
    report = (ws / ".vigil" / "reports" / "c1.md").read_text()
    assert line in report.split("## What to do", 1)[1]
    change = vigil("postmortem", "c1", cwd=ws).stdout.split("## What to change", 1)[1]
    assert line in change.split("## Timeline", 1)[0]
    assert "has no `fallback`" not in change.split("## Timeline", 1)[0]
    data = json.loads(vigil("report", "c1", "--format", "json", cwd=ws).stdout)
    (conflict,) = data["conflicts"]
    assert conflict["tasks"] == ["gen-a", "gen-b"] and conflict["paths"] == ["shared.txt"]
    assert conflict["yaml"] == "needs: [setup, gen-a]"


MANY = (
    "for d in $(seq 1 30); do mkdir -p venv/lib/p$d; for i in $(seq 1 100); do "
    "echo $d $i > venv/lib/p$d/f$i.py; done; done; echo new >> src/app.py"
)


@pytest.mark.slow
def test_thousands_of_paths_are_summarised_by_top_level_directory(ws: Path) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("old\n")
    write_plan(ws / "p.yaml", _plan([{"id": "venv", "run": MANY}], name="big"))
    held = vigil("run", "p.yaml", "-q", "--run-id", "b1", "--review", cwd=ws)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    folded = "venv/: 3,000 paths (3,000 added)"

    stat = vigil("review", "b1", "--stat", cwd=ws)
    assert stat.returncode == 0, stat.stderr
    assert folded in stat.stdout and "src/app.py | modified" in stat.stdout
    assert "3,001 paths changed: 3,000 added, 1 modified" in stat.stdout
    assert "--all-paths" in stat.stdout and len(stat.stdout.splitlines()) < 10
    review = vigil("review", "b1", cwd=ws)
    assert f"# {folded} not shown" in review.stdout and "+new" in review.stdout
    assert "venv/lib/p7/f42.py" not in review.stdout
    every = vigil("review", "b1", "--stat", "--all-paths", cwd=ws).stdout
    assert every.count("venv/lib/") == 3000 and "venv/lib/p7/f42.py" in every
    listed = json.loads(vigil("review", "b1", "--stat", "--format", "json", cwd=ws).stdout)
    assert len(listed[0]["paths"]) > 3000 and listed[0]["stat"].count("venv/lib/") == 3000

    assert vigil("review", "b1", "--approve", cwd=ws).returncode == 0
    diff = vigil("diff", "b1", cwd=ws).stdout
    assert f"# {folded} not shown" in diff and "venv/lib/p7/f42.py" not in diff
    assert "venv/lib/p7/f42.py" in vigil("diff", "b1", "--all-paths", cwd=ws).stdout

    back = vigil("rollback", "b1", cwd=ws)
    assert back.returncode == 0, back.stderr
    lines = back.stdout.splitlines()
    assert lines[0] == "restored 3,033 paths" and "  src/app.py" in lines
    assert "  venv/: 3,032 paths (3,032 restored)" in lines and len(lines) < 8
    assert not (ws / "venv").exists() and (ws / "src" / "app.py").read_text() == "old\n"


@pytest.mark.slow
def test_a_rollback_lists_every_path_when_asked(ws: Path) -> None:
    write_plan(ws / "p.yaml", _plan([{"id": "venv", "run": MANY.split("; echo new")[0]}]))
    assert vigil("run", "p.yaml", "-q", "--run-id", "b2", cwd=ws).returncode == 0
    back = vigil("rollback", "b2", "--all-paths", cwd=ws).stdout.splitlines()
    assert back[0] == "restored 3,032 paths" and len(back) == 3033
    assert not (ws / "venv").exists()


# The quoting heuristic itself (pure): whatever a command prints, the excerpt is bounded,
# holds no control character, and always quotes something of a non-empty output.
printable = st.text(alphabet=string.printable + "\x1b\x07\x00é€", max_size=400)


@given(lines=st.lists(printable, max_size=60))
def test_an_excerpt_is_bounded_and_plain(lines: list[str]) -> None:
    out = key_lines("\n".join(lines))
    assert len(out) <= max(MAX_LINES, FALLBACK_LINES)
    assert all(len(line) <= MAX_WIDTH for line in out)
    assert all(ch == " " or ch.isprintable() for line in out for ch in line)
    if any(line.strip(" \t\r\n\x0b\x0c") and "\x1b" not in line for line in lines):
        assert out or all(line.startswith("[vigil] ") for line in lines)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "Traceback (most recent call last):\n  File 'x'\nKeyError: 'rate'\n",
            ["KeyError: 'rate'"],
        ),
        ("compiling\nsrc/app.c:3:5: error: expected ';'\nmake: *** [all] Error 1\n", None),
        ("npm ERR! code ENOENT\nnpm ERR! missing script\n", None),
        ("step one\nstep two\nstep three\nstep four\n", ["step two", "step three", "step four"]),
        ("the errors.py module and FAILED prose are fine\nok\n", None),
    ],
)
def test_the_lines_chosen(output: str, expected: list[str] | None) -> None:
    got = key_lines(output)
    if expected is not None:
        assert got == expected
    elif "error:" in output:
        assert got == ["src/app.c:3:5: error: expected ';'"]
    elif "npm ERR!" in output:
        assert got == ["npm ERR! code ENOENT", "npm ERR! missing script"]
    else:
        # Nothing telling: the last lines stand in.
        assert got == ["the errors.py module and FAILED prose are fine", "ok"]


def test_the_conflict_code_a_run_view_looks_for_is_the_workspaces() -> None:
    from vigil.report.view import CONFLICT_CODE
    from vigil.workspace import Conflict

    assert Conflict.code == CONFLICT_CODE
