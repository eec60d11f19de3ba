"""Property tests of the pure core: arbitrary plans, arbitrary attempt outcomes.

A simulated driver feeds ``decide`` with random outcomes and a fake clock and checks the
invariants users rely on after every step.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from vigil.engine import events as ev
from vigil.engine.backoff import retry_delay, unit_jitter
from vigil.engine.decide import blocked_by_failed_checks, decide, final_state
from vigil.engine.state import FREE_INTERRUPTIONS, TERMINAL, RunState
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
                "run": "true",
                "needs": needs,
                "on_failure": draw(hs.sampled_from(["stop", "continue"])),
            }
            if draw(hs.booleans()):
                task["retry"] = {
                    "attempts": draw(hs.integers(1, 4)),
                    "initial": draw(hs.sampled_from([0, 0.5, 2])),
                    "on": draw(hs.sampled_from(["all", ["timeout"], [1], ["failure"]])),
                }
            if draw(hs.booleans()):
                task["fallback"] = "true"
            tasks.append(task)
            in_phase.append(tid)
        phase: dict[str, Any] = {"id": f"p{p}", "tasks": tasks}
        if draw(hs.booleans()):
            phase["validate"] = ["true"]
        phases.append(phase)
        earlier += in_phase
    return Plan.model_validate({"name": "prop", "project": "prop", "phases": phases})


OUTCOMES = [ev.SUCCEEDED, ev.FAILED, ev.TIMED_OUT, ev.INTERRUPTED]


def simulate(plan: Plan, seed: int, capacity: int) -> tuple[RunState, list[ev.Event]]:
    rng = random.Random(seed)
    state = RunState("run-prop", plan)
    journal: list[ev.Event] = []
    clock = 1000.0
    running: list[tuple[str, int]] = []
    seq = 0

    def commit(batch: list[tuple[str, dict[str, Any]]]) -> None:
        nonlocal seq
        for kind, data in batch:
            seq += 1
            e = ev.Event(kind, data, clock, seq)
            check_before_apply(state, e, capacity)
            state.apply(e)
            journal.append(e)

    for _step in range(2000):
        d = decide(state, clock, capacity)
        if d.events:
            commit(d.events)
            continue
        if d.done:
            break
        commit([ev.attempt_started(s.task, s.attempt, s.command) for s in d.starts])
        running += [(s.task, s.attempt) for s in d.starts]
        for c in d.checks:
            commit([(ev.PHASE_CHECK_STARTED, {"phase": c.phase})])
            if rng.random() < 0.8:
                commit([(ev.PHASE_FINISHED, {"phase": c.phase, "passed": True})])
            else:
                commit(blocked_by_failed_checks(state, c.phase, "check failed"))
        if running:
            rng.shuffle(running)
            task, attempt = running.pop()
            outcome = rng.choice(OUTCOMES)
            code = 0 if outcome == ev.SUCCEEDED else (1 if outcome == ev.FAILED else None)
            clock += rng.random()
            commit([ev.attempt_finished(task, attempt, outcome, exit_code=code)])
        elif not d.starts and not d.checks:
            assert d.wake_at is not None, "stuck: nothing running, nothing to wait for"
            clock = max(clock, d.wake_at)
    else:
        raise AssertionError("run did not finish")
    return state, journal


def check_before_apply(state: RunState, e: ev.Event, capacity: int) -> None:
    if e.kind == ev.ATTEMPT_STARTED:
        ts = state.tasks[e.data["task"]]
        assert ts.state not in TERMINAL, "a settled task started again"
        assert ts.running is None, "two attempts of one task at once"
        for need in ts.task.needs:
            assert state.tasks[need].state == "succeeded", f"{ts.task.id} started before {need}"
        for earlier in state.phases[: ts.phase_index]:
            assert earlier.state == "passed", "a task started before its phase opened"
        assert len(state.running) < capacity, "more attempts than capacity"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), seed=hs.integers(0, 10_000), capacity=hs.integers(1, 4))
def test_invariants_hold_for_any_plan_and_outcomes(plan: Plan, seed: int, capacity: int) -> None:
    state, journal = simulate(plan, seed, capacity)
    assert state.finished is not None
    # Replaying the journal from scratch gives the same state.
    again = RunState.replay("run-prop", plan, journal)
    assert again.task_states() == state.task_states()
    assert again.finished == state.finished
    for ts in state.tasks.values():
        assert ts.state in TERMINAL
        policy = plan.retry_for(ts.task)
        budget = policy.attempts + (1 if ts.task.fallback else 0) + FREE_INTERRUPTIONS * 2 + 1
        assert len(ts.attempts) <= budget
        if ts.state == "skipped":
            # Skipped only because something it depends on (task or phase) did not succeed.
            blocker = ts.blocked_by
            assert blocker is not None
            if blocker.startswith("phase:"):
                assert state.phases[state._phase_index(blocker[6:])].state == "failed"
            else:
                assert state.tasks[blocker].state in ("failed", "skipped")
        if ts.state == "succeeded":
            assert ts.attempts[-1].state == ev.SUCCEEDED
            assert ts.degraded == (ts.attempts[-1].command == "fallback")
    # One blocker blocks only its dependents: a task whose needs all succeeded and whose
    # phase opened was never skipped.
    for ts in state.tasks.values():
        needs_ok = all(state.tasks[n].state == "succeeded" for n in ts.task.needs)
        phase_opened = all(p.state == "passed" for p in state.phases[: ts.phase_index])
        if needs_ok and phase_opened:
            assert ts.state != "skipped", ts.task.id
    critical_bad = any(
        ts.state in ("failed", "skipped") and ts.task.on_failure == "stop"
        for ts in state.tasks.values()
    ) or any(p.state == "failed" for p in state.phases)
    assert (final_state(state) == "failed") == critical_bad


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
