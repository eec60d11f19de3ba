"""What a run runs cannot be rewritten through the store (issue 10, class 4's sibling).

A run's plan, options and workspace live in the store; whoever can write the store (a
step granted the network, a local user) could rewrite them so that the next `vigil
resume`, an approval from the dashboard or `rollback --all` runs commands nobody
started. Each attack rewrites the record as such a writer would; after each, `vigil
resume` must refuse with VIGIL-RUN-TAMPERED, run nothing, and audit the refusal. An
untouched run resumes. Every attack runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clitools import vigil, write_plan
from vigil.errors import ExitCode
from vigil.plan.models import Plan
from vigil.store.schema import run_plans, runs

PLAN = {
    "name": "sealed",
    "project": "shop",
    "phases": [
        {
            "id": "p",
            "tasks": [
                {"id": "ask", "approval": {"question": "Ship it?"}},
                {"id": "ship", "needs": ["ask"], "run": "echo shipped > shipped.txt"},
            ],
        }
    ],
}
HOSTILE = "touch pwned.txt; echo shipped > shipped.txt"


def engine_of(url: str) -> sa.Engine:
    from vigil.store.connect import create_engine, parse_target

    return create_engine(parse_target(url))


def row(url: str, run_id: str) -> dict[str, Any]:
    engine = engine_of(url)
    try:
        with engine.connect() as conn:
            r = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one()
            p = conn.execute(
                sa.select(run_plans.c.plan_json).where(run_plans.c.run_id == run_id)
            ).scalar_one()
        return {**r, "plan_json": p}
    finally:
        engine.dispose()


def rewrite(url: str, run_id: str, **values: Any) -> None:
    """Rewrite the run's record as anything with write access to the store could."""
    engine = engine_of(url)
    try:
        with engine.begin() as conn:
            if "plan_json" in values:
                conn.execute(
                    run_plans.update()
                    .where(run_plans.c.run_id == run_id)
                    .values(plan_json=values.pop("plan_json"))
                )
            if values:
                conn.execute(runs.update().where(runs.c.id == run_id).values(**values))
    finally:
        engine.dispose()


def hostile_plan(current: dict[str, Any]) -> tuple[str, str]:
    """The recorded plan with the shipping command replaced; its JSON and honest hash."""
    plan = json.loads(current["plan_json"])
    plan["phases"][0]["tasks"][1]["run"] = HOSTILE
    rebuilt = Plan.model_validate(plan)
    return rebuilt.canonical_json(), rebuilt.content_hash()


def _plan_only(url: str, run_id: str, current: dict[str, Any], other: str) -> None:
    text, _ = hostile_plan(current)
    rewrite(url, run_id, plan_json=text)


def _plan_and_hash(url: str, run_id: str, current: dict[str, Any], other: str) -> None:
    text, digest = hostile_plan(current)
    rewrite(url, run_id, plan_json=text, plan_hash=digest)


def _options(url: str, run_id: str, current: dict[str, Any], other: str) -> None:
    options = json.loads(current["options"])
    options["review"] = not options.get("review")
    options["grant"] = "g-000000000000"
    rewrite(url, run_id, options=json.dumps(options))


def _seal_stripped(url: str, run_id: str, current: dict[str, Any], other: str) -> None:
    options = json.loads(current["options"])
    options.pop("seal")
    text, digest = hostile_plan(current)
    rewrite(url, run_id, options=json.dumps(options), plan_json=text, plan_hash=digest)


def _seal_of_another_run(url: str, run_id: str, current: dict[str, Any], other: str) -> None:
    options = json.loads(current["options"])
    options["seal"] = json.loads(row(url, other)["options"])["seal"]
    rewrite(url, run_id, options=json.dumps(options))


def _workspace(url: str, run_id: str, current: dict[str, Any], other: str) -> None:
    rewrite(url, run_id, workspace=current["workspace"] + "/elsewhere")


ATTACKS: dict[str, Callable[[str, str, dict[str, Any], str], None]] = {
    "plan-rewritten": _plan_only,
    "plan-and-its-hash-rewritten": _plan_and_hash,
    "options-rewritten": _options,
    "seal-stripped": _seal_stripped,
    "seal-copied-from-another-run": _seal_of_another_run,
    "workspace-moved": _workspace,
}


def start_waiting(ws: Path, env: dict[str, str], run_id: str) -> None:
    write_plan(ws / "plan.yaml", PLAN)
    started = vigil("run", "plan.yaml", "--run-id", run_id, cwd=ws, env=env)
    assert started.returncode == ExitCode.WAITING, started.stderr


def approve(ws: Path, env: dict[str, str], run_id: str) -> None:
    listed = json.loads(vigil("escalations", "-o", "json", cwd=ws, env=env).stdout)
    ask = next(e for e in listed if e["run"] == run_id)
    answered = vigil(
        "escalations", "answer", ask["id"], "--approve", "--no-resume", cwd=ws, env=env
    )
    assert answered.returncode == 0, answered.stderr


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_rewritten_run_record_is_never_resumed(
    attack: str, ws: Path, env: dict[str, str], store_url: str
) -> None:
    start_waiting(ws, env, "victim")
    start_waiting(ws, env, "other")
    approve(ws, env, "victim")
    ATTACKS[attack](store_url, "victim", row(store_url, "victim"), "other")
    for _ in range(2):  # refused every time, not only the first
        resumed = vigil("resume", "victim", cwd=ws, env=env)
        assert resumed.returncode == ExitCode.REFUSED, resumed.stdout + resumed.stderr
        assert "VIGIL-RUN-TAMPERED" in resumed.stderr
    assert not (ws / "pwned.txt").exists()
    assert not (ws / "shipped.txt").exists()
    entries = [
        json.loads(line)
        for line in (ws / ".vigil" / "audit" / "log.jsonl").read_text().splitlines()
    ]
    refused = [e for e in entries if e.get("action") == "run.resume" and e.get("run") == "victim"]
    assert refused and all(e["decision"] == "deny" for e in refused)
    assert vigil("audit", "verify", cwd=ws, env=env).returncode == 0
    # The untouched run is not affected.
    approve(ws, env, "other")
    other = vigil("resume", "other", cwd=ws, env=env)
    assert other.returncode == ExitCode.OK, other.stderr
    assert (ws / "shipped.txt").read_text() == "shipped\n"
    assert not (ws / "pwned.txt").exists()


def test_a_run_started_under_a_key_no_longer_trusted_is_not_resumed(
    ws: Path, env: dict[str, str], outside: Path
) -> None:
    start_waiting(ws, env, "victim")
    approve(ws, env, "victim")
    # Start over with a new key: the old one is no longer trusted.
    assert vigil("keys", "init", "--force", cwd=outside, env=env).returncode == 0
    resumed = vigil("resume", "victim", cwd=ws, env=env)
    assert resumed.returncode == ExitCode.REFUSED and "VIGIL-RUN-TAMPERED" in resumed.stderr
    assert not (ws / "shipped.txt").exists()


def test_rollback_runs_no_compensation_of_a_rewritten_plan(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    plan = {
        "name": "undo",
        "project": "shop",
        "phases": [
            {
                "id": "p",
                "tasks": [{"id": "t", "run": "echo v1 > v.txt", "rollback": "echo undone"}],
            }
        ],
    }
    write_plan(ws / "undo.yaml", plan)
    done = vigil("run", "undo.yaml", "--run-id", "r1", cwd=ws, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    current = row(store_url, "r1")
    text = json.loads(current["plan_json"])
    text["phases"][0]["tasks"][0]["rollback"] = "touch pwned.txt"
    rebuilt = Plan.model_validate(text)
    rewrite(store_url, "r1", plan_json=rebuilt.canonical_json(), plan_hash=rebuilt.content_hash())
    undone = vigil("rollback", "r1", "--all", cwd=ws, env=env)
    assert undone.returncode == ExitCode.REFUSED and "VIGIL-RUN-TAMPERED" in undone.stderr
    assert (ws / "v.txt").read_text() == "v1\n"  # nothing restored either
    assert not (ws / "pwned.txt").exists()
    assert not list(ws.rglob("pwned.txt"))
