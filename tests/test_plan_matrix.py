"""Matrices through the ``vigil`` command: one task written, one task run per combination.

Each expansion is a task of its own with a readable id (``test[python=3.12,db=pg]``);
``${{ matrix.KEY }}`` reaches steps through ``env:``; a task that needs the matrix needs
every expansion; ``max_parallel`` and ``fail_fast`` act as in GitHub Actions; mistakes
are reported at ``file:line:col`` before anything runs.
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


def plan_of(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "mx", "project": "mx", "phases": [{"id": "p", "tasks": list(tasks)}]}


TEST = {
    "id": "test",
    "matrix": {
        "python": ["3.11", "3.12"],
        "db": ["pg", "sqlite"],
        "exclude": [{"python": "3.11", "db": "sqlite"}],
        "include": [{"python": "3.12", "db": "pg", "extra": "coverage"}, {"python": "3.13"}],
    },
    "env": {"COMBO": "${{ matrix.python }}-${{ matrix.db }}-${{ matrix.extra }}"},
    "run": 'mkdir -p seen && printf "%s" "$COMBO" > "seen/$COMBO"',
}
GATHER = {"id": "gather", "needs": "test", "run": "ls seen > all.txt"}
EXPANSIONS = [
    "test[python=3.11,db=pg]",
    "test[python=3.12,db=pg]",
    "test[python=3.12,db=sqlite]",
    "test[python=3.13]",
]


def test_a_matrix_runs_each_combination_and_what_needs_it_waits_for_all(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of(TEST, GATHER))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stderr
    view = status("r1", ws)
    assert [t["id"] for t in view["tasks"]] == [*EXPANSIONS, "gather"]
    assert all(t["state"] == "succeeded" for t in view["tasks"])
    # include added a key to the combination it matched, and a combination of its own;
    # gather ran once every expansion had written its file.
    assert (ws / "all.txt").read_text().split() == [
        "3.11-pg-",
        "3.12-pg-coverage",
        "3.12-sqlite-",
        "3.13--",
    ]
    logs = ws / ".vigil" / "logs" / "r1"
    assert sorted(p.name for p in logs.iterdir() if p.is_dir()) == sorted([*EXPANSIONS, "gather"])


def test_plan_check_shows_the_expansions_and_a_need_of_one_expansion(ws: Path) -> None:
    one = {"id": "one", "needs": ["test[python=3.13]"], "run": "true"}
    write_plan(ws / "p.yaml", plan_of(TEST, GATHER, one))
    data = json.loads(vigil("plan", "check", "p.yaml", "--format", "json", cwd=ws).stdout)
    assert data["phases"][0]["waves"] == [EXPANSIONS, ["gather", "one"]]


def test_fail_fast_skips_the_expansions_not_started_and_says_why(ws: Path) -> None:
    task = {
        "id": "shard",
        "matrix": {"n": [1, 2, 3], "max_parallel": 1, "fail_fast": True},
        "env": {"N": "${{ matrix.n }}"},
        "run": 'touch "ran-$N"; [ "$N" != 1 ]',
    }
    write_plan(ws / "p.yaml", plan_of(task))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    view = {t["id"]: t for t in status("r1", ws)["tasks"]}
    assert view["shard[n=1]"]["state"] == "failed"
    # max_parallel 1 ran them one at a time, so the others had not started.
    for other in ("shard[n=2]", "shard[n=3]"):
        assert view[other]["state"] == "skipped" and view[other]["attempts"] == []
        assert view[other]["reason"] == "fail_fast: shard[n=1] of matrix shard failed"
        assert view[other]["blocked_by"] == "shard[n=1]"
    assert not (ws / "ran-2").exists() and not (ws / "ran-3").exists()
    # The report's next step can be pasted into a shell: the id is quoted, not a glob.
    report = vigil("report", "r1", cwd=ws)
    assert "`vigil logs r1 'shard[n=1]'`" in report.stdout, report.stdout
    logs = vigil("logs", "r1", "shard[n=1]", cwd=ws)
    assert logs.returncode == 0 and "==> shard[n=1] attempt 1 (failed) <==" in logs.stdout


def test_without_fail_fast_every_combination_runs(ws: Path) -> None:
    task = {
        "id": "shard",
        "matrix": {"n": [1, 2, 3], "max_parallel": 1},
        "env": {"N": "${{ matrix.n }}"},
        "run": '[ "$N" != 1 ]',
    }
    write_plan(ws / "p.yaml", plan_of(task))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    states = {t["id"]: t["state"] for t in status("r1", ws)["tasks"]}
    assert states == {"shard[n=1]": "failed", "shard[n=2]": "succeeded", "shard[n=3]": "succeeded"}


def test_matrix_values_read_in_if_and_by_an_only_selection(ws: Path) -> None:
    task = {
        "id": "deploy",
        "matrix": {"region": ["eu", "us"]},
        "if": "matrix.region == 'eu'",
        "env": {"R": "${{ matrix.region }}"},
        "run": 'touch "deployed-$R"',
    }
    other = {"id": "other", "run": "touch other"}
    write_plan(ws / "p.yaml", plan_of(task, other))
    done = vigil("run", "p.yaml", "--only", "deploy", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stderr
    view = {t["id"]: t for t in status("r1", ws)["tasks"]}
    assert view["deploy[region=eu]"]["state"] == "succeeded"
    assert view["deploy[region=us]"]["skipped_by_condition"] is True
    assert view["other"]["left_out"] is True
    assert (ws / "deployed-eu").exists() and not (ws / "deployed-us").exists()


def _problems(ws: Path, plan: dict[str, Any]) -> tuple[int, str]:
    (ws / "p.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    out = vigil("plan", "check", "p.yaml", cwd=ws)
    assert "Traceback" not in out.stderr
    return out.returncode, out.stderr


def test_plan_check_reports_matrix_mistakes_at_their_place(ws: Path) -> None:
    bad_key = {"id": "a", "matrix": {"os": []}, "run": "true"}
    unknown_exclude = {
        "id": "b",
        "matrix": {"os": ["linux"], "exclude": [{"arch": "arm"}]},
        "run": "true",
    }
    wrong_matrix_key = {
        "id": "c",
        "matrix": {"os": ["linux"]},
        "env": {"X": "${{ matrix.arch }}"},
        "run": "true",
    }
    no_matrix = {"id": "d", "env": {"X": "${{ matrix.os }}"}, "run": "true"}
    group_outputs = {
        "id": "e",
        "needs": "c",
        "env": {"X": "${{ needs.c.outputs.v }}"},
        "run": "true",
    }
    in_script = {"id": "f", "matrix": {"os": ["linux"]}, "run": "echo ${{ matrix.os }}"}
    code, err = _problems(ws, plan_of(unknown_exclude, wrong_matrix_key, no_matrix, group_outputs))
    assert code == ExitCode.USAGE
    lines = [line.strip() for line in err.splitlines()]
    assert any(
        line.startswith("p.yaml:11:9:")
        and "exclude[0] names 'arch', which is not a matrix key" in line
        for line in lines
    ), err
    assert any(
        line.startswith("p.yaml:18:") and "matrix.arch is not a key of this task's matrix" in line
        for line in lines
    ), err
    assert "'matrix' is known only in a task with a 'matrix:'" in err
    assert "'c' is a matrix of 1 tasks: read one of them, e.g. needs['c[os=linux]']" in err
    code, err = _problems(ws, plan_of(bad_key))
    assert (
        code == ExitCode.USAGE and "p.yaml:8:7:" in err and "matrix key 'os' has no values" in err
    )
    code, err = _problems(ws, plan_of(in_script))
    assert "VIGIL-PLAN-EXPRESSION-IN-SCRIPT" in err
    written = {"id": "g", "expansion": {"group": "g", "values": {}}, "run": "true"}
    bracket = {"id": "h[x=1]", "run": "true"}
    code, err = _problems(ws, plan_of(written, bracket))
    assert code == ExitCode.USAGE
    assert "is set by vigil when it expands a matrix" in err
    assert "brackets are kept for the expansions of a matrix" in err


def test_a_matrix_too_large_has_its_own_code(ws: Path) -> None:
    huge = {"id": "t", "matrix": {"a": list(range(20)), "b": list(range(13))}, "run": "true"}
    code, err = _problems(ws, plan_of(huge))
    assert code == ExitCode.USAGE
    assert err.startswith("error VIGIL-PLAN-MATRIX-TOO-LARGE")
    assert "expands to 260 tasks, more than 256" in err
    explained = vigil("explain", "VIGIL-PLAN-MATRIX-TOO-LARGE", cwd=ws)
    assert explained.returncode == 0 and "at most 256 tasks" in explained.stdout
    # 256 is allowed.
    fits = {"id": "t", "matrix": {"a": list(range(16)), "b": list(range(16))}, "run": "true"}
    code, err = _problems(ws, plan_of(fits))
    assert code == ExitCode.OK, err


def test_the_schema_covers_matrices(ws: Path) -> None:
    import jsonschema

    schema = json.loads(vigil("plan", "schema", cwd=ws).stdout)
    good = plan_of(TEST, GATHER, {"id": "one", "needs": ["test[python=3.13]"], "run": "true"})
    jsonschema.validate(good, schema)
    for wrong in (
        {"id": "t", "matrix": {"os": "linux"}, "run": "true"},
        {"id": "t", "matrix": {"os": ["linux"], "max_parallel": 0}, "run": "true"},
        {"id": "t", "matrix": {"bad key": ["x"]}, "run": "true"},
        {"id": "t[x=1]", "run": "true"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(plan_of(wrong), schema)
