"""A dry run tells the truth about the real run, through the ``vigil`` command, on both stores.

- A task needing a grant the dry run does not hold is not run (no attempt, not retried),
  ends ``skipped`` with the grant it would need, is listed with the one ``vigil grant
  create`` command for the whole run, and what needs it still dry-runs on the workspace
  without its changes; the exit code says whether everything it could run succeeded.
- Under a grant that covers it, the task runs in its throwaway sandbox with the network
  the grant allows, as a real run would, and nothing lands.
- Two tasks that no ``needs`` orders and that change one file are reported as a predicted
  conflict, which the real run of the same plan then meets as VIGIL-CONFLICT.

Keys and grants live in a config directory outside ``/tmp`` (the sandbox mounts its own
``/tmp``). Steps wait on files, never on the clock.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from clitools import kill9, spawn, status, tagged, vigil, wait_for, write_plan
from vigil.engine.dryrun import clashes
from vigil.errors import ExitCode
from vigil.workspace import ChangeEntry, Changeset, FileState, tree_hash

MARKUP = ("[yellow]", "[red]", "[bold]", "[/]", "[green]")


@pytest.fixture
def outside(backend: str) -> Iterator[Path]:
    """A directory outside /tmp: the config dir lives here, and so do test-to-step signals."""
    base = Path(tempfile.mkdtemp(prefix="vigil-dry-", dir="/var/tmp"))
    (base / "signals").mkdir()
    base.chmod(0o755)  # a step running as another user must traverse it
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(outside: Path) -> dict[str, str]:
    """Every command's environment: a private config directory with a signing key."""
    values = {"VIGIL_CONFIG_DIR": str(outside / "config")}
    done = vigil("keys", "init", cwd=outside, env=values)
    assert done.returncode == 0, done.stderr
    return values


@pytest.fixture
def ws(tmp_path: Path, outside: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "data.txt").write_text("as it was\n")
    # Steps may read the signals directory (only), so the test can tell them when to go.
    (path / "vigil.toml").write_text(f'[workspace]\nread_only_paths = ["{outside / "signals"}"]\n')
    return path


def fetch_plan(port: int) -> dict[str, Any]:
    """``fetch`` needs the network (so a grant) and leaves a file; ``after`` needs it and
    writes what it saw of that file."""
    code = (
        f"import socket; s = socket.create_connection(('127.0.0.1', {port}), 2); "
        "s.sendall(b'fetch'); s.close()"
    )
    return {
        "name": "fetching",
        "project": "shop",
        "phases": [
            {
                "id": "main",
                "tasks": [
                    {
                        "id": "fetch",
                        "requires": ["network"],
                        "run": f"python3 -c {shlex.quote(code)} && echo got > fetched.txt",
                        "retry": {"attempts": 3, "initial": "0.1s"},
                    },
                    {
                        "id": "after",
                        "needs": ["fetch"],
                        "run": "if [ -e fetched.txt ]; then echo saw-fetch > after.txt; "
                        "else echo without-fetch > after.txt; fi",
                    },
                ],
            }
        ],
    }


def tasks_of(run_id: str, ws: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in status(run_id, ws, env)["tasks"]}


def audit(ws: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = vigil("audit", "show", "--format", "json", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    return entries


def test_a_task_without_its_grant_is_not_run_and_what_needs_it_still_dry_runs(
    ws: Path, env: dict[str, str], loopback: tuple[int, list[bytes]]
) -> None:
    port, received = loopback
    write_plan(ws.parent / "p.yaml", fetch_plan(port))
    before = tree_hash(ws)

    dry = vigil("run", str(ws.parent / "p.yaml"), "--dry-run", "--run-id", "dry", cwd=ws, env=env)
    shown = dry.stdout + dry.stderr
    # Everything it could run (after) succeeded: exit 0, as documented.
    assert dry.returncode == ExitCode.OK, shown
    assert tree_hash(ws) == before, "a dry run changed the workspace"
    assert received == [], "the task without a grant reached the network"
    tasks = tasks_of("dry", ws, env)
    # Not run at all (no attempt, so no retry), in a state that says why.
    assert tasks["fetch"]["state"] == "skipped", tasks["fetch"]
    assert tasks["fetch"]["attempts"] == []
    assert tasks["fetch"]["reason"] == "would need a grant for network in dev"
    assert tasks["fetch"]["needs_grant"]["code"] == "VIGIL-GRANT-REQUIRED"
    assert tasks["after"]["state"] == "succeeded", tasks["after"]
    assert status("dry", ws, env)["state"] == "succeeded"
    # `after` dry-ran on the workspace as it is, without fetch's change, and says so.
    assert "+without-fetch" in vigil("diff", "dry", cwd=ws, env=env).stdout
    assert "after ran on the workspace without fetch's changes" in dry.stdout
    assert "fetch: would need a grant for network in dev" in dry.stdout
    # Listed with the one command that covers the whole run, on one line.
    lines = [line.strip() for line in dry.stdout.splitlines()]
    command = next(line for line in lines if line.startswith("vigil grant create"))
    assert shlex.split(command)[3:] == [
        "--project",
        "shop",
        "--env",
        "dev",
        "--allow",
        "network",
        "--expires-in",
        "1h",
        "--plan",
        str(ws.parent / "p.yaml"),
    ]
    assert "dry run dry succeeded: 1 not run (needs a grant), 1 succeeded" in dry.stdout
    assert not any(tag in shown for tag in MARKUP), shown
    # The refusal is on the record like any authorization decision.
    denied = [e for e in audit(ws, env) if e["run"] == "dry" and e["task"] == "fetch"]
    assert [(e["action"], e["decision"], e["capability"]) for e in denied] == [
        ("capability.use", "deny", "network")
    ]

    as_json = vigil(
        "run", str(ws.parent / "p.yaml"), "--dry-run", "--format", "json", cwd=ws, env=env
    )
    assert as_json.returncode == ExitCode.OK, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["not_run"] == [
        {
            "task": "fetch",
            "environment": "dev",
            "capabilities": ["network"],
            "code": "VIGIL-GRANT-REQUIRED",
            "reason": "would need a grant for network in dev",
            "ran_without_its_changes": ["after"],
        }
    ]
    assert data["grant_command"] == command
    assert [t["task"] for t in data["tasks"]] == ["after"]

    # The listed command makes the grant that lets a real run do it all.
    made = vigil(*shlex.split(command)[1:], cwd=ws, env=env)
    assert made.returncode == 0, made.stderr
    real = vigil("run", str(ws.parent / "p.yaml"), "--grant", made.stdout.strip(), cwd=ws, env=env)
    assert real.returncode == ExitCode.OK, real.stdout + real.stderr
    assert (ws / "after.txt").read_text() == "saw-fetch\n"
    assert received == [b"fetch"]


def test_a_dry_run_fails_when_a_task_it_could_run_fails(
    ws: Path, env: dict[str, str], loopback: tuple[int, list[bytes]]
) -> None:
    plan = fetch_plan(loopback[0])
    plan["phases"][0]["tasks"][1]["run"] = "exit 3"
    write_plan(ws.parent / "p.yaml", plan)
    dry = vigil("run", str(ws.parent / "p.yaml"), "--dry-run", "--run-id", "dry", cwd=ws, env=env)
    assert dry.returncode == ExitCode.RUN_FAILED, dry.stdout + dry.stderr
    tasks = tasks_of("dry", ws, env)
    assert tasks["fetch"]["state"] == "skipped" and tasks["fetch"]["attempts"] == []
    assert tasks["after"]["state"] == "failed"


def test_under_a_grant_the_task_reaches_the_network_and_nothing_lands(
    ws: Path, env: dict[str, str], loopback: tuple[int, list[bytes]]
) -> None:
    port, received = loopback
    write_plan(ws.parent / "p.yaml", fetch_plan(port))
    made = vigil(
        "grant",
        "create",
        "--project",
        "shop",
        "--env",
        "dev",
        "--allow",
        "network",
        cwd=ws,
        env=env,
    )
    assert made.returncode == 0, made.stderr
    grant_id = made.stdout.strip()
    before = tree_hash(ws)

    dry = vigil(
        "run",
        str(ws.parent / "p.yaml"),
        "--dry-run",
        "--grant",
        grant_id,
        "--run-id",
        "dry",
        cwd=ws,
        env=env,
    )
    assert dry.returncode == ExitCode.OK, dry.stdout + dry.stderr
    # The step really connected from inside its sandbox, on the first attempt.
    assert received == [b"fetch"]
    assert tree_hash(ws) == before, "a dry run under a grant changed the workspace"
    assert not (ws / "fetched.txt").exists() and not (ws / "after.txt").exists()
    tasks = tasks_of("dry", ws, env)
    assert tasks["fetch"]["state"] == "succeeded" and len(tasks["fetch"]["attempts"]) == 1
    assert tasks["after"]["state"] == "succeeded"
    # `after` stacked on fetch's uncommitted change, as in the real run.
    assert "+saw-fetch" in vigil("diff", "dry", cwd=ws, env=env).stdout
    assert "not run" not in dry.stdout and "vigil grant create" not in dry.stdout
    allowed = [e for e in audit(ws, env) if e["run"] == "dry" and e["task"] == "fetch"]
    assert [(e["action"], e["decision"], e["grant"]) for e in allowed] == [
        ("capability.use", "allow", grant_id)
    ]


def test_network_the_policy_frees_is_on_in_a_dry_run_as_in_a_real_run(
    ws: Path, env: dict[str, str], loopback: tuple[int, list[bytes]], outside: Path
) -> None:
    port, received = loopback
    (ws / "vigil.toml").write_text(
        f'[workspace]\nread_only_paths = ["{outside / "signals"}"]\n'
        '[policy]\nfree = { dev = ["network"] }\n'
    )
    write_plan(ws.parent / "p.yaml", fetch_plan(port))
    dry = vigil("run", str(ws.parent / "p.yaml"), "--dry-run", "--run-id", "dry", cwd=ws, env=env)
    assert dry.returncode == ExitCode.OK, dry.stdout + dry.stderr
    assert received == [b"fetch"]
    assert tasks_of("dry", ws, env)["fetch"]["state"] == "succeeded"
    assert "vigil grant create" not in dry.stdout


def test_a_grant_for_another_environment_leaves_the_task_not_run(
    ws: Path, env: dict[str, str], loopback: tuple[int, list[bytes]]
) -> None:
    port, received = loopback
    write_plan(ws.parent / "p.yaml", fetch_plan(port))
    made = vigil(
        "grant", "create", "--project", "shop", "--env", "qa", "--allow", "network", cwd=ws, env=env
    )
    assert made.returncode == 0, made.stderr
    dry = vigil(
        "run",
        str(ws.parent / "p.yaml"),
        "--dry-run",
        "--grant",
        made.stdout.strip(),
        "--run-id",
        "dry",
        cwd=ws,
        env=env,
    )
    assert dry.returncode == ExitCode.OK, dry.stdout + dry.stderr
    assert received == []
    fetch = tasks_of("dry", ws, env)["fetch"]
    assert fetch["state"] == "skipped" and fetch["attempts"] == []
    assert fetch["reason"].startswith("would need a grant for network in dev (grant ")
    assert fetch["needs_grant"]["code"] == "VIGIL-GRANT-SCOPE"


def test_a_halted_project_refuses_a_dry_run(ws: Path, env: dict[str, str]) -> None:
    write_plan(ws.parent / "p.yaml", fetch_plan(1))
    halted = vigil("halt", "--project", "shop", "--reason", "investigating", cwd=ws, env=env)
    assert halted.returncode == 0, halted.stderr
    dry = vigil("run", str(ws.parent / "p.yaml"), "--dry-run", cwd=ws, env=env)
    assert dry.returncode == ExitCode.REFUSED and "VIGIL-HALTED" in dry.stderr, dry.stderr
    listed = vigil("runs", "--format", "json", cwd=ws, env=env)
    assert json.loads(listed.stdout) == []
    assert ("run.start", "deny") in [(e["action"], e["decision"]) for e in audit(ws, env)]


def wait_until(signal: Path) -> str:
    """A shell loop that blocks until the test creates ``signal``."""
    return f"until [ -e {shlex.quote(str(signal))} ]; do sleep 0.05; done"


def test_a_dry_run_predicts_the_conflict_the_real_run_reports(
    ws: Path, env: dict[str, str], outside: Path
) -> None:
    (ws / "shared.txt").write_text("base\n")
    go_one, go_two = outside / "signals" / "one", outside / "signals" / "two"
    write_plan(
        ws.parent / "p.yaml",
        {
            "name": "race",
            "project": "race",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "one", "run": f"{wait_until(go_one)}; echo one > shared.txt"},
                        {"id": "two", "run": f"{wait_until(go_two)}; echo two > shared.txt"},
                        {"id": "three", "needs": ["one"], "run": "echo three > shared.txt"},
                        {"id": "four", "needs": ["three"], "run": "echo four > shared.txt"},
                    ],
                }
            ],
        },
    )
    go_one.touch()
    go_two.touch()
    before = tree_hash(ws)
    plan = str(ws.parent / "p.yaml")
    dry = vigil("run", plan, "--dry-run", "-j", "2", "--run-id", "dry", cwd=ws, env=env)
    assert dry.returncode == ExitCode.OK, dry.stdout + dry.stderr
    assert tree_hash(ws) == before
    assert (
        "one and two both change shared.txt; to order them, add `needs: [one]` to task two"
        in dry.stdout
    ), dry.stdout
    # `three` needs `one`, `four` needs it through `three`: ordered, so never predicted.
    assert "one and three" not in dry.stdout and "one and four" not in dry.stdout
    assert not any(tag in dry.stdout + dry.stderr for tag in MARKUP)
    as_json = vigil("run", plan, "--dry-run", "-j", "2", "--format", "json", cwd=ws, env=env)
    predicted = json.loads(as_json.stdout)["conflicts"]
    assert {tuple(c["tasks"]) for c in predicted} == {
        ("one", "two"),
        ("two", "three"),
        ("two", "four"),
    }
    first = next(c for c in predicted if c["tasks"] == ["one", "two"])
    assert first["paths"] == ["shared.txt"] and first["code"] == "VIGIL-CONFLICT"
    assert first["needs"] == {"task": "two", "add": "one"}

    reasons = real_run_meets_the_conflict(
        ws, env, plan, outside, lambda: (ws / "shared.txt").read_text() != "base\n"
    )
    assert any("shared.txt" in r for r in reasons), reasons


def test_a_directory_one_task_removes_and_another_writes_into_is_a_predicted_conflict(
    ws: Path, env: dict[str, str], outside: Path
) -> None:
    (ws / "d").mkdir()
    (ws / "d" / "keep").write_text("kept\n")
    go_one, go_two = outside / "signals" / "one", outside / "signals" / "two"
    write_plan(
        ws.parent / "p.yaml",
        {
            "name": "race",
            "project": "race",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {
                            "id": "one",
                            "run": f"rm -r d; echo same > same.txt; {wait_until(go_one)}",
                        },
                        {
                            "id": "two",
                            "run": f"{wait_until(go_two)}; echo new > d/new; echo same > same.txt",
                        },
                    ],
                }
            ],
        },
    )
    go_one.touch()
    go_two.touch()
    plan = str(ws.parent / "p.yaml")
    as_json = vigil("run", plan, "--dry-run", "-j", "2", "--format", "json", cwd=ws, env=env)
    assert as_json.returncode == ExitCode.OK, as_json.stdout + as_json.stderr
    predicted = json.loads(as_json.stdout)["conflicts"]
    # same.txt: both leave it in the same state, which converges (as in a real run).
    assert [(c["tasks"], c["paths"]) for c in predicted] == [(["one", "two"], ["d/new"])]
    # Whether `one` removed `d` before `two`'s file landed or after, its commit conflicts.
    real_run_meets_the_conflict(
        ws, env, plan, outside, lambda: (ws / "d" / "new").exists(), first="two"
    )


def real_run_meets_the_conflict(
    ws: Path,
    env: dict[str, str],
    plan: str,
    outside: Path,
    landed: Any,
    *,
    first: str = "one",
) -> list[str]:
    """Run ``plan`` for real: `one` and `two` start together, ``first`` commits (``landed``
    says when) while the other still runs, then the other finishes: its commit is refused
    with VIGIL-CONFLICT. Returns the reasons of its attempts."""
    second = "two" if first == "one" else "one"
    go_first, go_second = outside / "signals" / first, outside / "signals" / second
    go_first.unlink()
    go_second.unlink()
    proc = spawn("run", plan, "-j", "2", "--run-id", "real", cwd=ws, env=env)
    try:
        wait_for(lambda: tagged("real/two/", ws) and tagged("real/one/", ws))
        go_first.touch()
        wait_for(landed)
        go_second.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill9(proc)
    assert proc.returncode == ExitCode.RUN_FAILED, out + err
    tasks = tasks_of("real", ws, env)
    assert tasks[first]["state"] == "succeeded"
    reasons = [a["reason"] or "" for a in tasks[second]["attempts"]]
    assert any("VIGIL-CONFLICT" in r for r in reasons), reasons
    return reasons


# The rule behind predicted conflicts, on its own ------------------------------------------

STATES = hs.sampled_from(
    [
        None,
        FileState("dir", 0o755),
        FileState("file", 0o644, "a" * 64, 1),
        FileState("file", 0o644, "b" * 64, 1),
        FileState("symlink", target="x"),
    ]
)
CHANGESETS = hs.dictionaries(
    hs.sampled_from(["d", "d/f", "d/e", "d/e/g", "x"]),
    hs.tuples(STATES, STATES).filter(lambda ba: ba[0] != ba[1]),  # a change changes something
    max_size=5,
).map(lambda found: Changeset(tuple(ChangeEntry(p, b, a) for p, (b, a) in found.items())))


@given(CHANGESETS, CHANGESETS)
def test_clashes_do_not_depend_on_which_task_is_first(a: Changeset, b: Changeset) -> None:
    assert clashes(a, b) == clashes(b, a)
    # Every clash is a path one of them changes, and none is predicted with itself.
    assert set(clashes(a, b)) <= set(a.paths) | set(b.paths)
    assert clashes(a, a) == []
