"""Real projects' nightly jobs under vigil end as they do in a shell (issue 17).

For each project of :mod:`projects` (a real sdist from PyPI, pinned by version and hash),
two copies of the unpacked tree: one runs the nightly job directly, step after step in
``bash``; the other runs it as a vigil plan, under a grant for the network, first as a
dry run, then for real with the code change held for review, approved, and at last
rolled back. The test asserts:

- the dry run leaves the workspace as it was, predicts every task's end state and no
  conflict between tasks (there is none in the real run);
- the test suites report the same counts (passed, failed, skipped, subtests...) under
  vigil, in its dry run and in the shell, and so does the change's validation;
- the wheels built both ways have the same name and the same files with the same
  contents;
- the change is held (nothing else is), lands when approved, and equals the shell's;
  rolled back, the project's files are the sdist's again;
- the venv's files keep their times when they land, so no later step rewrites them
  (stale ``.pyc`` files would be).
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from projects import (
    CHANGE_LINE,
    PROJECTS,
    VIGIL_TOML,
    original,
    plan,
    pytest_counts,
    run_direct,
    shell_env,
    unpack,
    wheel_contents,
)

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode
from vigil.workspace import tree_hash

TIMEOUT = 900.0  # seconds for one vigil command (an install from the index included)


def states(run_id: str, ws: Path, env: dict[str, str]) -> dict[str, str]:
    return {t["id"]: t["state"] for t in status(run_id, ws, env)["tasks"]}


def logs(run_id: str, task: str, ws: Path, env: dict[str, str]) -> str:
    done = vigil("logs", run_id, task, cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROJECTS))
def test_the_nightly_job_under_vigil_ends_as_it_does_in_a_shell(name: str, tmp_path: Path) -> None:
    project = PROJECTS[name]
    ws, direct = tmp_path / "ws", tmp_path / "direct"
    unpack(project, ws)
    unpack(project, direct)
    (ws / "vigil.toml").write_text(VIGIL_TOML)
    nightly = write_plan(tmp_path / "nightly.yaml", plan(project))

    # The shell's run, meanwhile, with its own home (so its own pip cache).
    env_of_shell = shell_env(tmp_path / "home-shell")
    codes: dict[str, int] = {}
    shell = threading.Thread(
        target=lambda: codes.update(
            run_direct(project, direct, tmp_path / "shell-logs", env_of_shell)
        )
    )
    shell.start()

    env = {"HOME": str(tmp_path / "home")}
    assert vigil("keys", "init", cwd=ws, env=env).returncode == 0
    made = vigil(
        "grant", "create", "--project", project.name, "--env", "dev", "--allow", "network",
        "--plan", str(nightly), "--expires-in", "2h", cwd=ws, env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    grant = made.stdout.strip()

    # The dry run, under the grant: nothing lands, and it says how each task will end.
    before = tree_hash(ws)
    dry = vigil(
        "run", str(nightly), "--dry-run", "--grant", grant, "--run-id", "dry",
        "--format", "json", cwd=ws, env=env, timeout=TIMEOUT,
    )  # fmt: skip
    assert dry.returncode == ExitCode.OK, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert tree_hash(ws) == before, "the dry run changed the workspace"
    listed = json.loads(dry.stdout)
    assert listed["conflicts"] == [] and listed["not_run"] == [], listed["conflicts"]
    predicted = states("dry", ws, env)

    # The real run, holding the code change for review.
    real = vigil(
        "run", str(nightly), "--grant", grant, "--review", "change", "--run-id", "nightly",
        cwd=ws, env=env, timeout=TIMEOUT,
    )  # fmt: skip
    assert real.returncode == ExitCode.WAITING, real.stdout[-3000:] + real.stderr[-3000:]
    shown = json.loads(
        vigil("review", "nightly", "--stat", "--format", "json", cwd=ws, env=env).stdout
    )
    held = {c["task"] for c in shown if c["held"]}
    assert held == {"change"}, shown
    # The venv landed with its files' times, so the bytecode pip compiled stays valid:
    # the steps after it that run Python from it change none of its files.
    rewritten = [
        (c["task"], p["path"])
        for c in shown
        for p in c["paths"]
        if p["path"].startswith(".venv/") and p["kind"] == "modified"
    ]
    assert rewritten == [], rewritten[:10]
    assert (ws / project.edit).read_bytes() == original(project, project.edit)
    approved = vigil("review", "nightly", "--approve", cwd=ws, env=env, timeout=TIMEOUT)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert status("nightly", ws, env)["state"] == "succeeded"
    outcome = states("nightly", ws, env)
    assert outcome == dict.fromkeys(outcome, "succeeded"), outcome
    assert predicted == outcome, "the dry run did not predict the real run"

    shell.join()
    assert codes and set(codes.values()) == {0}, codes
    said = {n: (tmp_path / "shell-logs" / f"{n}.out").read_text() for n in codes}

    # The same test results, under vigil, in its dry run and in the shell.
    counts = pytest_counts(said["test"])
    assert counts.get("passed", 0) > 0, counts
    assert pytest_counts(logs("nightly", "test", ws, env)) == counts
    assert pytest_counts(logs("dry", "test", ws, env)) == counts
    assert pytest_counts(logs("nightly", "change", ws, env)) == pytest_counts(
        said["change.validate"]
    )

    # The same wheel, file for file.
    assert wheel_contents(ws / "dist") == wheel_contents(direct / "dist")

    # The same change; rolled back, the project is the sdist again.
    changed = original(project, project.edit) + b"\n" + CHANGE_LINE.encode()
    assert (direct / project.edit).read_bytes() == changed
    assert (ws / project.edit).read_bytes() == changed
    undone = vigil("rollback", "nightly", "--task", "change", cwd=ws, env=env)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert (ws / project.edit).read_bytes() == original(project, project.edit)
    tracked = subprocess.run(
        ["git", "-C", str(ws), "status", "--porcelain"], capture_output=True, text=True
    )
    assert tracked.stdout.splitlines() == ["?? vigil.toml"], tracked.stdout
