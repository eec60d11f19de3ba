"""Errors by type: the scheduler acts on an attempt's error category (a field), never on
the text of its reason; a store outage during an authority check is transient, not a halt."""

from __future__ import annotations

from pathlib import Path

import pytest

from enginetools import one_phase
from vigil.config import load_config
from vigil.engine import events as ev
from vigil.engine.audit import Auditor
from vigil.engine.authority import Authority
from vigil.engine.decide import decide
from vigil.engine.state import RunState
from vigil.errors import Category, category_of
from vigil.store import open_store


def failed_once(category: str | None, code: str | None, reason: str) -> RunState:
    plan = one_phase(
        {"id": "t", "run": "x", "retry": {"attempts": 3, "initial": 0}},
        {"id": "after", "run": "x", "needs": ["t"]},
    )
    state = RunState("r", plan)
    state.apply(ev.Event(*ev.attempt_started("t", 1, "main"), 0.0, 1))
    finished = ev.attempt_finished(
        "t", 1, ev.FAILED, exit_code=None, reason=reason, code=code, category=category
    )
    state.apply(ev.Event(*finished, 1.0, 2))
    return state


@pytest.mark.parametrize(
    ("category", "code", "retried"),
    [
        ("transient", "VIGIL-STORE", True),
        ("internal", "VIGIL-INTERNAL", True),
        (None, None, True),
        ("refused", "VIGIL-GRANT-EXPIRED", False),
        ("permanent", "VIGIL-BUDGET-EXCEEDED", False),
    ],
)
def test_decide_acts_on_the_category_field(
    category: str | None, code: str | None, retried: bool
) -> None:
    state = failed_once(category, code, reason="whatever the text says")
    d = decide(state, 2.0, 4)
    if retried:
        assert [s.task for s in d.starts] == ["t"]
    else:
        assert d.events[0][0] == ev.TASK_FINISHED and d.events[0][1]["state"] == "failed"
        assert (ev.TASK_SKIPPED, "after") in [(k, e["task"]) for k, e in d.events]


def test_a_reason_that_looks_like_a_refusal_is_not_one() -> None:
    # The old scheduler matched code prefixes in text; a step's own output could fake one.
    state = failed_once(None, None, reason="VIGIL-HALTED: printed by the step itself")
    assert [s.task for s in decide(state, 2.0, 4).starts] == ["t"]


def test_store_outage_during_an_authority_check_is_transient_not_a_halt(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_DATABASE_URL", store_url)
    config = load_config(tmp_path)
    store = open_store(store_url)
    plan = one_phase({"id": "ship", "run": "true", "requires": ["deploy"]})
    task = plan.task("ship")
    authority = Authority(config, store, plan, "r", grant_id=None, auditor=Auditor(config))
    assert authority.privileged(task)
    store.close()  # the store is gone while the run goes on
    decision = authority.authorize(task)
    assert not decision.allowed
    assert decision.code == "VIGIL-STORE"
    assert category_of(decision.code) is Category.TRANSIENT
