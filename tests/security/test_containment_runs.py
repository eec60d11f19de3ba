"""End to end through the ``vigil`` command: review approval after a swap, a dry run whose
stacked layers disagree about a link, and a rollback after a swap, in both isolation
modes. Nothing outside the workspace changes; the refusals are clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from sentinel import Sentinel
from vigil.errors import ExitCode
from vigil.workspace import tree_hash

pytestmark = pytest.mark.slow


@pytest.fixture(params=["overlay", "snapshot"])
def setup(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, dict[str, str], Sentinel]:
    path = tmp_path / "ws"
    (path / "sub").mkdir(parents=True)
    (path / "sub" / "keep.txt").write_text("keep\n")
    env = {"VIGIL_ISOLATION": request.param, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    return path, env, Sentinel.make(tmp_path / "outside")


def _plan(path: Path, tasks: list[dict[str, Any]]) -> str:
    write_plan(path.parent / "p.yaml", {"name": "c", "project": "c", "phases": [
        {"id": "main", "tasks": tasks}
    ]})  # fmt: skip
    return str(path.parent / "p.yaml")


def _swap(path: Path, outside: Path) -> None:
    (path / "sub").rename(path / "sub.moved")
    os.symlink(outside, path / "sub")


def test_review_approval_after_the_parent_became_a_link(
    setup: tuple[Path, dict[str, str], Sentinel], backend: str
) -> None:
    path, env, outside = setup
    plan = _plan(path, [{"id": "w", "run": "echo held > sub/f && echo new > sub/new.txt"}])
    held = vigil("run", plan, "--review", "--run-id", "rv", cwd=path, env=env)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    _swap(path, outside.root)  # between the attempt and the person's approval
    approved = vigil("review", "rv", "--approve", cwd=path, env=env)
    outside.assert_unchanged()
    view = status("rv", path, env)
    assert view["state"] == "failed", (approved.stdout, approved.stderr, view)
    assert "VIGIL-CONFLICT" in str(view), view
    assert os.readlink(path / "sub") == str(outside.root)


def test_rollback_after_the_parent_became_a_link(
    setup: tuple[Path, dict[str, str], Sentinel], backend: str
) -> None:
    path, env, outside = setup
    plan = _plan(path, [{"id": "w", "run": "echo made > sub/f"}])
    assert vigil("run", plan, "--run-id", "r", cwd=path, env=env).returncode == 0
    _swap(path, outside.root)
    refused = vigil("rollback", "r", cwd=path, env=env)
    assert refused.returncode != 0 and "VIGIL-DRIFT" in refused.stderr, refused.stderr
    forced = vigil("rollback", "r", "--all", "--force", cwd=path, env=env)
    assert forced.returncode != 0 and "VIGIL-CONFLICT" in forced.stderr, forced.stderr
    outside.assert_unchanged()


def test_a_dry_run_never_writes_through_a_link_a_dependency_made(
    setup: tuple[Path, dict[str, str], Sentinel], backend: str
) -> None:
    path, env, outside = setup
    before = tree_hash(path)
    plan = _plan(path, [
        {"id": "link", "run": f"rm -rf sub && ln -s {outside.root} sub"},
        {"id": "below", "run": "echo x > sub/f && echo y > sub/new"},
        {"id": "after", "needs": ["link", "below"], "run": "ls sub > listing.txt"},
    ])  # fmt: skip
    dry = vigil("run", plan, "--dry-run", "--run-id", "dry", cwd=path, env=env)
    outside.assert_unchanged()
    assert tree_hash(path) == before, dry.stdout + dry.stderr
    view = {t["id"]: t for t in status("dry", path, env)["tasks"]}
    assert view["after"]["state"] != "succeeded", view["after"]


def test_a_workdir_that_links_out_of_the_workspace_is_refused(
    setup: tuple[Path, dict[str, str], Sentinel],
) -> None:
    path, env, outside = setup
    os.symlink(outside.root / "sub", path / "out")  # inside by name, outside once resolved
    plan = _plan(path, [
        {"id": "linked", "workdir": "out", "run": "echo ran > made && echo STEP-RAN"},
        {"id": "inside", "workdir": "sub", "run": "echo ran > made"},
    ])  # fmt: skip
    result = vigil("run", plan, "--run-id", "wd", cwd=path, env=env)
    outside.assert_unchanged()
    assert result.returncode == ExitCode.RUN_FAILED, result.stdout + result.stderr
    view = {t["id"]: t for t in status("wd", path, env)["tasks"]}
    linked = view["linked"]
    assert linked["state"] == "failed", linked
    assert "VIGIL-USAGE" in str(linked) and "outside the workspace" in str(linked), linked
    logs = vigil("logs", "wd", "linked", cwd=path, env=env)
    assert "STEP-RAN" not in logs.stdout + logs.stderr
    # The refusal is about where the link leads: an ordinary workdir runs and commits.
    assert view["inside"]["state"] == "succeeded", view["inside"]
    assert (path / "sub" / "made").read_text() == "ran\n"
    assert not (path / "out" / "made").exists()
