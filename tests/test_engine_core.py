"""Property tests of the pure core: arbitrary plans, arbitrary attempt outcomes.

A simulated driver feeds ``decide`` with random outcomes and a fake clock and checks the
invariants users rely on after every step.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from journaltools import payload_problems
from vigil.engine import events as ev
from vigil.engine.backoff import retry_delay, unit_jitter
from vigil.engine.decide import blocked_by_failed_checks, decide, final_state
from vigil.engine.options import RunOptions
from vigil.engine.state import FREE_INTERRUPTIONS, TERMINAL, RunState
from vigil.plan.matrix import expand_plan
from vigil.plan.models import Plan, RetryPolicy


@hs.composite
def plans(draw: Any) -> Plan:
    n_phases = draw(hs.integers(1, 3))
    phases = []
    earlier: list[str] = []
    counter = 0
    for p in range(n_phases):
        tasks = []
        in_phase: list[str] = []
        for _ in range(draw(hs.integers(1, 6))):
            counter += 1
            tid = f"t{counter}"
            pool = earlier + in_phase
            needs = draw(hs.lists(hs.sampled_from(pool), max_size=3, unique=True)) if pool else []
            task: dict[str, Any] = {
                "id": tid,
                "needs": needs,
                "on_failure": draw(hs.sampled_from(["stop", "continue"])),
            }
            if draw(hs.integers(0, 5)) == 0:
                task["approval"] = {"question": "go on?"}
            else:
                task["run"] = "true"
                if draw(hs.booleans()):
                    task["retry"] = {
                        "attempts": draw(hs.integers(1, 4)),
                        "initial": draw(hs.sampled_from([0, 0.5, 2])),
                        "on": draw(hs.sampled_from(["all", ["timeout"], [1], ["failure"]])),
                    }
                if draw(hs.booleans()):
                    task["fallback"] = "true"
                if draw(hs.integers(0, 3)) == 0:
                    task["escalate"] = {
                        "on_failure": "defer",
                        "on_security_concern": draw(hs.sampled_from(["defer", "stop"])),
                    }
                if draw(hs.integers(0, 3)) == 0:
                    task["review"] = "required"
                if draw(hs.integers(0, 2)) == 0:
                    task["matrix"] = {
                        "k": list(range(draw(hs.integers(1, 5)))),
                        "fail_fast": draw(hs.booleans()),
                    }
                    if draw(hs.booleans()):
                        task["matrix"]["max_parallel"] = draw(hs.integers(1, 2))
            tasks.append(task)
            in_phase.append(tid)
        phase: dict[str, Any] = {"id": f"p{p}", "tasks": tasks}
        if draw(hs.booleans()):
            phase["validate"] = ["true"]
        phases.append(phase)
        earlier += in_phase
    # Expanded as the loader does: the engine sees each expansion as a task of its own.
    return expand_plan(Plan.model_validate({"name": "prop", "project": "prop", "phases": phases}))


OUTCOMES = [ev.SUCCEEDED, ev.SUCCEEDED, ev.FAILED, ev.TIMED_OUT, ev.INTERRUPTED, "refused"]
CHANGESET = {"id": "cs", "entries": [{"path": "f", "kind": "modified"}]}


class Model:
    """A simulated driver and its people: random outcomes, commits, answers and cancels,
    with the invariants checked before every event is applied."""

    def __init__(self, plan: Plan, seed: int, capacity: int, review_all: bool) -> None:
        self.rng = random.Random(seed)
        self.plan = plan
        self.capacity = capacity
        self.options = RunOptions(review=review_all)
        self.state = RunState("run-prop", plan, self.options)
        self.journal: list[ev.Event] = []
        self.clock = 1000.0
        self.seq = 0
        self.running: list[tuple[str, int]] = []
        self.commits: list[tuple[str, int]] = []
        self.committing_events: Counter[tuple[str, int]] = Counter()
        self.committed_events: Counter[tuple[str, int]] = Counter()
        self.cancel_at = self.rng.choice([None, None, self.rng.randint(1, 60)])

    def commit(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, data in batch:
            self.seq += 1
            e = ev.Event(kind, data, self.clock, self.seq)
            self.check_before_apply(e)
            self.state.apply(e)
            self.journal.append(e)

    def check_before_apply(self, e: ev.Event) -> None:
        state = self.state
        if e.kind == ev.ATTEMPT_STARTED:
            ts = state.tasks[e.data["task"]]
            assert ts.state not in TERMINAL, "a settled task started again"
            assert ts.running is None, "two attempts of one task at once"
            assert ts.task.approval is None, "an approval ran as an attempt"
            assert not state.committing, "an attempt started while a commit was landing"
            assert not state.cancel_requested, "an attempt started after the cancel"
            for need in ts.task.needs:
                assert state.tasks[need].state == "succeeded", f"{ts.task.id} before {need}"
            for earlier in state.phases[: ts.phase_index]:
                assert earlier.state == "passed", "a task started before its phase opened"
            assert len(state.running) < self.capacity, "more attempts than capacity"
            expansion = ts.task.expansion
            if expansion is not None and expansion.max_parallel is not None:
                siblings = state.plan.groups[expansion.group]
                in_group = sum(1 for t in state.running if t in siblings)
                assert in_group < expansion.max_parallel, "a matrix ran beyond max_parallel"
        elif e.kind == ev.CHANGESET_COMMITTING:
            key = (e.data["task"], e.data["attempt"])
            self.committing_events[key] += 1
            assert self.committing_events[key] == 1, f"changeset {key} committed twice"
            ts = state.tasks[key[0]]
            assert ts.attempts[-1].number == key[1] and ts.attempts[-1].state == ev.SUCCEEDED
            assert not (state.needs_review(ts) and ts.review != "approve"), "unreviewed commit"
        elif e.kind == ev.CHANGESET_COMMITTED:
            key = (e.data["task"], e.data["attempt"])
            self.committed_events[key] += 1
            assert self.committed_events[key] == 1
        elif e.kind == ev.TASK_FINISHED and e.data["state"] == "succeeded":
            ts = state.tasks[e.data["task"]]
            last = ts.attempts[-1] if ts.attempts else None
            if last is not None and last.changeset is not None:
                assert last.committed, "a task succeeded before its changes landed"

    def step(self, step: int) -> bool:
        """One round; False once the run has finished."""
        rng, state = self.rng, self.state
        if step == self.cancel_at and state.finished is None:
            self.commit([(ev.CANCEL_REQUESTED, {"reason": "cancelled by test"})])
            # The driver stops every running attempt: each ends as cancelled.
            for task, attempt in self.running:
                self.commit([ev.attempt_finished(task, attempt, ev.CANCELLED)])
            self.running = []
        d = decide(state, self.clock, self.capacity)
        for kind, data in d.events:
            assert payload_problems(kind, data) == [], "an event not of its kind's shape"
        if d.events:
            self.commit(d.events)
            self.commits += [(c.task, c.attempt) for c in d.commits]
            return True
        assert not d.commits, "a commit was handed out without its changeset.committing"
        if d.done:
            return False
        self.commit([ev.attempt_started(s.task, s.attempt, s.command) for s in d.starts])
        self.running += [(s.task, s.attempt) for s in d.starts]
        for c in d.checks:
            self.commit([(ev.PHASE_CHECK_STARTED, {"phase": c.phase})])
            if rng.random() < 0.8:
                self.commit([(ev.PHASE_FINISHED, {"phase": c.phase, "passed": True})])
            else:
                self.commit(blocked_by_failed_checks(state, c.phase, "check failed"))
        acted = self.answer_someone()
        if self.commits and rng.random() < 0.7:
            task, attempt = self.commits.pop(rng.randrange(len(self.commits)))
            if rng.random() < 0.8:
                self.commit([ev.changeset_committed(task, attempt)])
            else:
                self.commit(
                    [
                        ev.changeset_failed(
                            task, attempt, code="VIGIL-CONFLICT", category="transient", reason="x"
                        )
                    ]
                )
            acted = True
        if self.running and (rng.random() < 0.8 or not acted):
            rng.shuffle(self.running)
            task, attempt = self.running.pop()
            self.clock += rng.random()
            self.commit([self.outcome(task, attempt)])
            acted = True
        if not (acted or d.starts or d.checks or d.waiting or self.commits):
            assert d.wake_at is not None, "stuck: nothing running, nothing to wait for"
            self.clock = max(self.clock, d.wake_at)
        return True

    def outcome(self, task: str, attempt: int) -> tuple[str, dict[str, Any]]:
        outcome = self.rng.choice(OUTCOMES)
        if outcome == "refused":
            return ev.attempt_finished(
                task,
                attempt,
                ev.FAILED,
                reason="VIGIL-GRANT-EXPIRED: expired",
                code="VIGIL-GRANT-EXPIRED",
                category="refused",
            )
        code = 0 if outcome == ev.SUCCEEDED else (1 if outcome == ev.FAILED else None)
        extra = (
            {"changeset": CHANGESET}
            if outcome == ev.SUCCEEDED and self.rng.random() < 0.5
            else None
        )
        return ev.attempt_finished(task, attempt, outcome, exit_code=code, extra=extra)

    def answer_someone(self) -> bool:
        """A person answers one open question or reviews one held changeset, sometimes."""
        waiting = list(self.state.waiting)
        if not waiting or self.rng.random() < 0.3:
            return False
        ts = self.state.tasks[self.rng.choice(waiting)]
        approve = self.rng.random() < 0.7
        if ts.escalation is not None:
            decision = "approve" if approve else "reject"
            self.commit(
                [
                    (
                        ev.ESCALATION_ANSWERED,
                        {"id": ts.escalation["id"], "task": ts.task.id, "decision": decision},
                    )
                ]
            )
        else:
            self.commit([(ev.REVIEW_DECIDED, {"task": ts.task.id, "approve": approve})])
        return True


def snapshot(state: RunState) -> Any:
    """Everything a user or the scheduler can see of a state."""
    return (
        state.task_states(),
        {
            tid: [(a.number, a.state, a.committing, a.committed) for a in ts.attempts]
            for tid, ts in state.tasks.items()
        },
        {tid: (ts.review, ts.reason, ts.blocked_by) for tid, ts in state.tasks.items()},
        dict(state.committing),
        [(p.state, p.open_tasks) for p in state.phases],
        sorted(state.waiting),
        state.cancel_requested,
        state.finished,
    )


def simulate(
    plan: Plan, seed: int, capacity: int, review_all: bool = False
) -> tuple[RunState, list[ev.Event]]:
    model = Model(plan, seed, capacity, review_all)
    for step in range(4000):
        if not model.step(step):
            break
        if model.rng.random() < 0.05:
            # Replay equals live state at any point, not only at the end.
            again = RunState.replay("run-prop", plan, model.journal, model.options)
            assert snapshot(again) == snapshot(model.state)
    else:
        raise AssertionError("run did not finish")
    return model.state, model.journal


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=plans(),
    seed=hs.integers(0, 10_000),
    capacity=hs.integers(1, 4),
    review_all=hs.booleans(),
)
def test_invariants_hold_for_any_plan_and_outcomes(
    plan: Plan, seed: int, capacity: int, review_all: bool
) -> None:
    state, journal = simulate(plan, seed, capacity, review_all)
    assert state.finished is not None
    assert not state.committing, "the run ended with a commit in flight"
    # Replaying the journal from scratch gives the same state.
    again = RunState.replay("run-prop", plan, journal, RunOptions(review=review_all))
    assert snapshot(again) == snapshot(state)
    # Exactly one commit per changeset: every committed attempt was committing once.
    committing = Counter(
        (e.data["task"], e.data["attempt"]) for e in journal if e.kind == ev.CHANGESET_COMMITTING
    )
    committed = Counter(
        (e.data["task"], e.data["attempt"]) for e in journal if e.kind == ev.CHANGESET_COMMITTED
    )
    assert all(n == 1 for n in committing.values())
    assert all(n == 1 and committing[k] == 1 for k, n in committed.items())
    cancelled = state.cancel_requested
    for ts in state.tasks.values():
        assert ts.state in TERMINAL
        if ts.state == "skipped":
            # Skipped only because something it depends on (task or phase) did not succeed.
            blocker = ts.blocked_by
            assert blocker is not None
            if blocker.startswith("phase:"):
                assert state.phases[state._phase_index(blocker[6:])].state == "failed"
            else:
                assert state.tasks[blocker].state in ("failed", "skipped", "cancelled")
            if ts.reason.startswith("fail_fast:"):
                # Skipped by a failed sibling of a fail_fast matrix, before it started.
                expansion = ts.task.expansion
                assert expansion is not None and expansion.fail_fast
                assert blocker in state.plan.groups[expansion.group]
                assert state.tasks[blocker].state == "failed" and not ts.attempts
        if ts.state == "succeeded" and ts.task.approval is None:
            assert ts.attempts[-1].state == ev.SUCCEEDED
            assert ts.degraded == (ts.attempts[-1].command == "fallback")
            if ts.attempts[-1].changeset is not None:
                assert ts.attempts[-1].committed
        if ts.state == "cancelled":
            assert cancelled
    # One blocker blocks only its dependents: a task whose needs all succeeded and whose
    # phase opened was never skipped.
    for ts in state.tasks.values():
        needs_ok = all(state.tasks[n].state == "succeeded" for n in ts.task.needs)
        phase_opened = all(p.state == "passed" for p in state.phases[: ts.phase_index])
        if needs_ok and phase_opened and not ts.reason.startswith("fail_fast:"):
            assert ts.state != "skipped", ts.task.id
    if cancelled:
        assert final_state(state) == "cancelled"
        return
    critical_bad = any(
        ts.state in ("failed", "skipped") and ts.task.on_failure == "stop"
        for ts in state.tasks.values()
    ) or any(p.state == "failed" for p in state.phases)
    assert (final_state(state) == "failed") == critical_bad


def test_a_commit_is_handed_out_once_even_beside_other_events() -> None:
    """The defect seen in the field: a commit decided together with another task's
    settlement came back on the next decision and was started a second time."""
    plan = Plan.model_validate(
        {
            "name": "p",
            "project": "p",
            "phases": [
                {
                    "id": "a",
                    "tasks": [
                        {"id": "writer", "run": "x"},
                        {"id": "other", "run": "x"},
                        {"id": "after", "run": "x", "needs": ["writer"]},
                    ],
                }
            ],
        }
    )
    state = RunState("r", plan)
    for tid in ("writer", "other"):
        state.apply(ev.Event(*ev.attempt_started(tid, 1, "main"), 0.0, 0))
    state.apply(
        ev.Event(*ev.attempt_finished("writer", 1, ev.SUCCEEDED, extra={"changeset": CHANGESET}))
    )
    state.apply(ev.Event(*ev.attempt_finished("other", 1, ev.SUCCEEDED)))
    handed_out = []
    for _ in range(5):
        d = decide(state, 1.0, 4)
        handed_out += d.commits
        assert not d.starts, "an attempt started while a commit was landing"
        for kind, data in d.events:
            state.apply(ev.Event(kind, data, 1.0, 0))
        if not d.events:
            break
    assert [(c.task, c.attempt) for c in handed_out] == [("writer", 1)]
    assert state.committing == {"writer": 1}
    state.apply(ev.Event(*ev.changeset_committed("writer", 1), 2.0, 0))
    d = decide(state, 2.0, 4)
    for kind, data in d.events:
        state.apply(ev.Event(kind, data, 2.0, 0))
    d = decide(state, 2.0, 4)
    assert [s.task for s in d.starts] == ["after"]


@given(
    initial=hs.floats(0, 100),
    factor=hs.floats(1, 10),
    cap=hs.floats(0, 1000),
    jitter=hs.floats(0, 1),
    n=hs.integers(1, 30),
)
def test_backoff_is_bounded_and_grows_before_the_cap(
    initial: float, factor: float, cap: float, jitter: float, n: int
) -> None:
    policy = RetryPolicy(attempts=50, initial=initial, factor=factor, max=cap, jitter=jitter)
    d = retry_delay(policy, n, "r", "t")
    assert 0 <= d <= cap * (1 + jitter) + 1e-9
    no_jitter = RetryPolicy(attempts=50, initial=initial, factor=factor, max=cap, jitter=0)
    assert retry_delay(no_jitter, n, "r", "t") <= retry_delay(no_jitter, n + 1, "r", "t")


@given(hs.text(), hs.integers())
def test_jitter_is_deterministic_and_in_range(key: str, n: int) -> None:
    assert unit_jitter(key, n) == unit_jitter(key, n)
    assert -1.0 <= unit_jitter(key, n) <= 1.0


def test_interrupted_attempt_is_retried_without_consuming_the_budget() -> None:
    plan = Plan.model_validate(
        {"name": "p", "project": "p", "phases": [{"id": "a", "tasks": [{"id": "t", "run": "x"}]}]}
    )
    state = RunState("r", plan)
    for n in range(1, FREE_INTERRUPTIONS + 1):
        state.apply(ev.Event(*ev.attempt_started("t", n, "main"), 0.0, 0))
        state.apply(ev.Event(*ev.attempt_finished("t", n, ev.INTERRUPTED), 1.0, 0))
        d = decide(state, 1.0, 4)
        assert [s.attempt for s in d.starts] == [n + 1], "interruption must retry at once"
    # Past the free allowance, an interruption counts like a failure: attempts=1 is spent.
    n = FREE_INTERRUPTIONS + 1
    state.apply(ev.Event(*ev.attempt_started("t", n, "main"), 0.0, 0))
    state.apply(ev.Event(*ev.attempt_finished("t", n, ev.INTERRUPTED), 1.0, 0))
    d = decide(state, 1.0, 4)
    assert d.events and d.events[0][1]["state"] == "failed"
