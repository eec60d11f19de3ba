"""Naming runs on the command line: whole ids, unique prefixes and ``last``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import on_a_terminal, status, vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow

OFF = {"VIGIL_ISOLATION": "off"}


@pytest.fixture
def ws(tmp_path: Path, backend: str) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def plan_of(*tasks: dict[str, object]) -> dict[str, object]:
    return {"name": "n", "project": "n", "phases": [{"id": "main", "tasks": list(tasks)}]}


def test_a_prefix_and_last_name_a_run_everywhere(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "hello", "run": "echo hello-output"}))
    for rid in ("alpha-one", "alpha-two", "beta-x"):
        done = vigil("run", "p.yaml", "--run-id", rid, cwd=ws, env=OFF)
        assert done.returncode == 0, done.stderr
    # A unique prefix works for every command that reads a run...
    assert status("beta", ws)["id"] == "beta-x"
    assert "hello-output" in vigil("logs", "alpha-t", "hello", cwd=ws).stdout
    assert vigil("report", "alpha-o", cwd=ws).stdout.startswith("# Run alpha-one: SUCCEEDED")
    assert json.loads(vigil("review", "beta", "--format", "json", cwd=ws).stdout) == []
    # ...and `last` is the newest run of this workspace.
    assert status("last", ws)["id"] == "beta-x"
    post = vigil("postmortem", "last", "--force", "--format", "json", cwd=ws)
    assert post.returncode == 0, post.stderr
    assert json.loads(post.stdout)["run"] == "beta-x"
    # Commands that change a run name it by its whole id once resolved.
    cancelled = vigil("cancel", "alpha-t", "--format", "json", cwd=ws)
    assert json.loads(cancelled.stdout)["id"] == "alpha-two"


def test_an_ambiguous_prefix_is_a_usage_error_listing_the_candidates(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": "true"}))
    for rid in ("alpha-one", "alpha-two"):
        assert vigil("run", "p.yaml", "--run-id", rid, cwd=ws, env=OFF).returncode == 0
    for command in (["status"], ["logs"], ["review"], ["rollback"], ["resume"], ["cancel"]):
        out = vigil(*command, "alpha", cwd=ws)
        assert out.returncode == ExitCode.USAGE, (command, out.stderr)
        assert "VIGIL-RUN-AMBIGUOUS" in out.stderr, command
        assert "candidate: alpha-one" in out.stderr and "candidate: alpha-two" in out.stderr
        assert "Traceback" not in out.stderr
    # Nothing was done to either run.
    assert status("alpha-one", ws)["state"] == status("alpha-two", ws)["state"] == "succeeded"
    listed = vigil("escalations", "--run", "alpha", cwd=ws)
    assert listed.returncode == ExitCode.USAGE and "VIGIL-RUN-AMBIGUOUS" in listed.stderr
    unknown = vigil("status", "gamma", cwd=ws)
    assert unknown.returncode == ExitCode.USAGE and "VIGIL-RUN-NOT-FOUND" in unknown.stderr


def test_prefix_wildcards_and_case_are_plain_characters(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": "true"}))
    assert vigil("run", "p.yaml", "--run-id", "a_b", cwd=ws, env=OFF).returncode == 0
    assert vigil("run", "p.yaml", "--run-id", "axb", cwd=ws, env=OFF).returncode == 0
    # `_` and `%` are SQL LIKE wildcards; in a prefix they are just characters.
    assert status("a_", ws)["id"] == "a_b"
    assert vigil("status", "a%", cwd=ws).returncode == ExitCode.USAGE
    # Case counts, on every store.
    assert vigil("run", "p.yaml", "--run-id", "Axe", cwd=ws, env=OFF).returncode == 0
    assert status("ax", ws)["id"] == "axb"
    assert status("Ax", ws)["id"] == "Axe"


def test_an_exact_id_wins_over_a_longer_one(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": "true"}))
    assert vigil("run", "p.yaml", "--run-id", "abc", cwd=ws, env=OFF).returncode == 0
    assert vigil("run", "p.yaml", "--run-id", "abcdef", cwd=ws, env=OFF).returncode == 0
    assert status("abc", ws)["id"] == "abc"
    assert status("abcd", ws)["id"] == "abcdef"


def test_last_is_reserved_and_needs_a_run(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": "true"}))
    none_yet = vigil("status", "last", cwd=ws)
    assert none_yet.returncode == ExitCode.USAGE and "VIGIL-RUN-NOT-FOUND" in none_yet.stderr
    named = vigil("run", "p.yaml", "--run-id", "last", cwd=ws, env=OFF)
    assert named.returncode == ExitCode.USAGE and "VIGIL-USAGE" in named.stderr


def test_last_is_the_newest_run_of_this_workspace(tmp_path: Path) -> None:
    """Two workspaces sharing one store: `last` in each is its own newest run."""
    shared = {**OFF, "VIGIL_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    one, two = tmp_path / "one", tmp_path / "two"
    for path, rid in ((one, "from-one"), (two, "from-two")):
        path.mkdir()
        write_plan(path / "p.yaml", plan_of({"id": "t", "run": "true"}))
        assert vigil("run", "p.yaml", "--run-id", rid, cwd=path, env=shared).returncode == 0
    assert status("last", one, env=shared)["id"] == "from-one"
    assert status("last", two, env=shared)["id"] == "from-two"


def test_runs_shows_whole_ids_in_a_pipe_and_short_ones_on_a_terminal(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": "true"}))
    for _ in range(2):
        assert vigil("run", "p.yaml", cwd=ws, env=OFF).returncode == 0
    ids = [r["id"] for r in json.loads(vigil("runs", "--format", "json", cwd=ws).stdout)]
    piped = vigil("runs", cwd=ws, env={"COLUMNS": "40"}).stdout
    for rid in ids:
        assert rid in piped.split()  # whole, even when narrower than the ids
    screen = on_a_terminal("runs", cwd=ws, env=OFF)
    shown = [line.split()[0] for line in screen.splitlines()[1:] if line.strip()]
    assert len(shown) == 2
    for short, rid in zip(shown, ids, strict=True):
        assert rid.startswith(short) and len(short) < len(rid)
        assert status(short, ws)["id"] == rid  # what the table shows names the run
