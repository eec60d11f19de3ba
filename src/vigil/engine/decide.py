"""What to do next: a pure function of the run's state and the clock.

``decide`` never performs an effect. It returns journal events that settle what is
already known (a task succeeded, a retry is spent, a branch is blocked, the run ended)
and the effects the driver should start (attempts, phase checks). The driver journals
the events, applies them, and asks again until nothing is left to settle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from vigil.engine import events as ev
from vigil.engine import state as st
from vigil.engine.backoff import retry_delay
from vigil.engine.conditions import phase_condition, phase_waits_for_all, task_condition
from vigil.errors import Category
from vigil.plan.expressions import ExpressionFailed
from vigil.words import plural

Journal = list[ev.Entry]


@dataclass(frozen=True)
class StartAttempt:
    """Run attempt ``attempt`` of ``task`` with its ``main`` or ``fallback`` command."""

    task: str
    attempt: int
    command: str


@dataclass(frozen=True)
class RunPhaseChecks:
    """Run the completion checks of ``phase``."""

    phase: str


@dataclass(frozen=True)
class CommitChangeset:
    """Apply the changeset of ``task``'s attempt ``attempt`` to the workspace."""

    task: str
    attempt: int


@dataclass
class Decision:
    """The outcome of one call of :func:`decide`."""

    events: Journal = field(default_factory=list)
    starts: list[StartAttempt] = field(default_factory=list)
    checks: list[RunPhaseChecks] = field(default_factory=list)
    # Each commit's ``changeset.committing`` is in ``events``: start a commit only after
    # those events are journalled, and never start one that is not listed here.
    commits: list[CommitChangeset] = field(default_factory=list)
    wake_at: float | None = None
    done: bool = False
    waiting: bool = False


def decide(state: st.RunState, now: float, capacity: int) -> Decision:
    """Settle what the journal already implies; otherwise, say what to start.

    ``capacity`` is how many attempts may run at once; attempts already running count.
    """
    d = Decision()
    if state.finished is not None:
        d.done = True
        return d
    retries: list[StartAttempt] = []
    _expire_questions(state, now, d)
    for task_id in list(state.unsettled):
        ts = state.tasks[task_id]
        if ts.task.approval is not None:
            _settle_approval(ts, d, state)
            continue
        if ts.answer is not None and not _approved_answer(ts.answer) and ts.attempts:
            who = ts.answer.get("by") or "a person"
            d.events.append(
                ev.task_finished(
                    task_id, st.FAILED, f"{who} chose to give up: {ts.attempts[-1].reason}"
                )
            )
            _skip_dependents(state, task_id, d)
            continue
        if state.cancel_requested:
            if ts.attempts[-1].state == ev.SUCCEEDED:
                _settle_attempt(state, ts, now, d, retries)
            continue
        _settle_attempt(state, ts, now, d, retries)
    if d.events:
        # Every commit in ``d.commits`` has its ``changeset.committing`` among these
        # events: once they are applied, the state says the commit is in flight and no
        # later decision hands it out again.
        return d
    if state.cancel_requested:
        _cancel(state, d)
        return d
    _check_conditions(state, d)
    if d.events:
        return d
    _fail_fast(state, d)
    if d.events:
        return d
    _advance_phase(state, d)
    if d.events or d.checks:
        return d
    if _all_settled(state):
        d.events.append(ev.run_finished(final_state(state)))
        return d
    # No attempt starts while a commit lands: every attempt sees each other task's
    # changes wholly applied or not at all.
    free = 0 if state.committing else capacity - len(state.running)
    fits = _GroupLimits(state)
    for start in retries:
        if len(d.starts) >= free:
            break
        if fits(start.task):
            d.starts.append(start)
    free -= len(d.starts)
    for task_id in list(state.ready_approvals):
        d.events.append(_open_question(state, state.tasks[task_id], "approval", {}))
    if d.events:
        d.starts = []
        return d
    for task_id in state.ready:
        if free <= 0:
            break
        if not fits(task_id):
            continue
        d.starts.append(StartAttempt(task_id, _next_number(state.tasks[task_id]), "main"))
        free -= 1
    if (
        not d.starts
        and d.wake_at is None
        and not state.running
        and state.waiting
        and not state.committing
    ):
        d.waiting = True
    return d


class _GroupLimits:
    """Whether one more expansion of a matrix may start under its ``max_parallel``,
    counting those running and those started in this decision."""

    def __init__(self, state: st.RunState) -> None:
        self.state = state
        self.counts: dict[str, int] = {}

    def __call__(self, task_id: str) -> bool:
        expansion = self.state.tasks[task_id].task.expansion
        if expansion is None or expansion.max_parallel is None:
            return True
        group = expansion.group
        if group not in self.counts:
            self.counts[group] = sum(
                1 for tid in self.state.running if tid in self.state.plan.groups[group]
            )
        if self.counts[group] >= expansion.max_parallel:
            return False
        self.counts[group] += 1
        return True


def _fail_fast(state: st.RunState, d: Decision) -> None:
    """In a matrix with ``fail_fast``, an expansion that failed (and stops the run) skips
    the expansions not started yet; those running finish. A skip is journalled with the
    failed expansion as its blocker, so it is evaluated once."""
    for group, members in state.plan.groups.items():
        first = state.tasks[members[0]].task
        if first.expansion is None or not first.expansion.fail_fast:
            continue
        failed = next(
            (
                m
                for m in members
                if state.tasks[m].state == st.FAILED and state.tasks[m].task.on_failure == "stop"
            ),
            None,
        )
        if failed is None:
            continue
        skipped: set[str] = set()
        for member in members:
            ts = state.tasks[member]
            if ts.state != st.PENDING or ts.attempts or ts.escalations:
                continue
            reason = f"fail_fast: {failed} of matrix {group} failed"
            d.events.append(ev.task_skipped(member, reason, blocked_by=failed))
            skipped.add(member)
        for member in sorted(skipped):
            # What an earlier call skipped is not skipped (nor walked through) again.
            already = {data["task"] for kind, data in d.events if kind == ev.TASK_SKIPPED}
            _skip_dependents(state, member, d, exclude=skipped | already)


def final_state(state: st.RunState) -> str:
    """The run's outcome once every task is settled."""
    if state.cancel_requested:
        return "cancelled"
    if any(p.state == st.PHASE_FAILED for p in state.phases):
        return "failed"
    for ts in state.tasks.values():
        # A dry run's task not run for want of a grant is listed, not failed: the dry
        # run's outcome says whether everything it could run succeeded.
        if ts.needs_grant is not None or ts.by_condition or ts.left_out:
            continue
        if ts.state in (st.FAILED, st.SKIPPED) and ts.task.on_failure == "stop":
            return "failed"
    return "succeeded"


def _next_number(ts: st.TaskState) -> int:
    return len(ts.attempts) + 1


def _settle_attempt(
    state: st.RunState, ts: st.TaskState, now: float, d: Decision, retries: list[StartAttempt]
) -> None:
    last = ts.attempts[-1]
    tid = ts.task.id
    if last.state == ev.SUCCEEDED:
        if last.changeset is not None and not last.committed and not state.dry_run:
            _settle_changes(state, ts, last, d)
            return
        degraded = last.command == "fallback"
        reason = "succeeded with its fallback command" if degraded else ""
        d.events.append(ev.task_finished(tid, st.SUCCEEDED, reason, degraded=degraded))
        return
    category = last.data.get("category")
    if category == Category.REFUSED:
        escalate_on = ts.task.escalate.on_security_concern if ts.task.escalate else "stop"
        if escalate_on == "defer" and ts.answer is None:
            d.events.append(_open_question(state, ts, "security", {"error": last.reason}))
            return
        if escalate_on == "defer" and ts.answer is not None and _approved_answer(ts.answer):
            retries.append(StartAttempt(tid, _next_number(ts), "main"))
            return
        d.events.append(ev.task_finished(tid, st.FAILED, last.reason))
        _skip_dependents(state, tid, d)
        return
    if category == Category.PERMANENT:
        d.events.append(ev.task_finished(tid, st.FAILED, last.reason))
        _skip_dependents(state, tid, d)
        return
    agent = ts.task.agent
    if agent is not None and last.command == "main" and last.data.get("validation_failed"):
        rounds = sum(1 for a in ts.attempts if a.data.get("validation_failed"))
        if rounds <= agent.max_fix_rounds:
            # A fix round: the same prompt plus what failed, at once, as a new attempt.
            retries.append(StartAttempt(tid, _next_number(ts), "main"))
            return
    policy = state.plan.retry_for(ts.task)
    failures = ts.counted_failures() - ts.extra_attempts
    if last.state == ev.INTERRUPTED and ts.interruption_is_free():
        # vigil itself was stopped mid-attempt: try again at once, same command.
        retries.append(StartAttempt(tid, _next_number(ts), last.command))
        return
    timed_out = last.state == ev.TIMED_OUT
    if (
        last.command == "main"
        and failures < policy.attempts
        and (
            last.state == ev.INTERRUPTED
            or policy.retries(exit_code=last.exit_code, timed_out=timed_out)
        )
    ):
        due = (last.ended_at or now) + retry_delay(policy, failures, state.run_id, tid)
        if due <= now:
            retries.append(StartAttempt(tid, _next_number(ts), "main"))
        else:
            d.wake_at = due if d.wake_at is None else min(d.wake_at, due)
        return
    if ts.task.fallback and not ts.used_fallback():
        retries.append(StartAttempt(tid, _next_number(ts), "fallback"))
        return
    reason = last.reason or f"attempt {last.number} {last.state.replace('_', ' ')}"
    escalate = ts.task.escalate
    if escalate is not None and escalate.on_failure == "defer" and ts.answer is None:
        context = {
            "error": reason,
            "attempts": [
                {"number": a.number, "state": a.state, "exit_code": a.exit_code, "reason": a.reason}
                for a in ts.attempts
            ],
        }
        d.events.append(_open_question(state, ts, "failure", context))
        return
    d.events.append(ev.task_finished(tid, st.FAILED, reason))
    _skip_dependents(state, tid, d)


def _settle_changes(
    state: st.RunState, ts: st.TaskState, last: st.AttemptState, d: Decision
) -> None:
    """A successful attempt's changes: hold them for review, commit them, or drop them."""
    tid = ts.task.id
    if last.committing:
        return  # the commit is in flight (or resumes after a crash; see the driver)
    if state.needs_review(ts) and ts.review is None and st.shows_changes(last):
        d.events.append(ev.changeset_held(tid, last.number))
        return
    if ts.review == "reject":
        why = "changes rejected in review" + (f": {ts.review_comment}" if ts.review_comment else "")
        d.events.append(ev.task_finished(tid, st.FAILED, why))
        _skip_dependents(state, tid, d)
        return
    d.commits.append(CommitChangeset(tid, last.number))
    d.events.append(ev.changeset_committing(tid, last.number))


def question_id(run_id: str, task_id: str, number: int) -> str:
    """The stable id of a task's ``number``-th escalation."""
    digest = hashlib.sha256(f"{run_id}/{task_id}/{number}".encode()).hexdigest()
    return f"esc-{digest[:10]}"


def _open_question(
    state: st.RunState, ts: st.TaskState, kind: str, context: dict[str, Any]
) -> tuple[ev.Kind, ev.EscalationOpened]:
    spec = ts.task.approval
    qid = question_id(state.run_id, ts.task.id, len(ts.escalations) + 1)
    if kind == "approval" and spec is not None:
        opened = ev.escalation_opened(qid, ts.task.id, kind, context, spec.question)
        data = opened[1]
        data["choices"] = list(spec.choices) if spec.choices else None
        data["timeout"] = spec.timeout
        data["on_timeout"] = spec.on_timeout
        data["default"] = spec.default
        return opened
    if kind == "security":
        question = (
            f"Task {ts.task.id} was refused: {context.get('error', '')}. Approve to try it "
            "again (after fixing the grant or halt), reject to give up."
        )
    else:
        question = (
            f"Task {ts.task.id} failed after {plural(len(ts.attempts), 'attempt')}: "
            f"{context.get('error', '')}. Approve to retry it, reject to give up."
        )
    return ev.escalation_opened(qid, ts.task.id, kind, context, question)


def _expire_questions(state: st.RunState, now: float, d: Decision) -> None:
    """Questions past their timeout resolve to what the plan says."""
    for task_id in state.waiting:
        ts = state.tasks[task_id]
        q = ts.escalation
        if q is None or q.get("timeout") is None:
            continue
        due = float(q["opened_at"]) + float(q["timeout"])
        if due <= now:
            d.events.append(
                ev.escalation_timed_out(
                    q["id"], task_id, q.get("on_timeout") or "reject", q.get("default")
                )
            )
        else:
            d.wake_at = due if d.wake_at is None else min(d.wake_at, due)


def _approved_answer(answer: dict[str, Any]) -> bool:
    # ``resolved`` counts only in an answer by timeout: a person's answer is its signed
    # decision, whatever else its event carries.
    decision = answer.get("decision")
    return decision in ("approve", "value") or (
        decision == "timeout" and answer.get("resolved") in ("approve", "default")
    )


def _settle_approval(ts: st.TaskState, d: Decision, state: st.RunState) -> None:
    answer = ts.answer or {}
    tid = ts.task.id
    who = answer.get("by") or "a person"
    if _approved_answer(answer):
        value = answer.get("value")
        if answer.get("decision") == "approve" and value is None:
            value = "approve"
        how = (
            "timed out; took its default"
            if answer.get("decision") == "timeout"
            else (f"approved by {who}")
        )
        d.events.append(ev.task_finished(tid, st.SUCCEEDED, how, output=value))
        return
    why = "timed out" if answer.get("decision") == "timeout" else f"rejected by {who}"
    comment = answer.get("comment")
    d.events.append(ev.task_finished(tid, st.FAILED, why + (f": {comment}" if comment else "")))
    _skip_dependents(state, tid, d)


def _skip_dependents(
    state: st.RunState,
    failed: str,
    d: Decision,
    *,
    condition: bool = False,
    exclude: set[str] | None = None,
) -> None:
    """Skip what needs ``failed``, and what needs those; a task whose ``if:`` runs it
    after failures (``failure()``, ``always()``) is not skipped: it waits for its needs
    to end, then its condition decides. ``condition``: ``failed`` was skipped by an
    ``if:``, which is no failure, and neither are these skips. ``exclude``: tasks being
    skipped already, in this same decision."""
    seen: set[str] = set(exclude or ())
    stack = list(state.dependents.get(failed, ()))
    while stack:
        dep = stack.pop()
        if dep in seen:
            continue
        seen.add(dep)
        if state.tasks[dep].state in st.TERMINAL or dep in state.unended:
            continue
        if condition:
            reason = f"needs {failed}, which was skipped"
            d.events.append(ev.task_skipped_by_condition(dep, reason, blocked_by=failed))
        else:
            reason = f"needs {failed}, which did not succeed"
            d.events.append(ev.task_skipped(dep, reason, blocked_by=failed))
        stack.extend(state.dependents.get(dep, ()))


def _check_conditions(state: st.RunState, d: Decision) -> None:
    """Skip the frontier phase if its ``if:`` is false, and each ready task whose ``if:``
    is false. A true condition journals nothing: evaluated again on the same journal
    (after a crash) it is true again, and the task starts as any other."""
    phase = state.frontier()
    if phase is not None and phase.state == st.PHASE_OPEN:
        spec = state.plan.phases[phase.index]
        untouched = all(
            not state.tasks[t.id].attempts and not state.tasks[t.id].escalations for t in spec.tasks
        )
        if spec.if_ is not None and untouched:
            try:
                holds = phase_condition(state, phase.index)
            except ExpressionFailed as exc:
                # Not a skip: a condition that cannot be evaluated is the plan's mistake.
                for task in spec.tasks:
                    if state.tasks[task.id].state not in st.TERMINAL:
                        d.events.append(
                            ev.task_finished(task.id, st.FAILED, f"phase if: {exc.cause}")
                        )
                        _skip_dependents(state, task.id, d)
                return
            why = f"its condition was false: if: {spec.if_}"
            if not holds:
                for task in spec.tasks:
                    if state.tasks[task.id].state not in st.TERMINAL:
                        d.events.append(ev.task_skipped_by_condition(task.id, f"phase {why}"))
                        _skip_dependents(state, task.id, d, condition=True)
                d.events.append(ev.phase_finished(phase.id, True, f"skipped: {why}"))
                return
    for task_id in list(state.ready_conditions):
        ts = state.tasks[task_id]
        try:
            holds = task_condition(state, ts.task)
        except ExpressionFailed as exc:
            d.events.append(ev.task_finished(task_id, st.FAILED, f"if: {exc.cause}"))
            _skip_dependents(state, task_id, d)
            continue
        if not holds:
            why = f"condition was false: if: {ts.task.if_}"
            d.events.append(ev.task_skipped_by_condition(task_id, why))
            _skip_dependents(state, task_id, d, condition=True)


def _advance_phase(state: st.RunState, d: Decision) -> None:
    phase = state.frontier()
    if phase is None or phase.state != st.PHASE_OPEN or phase.open_tasks > 0:
        return
    if phase.critical_failures:
        failed = ", ".join(phase.critical_failures)
        reason = f"critical task {failed} failed"
        d.events.append(ev.phase_finished(phase.id, False, reason))
        _block_later_phases(state, phase, d)
        return
    spec = state.plan.phases[phase.index]
    if all(state.tasks[t.id].left_out for t in spec.tasks):
        d.events.append(ev.phase_finished(phase.id, True, "left out: none of its tasks ran"))
        return
    if spec.checks:
        d.checks.append(RunPhaseChecks(phase.id))
        return
    d.events.append(ev.phase_finished(phase.id, True))


def _block_later_phases(state: st.RunState, phase: st.PhaseState, d: Decision) -> None:
    """A phase that did not complete blocks every later phase: the boundary is a checkpoint."""
    blocked: set[str] = set()
    for later in state.phases[phase.index + 1 :]:
        if later.state in (st.PHASE_PASSED, st.PHASE_FAILED) or phase_waits_for_all(
            state, later.index
        ):
            continue  # settled already, or its ``if:`` runs it after a failure
        for task in state.plan.phases[later.index].tasks:
            if state.tasks[task.id].state not in st.TERMINAL:
                d.events.append(ev.task_blocked_by_phase(task.id, phase.id))
                blocked.add(task.id)
        d.events.append(ev.phase_finished(later.id, False, f"blocked by phase {phase.id}"))
    # A phase whose ``if:`` runs it after a failure may need tasks just blocked: what
    # needs them is skipped as it would be after their failure.
    for task_id in sorted(blocked):
        _skip_dependents(state, task_id, d, exclude=blocked)


def blocked_by_failed_checks(state: st.RunState, phase_id: str, reason: str) -> Journal:
    """Events for a phase whose completion checks failed: it and every later phase fail."""
    d = Decision()
    phase = state.phases[state._phase_index(phase_id)]
    d.events.append(ev.phase_finished(phase_id, False, reason))
    _block_later_phases(state, phase, d)
    return d.events


def _all_settled(state: st.RunState) -> bool:
    return (
        not state.running
        and not state.unsettled
        and all(p.state in (st.PHASE_PASSED, st.PHASE_FAILED) for p in state.phases)
    )


def _cancel(state: st.RunState, d: Decision) -> None:
    if state.running or state.committing:
        return  # the driver stops attempts (they end as cancelled); a commit lands first
    for ts in state.tasks.values():
        if ts.state not in st.TERMINAL:
            d.events.append(ev.task_skipped(ts.task.id, state.cancel_reason, state=st.CANCELLED))
    for phase in state.phases:
        if phase.state not in (st.PHASE_PASSED, st.PHASE_FAILED):
            d.events.append(ev.phase_finished(phase.id, False, "cancelled"))
    d.events.append(ev.run_finished("cancelled"))
