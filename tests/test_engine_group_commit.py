"""Group commit: a loop pass journals every result that arrived and every start it
enables in one transaction (one signed batch), on both stores.

What must hold whatever the machine's speed: a start is never journalled apart from the
result that made it possible (each start is durable before its effect, and needs no
transaction of its own), and a run never takes more transactions than it has tasks, plus
the fixed ones (created, driver started, run finished).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from enginetools import Harness, one_phase
from vigil.engine import events as ev
from vigil.engine.attest import SIGNATURE


@pytest.fixture
def hb(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("VIGIL_DATABASE_URL", store_url)
    monkeypatch.setenv("VIGIL_ISOLATION", "off")
    harness = Harness(tmp_path / "workspace", store_url)
    yield harness
    harness.store.close()


def batches(journal: list[ev.Event]) -> list[list[ev.Event]]:
    """The journal cut into the transactions that wrote it (each ends with a signature)."""
    out: list[list[ev.Event]] = [[]]
    for event in journal:
        out[-1].append(event)
        if SIGNATURE in event.data:
            out.append([])
    assert out[-1] == [], "every batch ends with its signature"
    return out[:-1]


def test_each_hop_of_a_chain_is_one_transaction(hb: Harness) -> None:
    n = 12
    tasks = [
        {"id": f"t{i}", "run": "true", **({"needs": [f"t{i - 1}"]} if i else {})} for i in range(n)
    ]
    outcome = hb.run(one_phase(*tasks), max_parallel=2)
    assert outcome.state == "succeeded"
    cut = batches(hb.journal(outcome.run_id))
    where = {
        (e.kind, e.data.get("task")): i
        for i, batch in enumerate(cut)
        for e in batch
        if "task" in e.data
    }
    for i in range(1, n):
        # The pass that settled t(i-1) also started t(i), in the same transaction.
        assert where[(ev.ATTEMPT_STARTED, f"t{i}")] == where[(ev.TASK_FINISHED, f"t{i - 1}")]
    # One transaction a hop, and the fixed ones: nothing journalled on its own.
    assert len(cut) <= n + 3, [[e.kind for e in b] for b in cut]


def test_independent_tasks_never_take_more_transactions_than_tasks(hb: Harness) -> None:
    n = 30
    outcome = hb.run(one_phase(*({"id": f"t{i}", "run": "true"} for i in range(n))), max_parallel=2)
    assert outcome.state == "succeeded"
    cut = batches(hb.journal(outcome.run_id))
    starts = [[e for e in b if e.kind == ev.ATTEMPT_STARTED] for b in cut]
    assert sum(len(s) for s in starts) == n
    # Each start after the first pass rides with the result that freed its slot.
    first = next(i for i, started in enumerate(starts) if started)
    assert len(starts[first]) == 2  # the first pass fills both slots in one transaction
    for batch, started in zip(cut[first + 1 :], starts[first + 1 :], strict=True):
        if started:
            assert any(e.kind == ev.ATTEMPT_FINISHED for e in batch), [e.kind for e in batch]
    assert len(cut) <= n + 3, [[e.kind for e in b] for b in cut]
