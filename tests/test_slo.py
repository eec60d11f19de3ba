"""Service levels: exact numbers from stores filled with known runs, on both backends."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clitools import vigil
from vigil.report.slo import RunFacts, SloTargets, collect, compute_slo, p95
from vigil.safety.audit import AuditLog, audit_path, read_entries
from vigil.store import NewRun, Store, open_store

NOW = 1_800_000_000.0
HOUR = 3600.0
DAY = 86400.0

Events = list[tuple[str, dict[str, Any], float]]


def add_run(
    store: Store,
    run_id: str,
    state: str,
    ended: float | None,
    *,
    plan: str = "nightly",
    project: str = "shop",
    events: Events | None = None,
) -> None:
    created = (ended or NOW) - 60
    assert store.create_run(
        NewRun(
            id=run_id,
            plan_name=plan,
            project=project,
            plan_hash="sha256:x",
            plan_json="{}",
            plan_path="plan.yaml",
            workspace="ws",
            created_at=created,
        )
    )
    store.append(run_id, [("run.created", {})], at=created, state="running", started_at=created)
    for kind, data, at in events or []:
        store.append(run_id, [(kind, data)], at=at)
    if ended is not None:
        store.append(
            run_id, [("run.finished", {"state": state})], at=ended, state=state, ended_at=ended
        )


def attempt(task: str, number: int, outcome: str, at: float) -> tuple[str, dict[str, Any], float]:
    return ("attempt.finished", {"task": task, "attempt": number, "outcome": outcome}, at)


def fill(store: Store) -> None:
    """A week of known runs; the expected numbers are worked out in the test below."""
    a0 = NOW - 6 * DAY
    # Out of the window: must not count, even though it has attempts.
    add_run(store, "old-ok", "succeeded", NOW - 8 * DAY, events=[attempt("x", 1, "failed", 1.0)])
    add_run(store, "old-bad", "failed", NOW - 10 * DAY)
    # nightly/shop: failed, recovered 2h later by a success.
    add_run(store, "r1", "failed", a0, events=[attempt("a", 1, "failed", a0 - 5)])
    add_run(
        store,
        "r2",
        "succeeded",
        a0 + 2 * HOUR,
        events=[
            attempt("a", 1, "succeeded", a0),
            attempt("b", 1, "failed", a0),
            attempt("b", 2, "succeeded", a0),
            # vigil was interrupted: says nothing about c; its first verdict passed.
            attempt("c", 1, "interrupted", a0),
            attempt("c", 2, "succeeded", a0),
            attempt("d", 1, "timed_out", a0),
            attempt("d", 2, "failed", a0),
        ],
    )
    # Two failures in a row, then a success: each recovers at the success.
    add_run(store, "r3", "failed", NOW - 3 * DAY)
    add_run(store, "r4", "failed", NOW - 3 * DAY + HOUR)
    add_run(store, "r5", "succeeded", NOW - 3 * DAY + 5 * HOUR)
    # Another plan: a rollback of the failed run (600 s) beats its next success (1 h).
    b0 = NOW - DAY
    rollback = ("rollback.done", {"paths": ["a.txt"], "by": "ops"}, b0 + 600)
    add_run(store, "r6", "failed", b0, plan="deploy", events=[rollback])
    add_run(store, "rb", "succeeded", b0 + HOUR, plan="deploy")
    # Same plan, other project: never recovered (the success below is another project's).
    add_run(store, "r7", "failed", NOW - 2 * HOUR, project="web")
    add_run(store, "r8", "succeeded", NOW - HOUR)
    add_run(store, "r9", "cancelled", NOW - 3 * HOUR)
    add_run(store, "live", "running", None)


def test_known_runs_give_exact_numbers(store: Store) -> None:
    fill(store)
    runs = collect(store, now=NOW, window=7 * DAY)
    assert sorted(r.id for r in runs) == sorted(
        ["r1", "r2", "r3", "r4", "r5", "r6", "rb", "r7", "r8", "r9"]
    )
    audit = [
        {
            "time": datetime.fromtimestamp(NOW - HOUR, UTC).isoformat(),
            "decision": "allow",
            "grant": "g1",
            "capability": "deploy",
        },
    ]
    by_name = {i.name: i for i in compute_slo(runs, audit, SloTargets(), now=NOW, window=7 * DAY)}

    success = by_name["run_success"]
    assert (success.numerator, success.denominator) == (4, 10)
    assert success.value == pytest.approx(0.4)
    assert success.detail["runs"] == {"succeeded": 4, "failed": 5, "cancelled": 1}
    assert success.status == "missed"

    first = by_name["first_attempt_pass"]
    # r1: a failed. r2: a passed, b failed, c passed (interruption passed over), d timed out.
    assert (first.numerator, first.denominator) == (2, 5)
    assert first.status == "missed"

    ttr = by_name["ttr_p95"]
    # r1 7200, r3 18000, r4 14400, r6 600 (rollback), r7 still open at 7200.
    assert ttr.detail == {"failures": 5, "unrecovered": 1}
    assert ttr.value == 18000
    assert ttr.status == "met"  # target 24h

    enforced = by_name["policy_enforcement"]
    assert (enforced.numerator, enforced.denominator, enforced.status) == (1, 1, "met")


def test_an_empty_store_measures_nothing(store: Store) -> None:
    indicators = compute_slo(
        collect(store, now=NOW, window=DAY), [], SloTargets(), now=NOW, window=DAY
    )
    assert [(i.value, i.status) for i in indicators] == [(None, "n/a")] * 4


def test_enforcement_counts_denies_as_enforced_and_bare_allows_as_breaches() -> None:
    def entry(decision: str, grant: str | None, at: float) -> dict[str, Any]:
        return {
            "time": datetime.fromtimestamp(at, UTC).isoformat(),
            "decision": decision,
            "grant": grant,
            "capability": "deploy",
        }

    audit = [
        entry("allow", "g1", NOW - 10),
        entry("allow", "g2", NOW - 20),
        entry("deny", None, NOW - 30),
        entry("allow", None, NOW - 40),  # allowed with no grant: a breach
        entry("allow", None, NOW - 2 * DAY),  # outside the window
        {"time": "garbage", "decision": "allow", "capability": "deploy"},
        {"decision": "allow", "capability": "deploy"},
        # Not privileged decisions: a commit and a run's end are allowed without a grant.
        {**entry("allow", None, NOW - 50), "capability": None, "action": "changeset.commit"},
        {k: v for k, v in entry("allow", None, NOW - 60).items() if k != "capability"},
    ]
    (_, _, enforced, _) = compute_slo([], audit, SloTargets(), now=NOW, window=DAY)
    assert (enforced.numerator, enforced.denominator) == (3, 4)
    assert enforced.detail == {"allowed": 3, "denied": 1, "allowed_without_grant": 1}
    assert enforced.status == "missed"


@given(st.lists(st.floats(min_value=0, max_value=1e9), min_size=1, max_size=200))
def test_p95_is_the_nearest_rank(values: list[float]) -> None:
    value = p95(values)
    assert value in values
    n = len(values)
    at_or_below = sum(1 for v in values if v <= value)
    assert at_or_below >= math.ceil(0.95 * n)
    assert sum(1 for v in values if v < value) < math.ceil(0.95 * n)


facts = st.builds(
    RunFacts,
    id=st.uuids().map(str),
    plan=st.sampled_from(["p", "q"]),
    project=st.sampled_from(["x", "y"]),
    state=st.sampled_from(["succeeded", "failed", "cancelled"]),
    ended_at=st.floats(min_value=NOW - 2 * DAY, max_value=NOW),
)


@given(st.lists(facts, max_size=40), st.randoms())
def test_order_of_runs_does_not_matter_and_values_are_sane(runs: list[RunFacts], rnd: Any) -> None:
    first = compute_slo(runs, [], SloTargets(), now=NOW, window=DAY)
    shuffled = list(runs)
    rnd.shuffle(shuffled)
    again = compute_slo(shuffled, [], SloTargets(), now=NOW, window=DAY)
    assert [i.as_dict() for i in first] == [i.as_dict() for i in again]
    for i in first:
        if i.value is not None:
            assert i.value >= 0
            if i.unit == "ratio":
                assert i.value <= 1
    ttr = first[3]
    failed = [r for r in runs if r.state == "failed" and NOW - DAY <= (r.ended_at or 0) <= NOW]
    assert ttr.denominator == len(failed)


@pytest.mark.slow
def test_cli_reads_targets_from_config_and_the_real_audit_log(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text('[slo]\nsuccess = 0.5\nwindow = "1d"\nttr_p95 = "30m"\n')
    now = time.time()
    with open_store(f"sqlite:///{ws / '.vigil' / 'vigil.db'}") as store:
        add_run(store, "f", "failed", now - 2 * HOUR)
        add_run(store, "s", "succeeded", now - HOUR)
        add_run(store, "s-old", "succeeded", now - 3 * DAY)
    log = AuditLog(audit_path(ws / ".vigil"), fsync=False)
    log.append(actor="vigil", action="deploy", decision="allow", grant="g1", capability="deploy")
    log.append(actor="vigil", action="deploy", decision="deny", capability="deploy")

    out = vigil("slo", "--format", "json", cwd=ws)
    data = json.loads(out.stdout)
    by_name = {i["name"]: i for i in data["indicators"]}
    assert data["window"] == DAY
    assert by_name["run_success"]["value"] == 0.5 and by_name["run_success"]["status"] == "met"
    assert by_name["policy_enforcement"]["numerator"] == 2
    # Recovered after 1 h, the target is 30 m: missed, so the command exits 1.
    assert by_name["ttr_p95"]["value"] == pytest.approx(HOUR, abs=1)
    assert by_name["ttr_p95"]["status"] == "missed"
    assert out.returncode == 1

    wide = json.loads(vigil("slo", "--window", "7d", "--format", "json", cwd=ws).stdout)
    assert wide["indicators"][0]["denominator"] == 3

    text = vigil("slo", "--window", "7d", cwd=ws)
    assert "Run success rate" in text.stdout and "missed" in text.stdout

    bad = vigil("slo", "--window", "soon", cwd=ws)
    assert bad.returncode == 2 and "VIGIL-USAGE" in bad.stderr and "Traceback" not in bad.stderr
    (ws / "vigil.toml").write_text("[slo]\nsuccess = 2\n")
    wrong = vigil("slo", cwd=ws)
    assert wrong.returncode == 2 and "VIGIL-CONFIG" in wrong.stderr


@pytest.mark.slow
def test_a_brand_new_project_meets_its_slo(tmp_path: Path) -> None:
    """Commits and run ends are audited but are not privileged decisions: a fresh project
    that ran one plan has nothing to enforce, and `vigil slo` passes."""
    ws = tmp_path / "fresh"
    ws.mkdir()
    assert vigil("init", cwd=ws).returncode == 0
    plan = {
        "name": "fresh",
        "project": "fresh",
        "phases": [{"id": "p", "tasks": [{"id": "write", "run": "echo hi > hello.txt"}]}],
    }
    (ws / "fresh.yaml").write_text(json.dumps(plan))
    ran = vigil("run", "fresh.yaml", cwd=ws)
    assert ran.returncode == 0, ran.stderr
    entries = read_entries(audit_path(ws / ".vigil"))
    assert any(e.get("action") == "changeset.commit" for e in entries), "nothing was audited"
    out = vigil("slo", "--format", "json", cwd=ws)
    by_name = {i["name"]: i for i in json.loads(out.stdout)["indicators"]}
    assert by_name["policy_enforcement"]["status"] == "n/a"
    assert by_name["policy_enforcement"]["denominator"] == 0
    assert out.returncode == 0, out.stdout
