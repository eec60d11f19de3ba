"""A run's state as a fold over its journal.

``RunState.apply(event)`` is the only way state changes, it does no I/O, and replaying the
same events always gives the same state. The state keeps a few indexes (unmet
dependencies, the ready queue, open tasks per phase) up to date as events arrive so that
deciding what to do next costs O(1) per task rather than a scan of the whole plan.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vigil.engine import events as ev
from vigil.engine.conditions import phase_waits_for_all, waits_for_all
from vigil.engine.options import RunOptions
from vigil.plan.models import Plan, Task

# Task states as users see them.
PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
CANCELLED = "cancelled"
WAITING = "waiting"
TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})

# Phase states.
PHASE_WAITING = "waiting"
PHASE_OPEN = "open"
PHASE_CHECKING = "checking"
PHASE_PASSED = "passed"
PHASE_FAILED = "failed"

# How many interrupted attempts (vigil itself killed) a task gets for free before
# interruptions count against its retry budget. Protects against a task that takes the
# host down with it from being retried forever.
FREE_INTERRUPTIONS = 3


@dataclass
class AttemptState:
    """One try of a task."""

    number: int
    command: str
    started_at: float
    state: str = RUNNING
    exit_code: int | None = None
    ended_at: float | None = None
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    changeset: dict[str, Any] | None = None
    committing: bool = False
    committed: bool = False


@dataclass
class TaskState:
    """Where one task stands."""

    task: Task
    phase: str
    phase_index: int
    state: str = PENDING
    attempts: list[AttemptState] = field(default_factory=list)
    degraded: bool = False
    reason: str = ""
    blocked_by: str | None = None
    ended_at: float | None = None
    review: str | None = None
    review_by: str = ""
    review_comment: str = ""
    escalation: dict[str, Any] | None = None
    escalations: list[dict[str, Any]] = field(default_factory=list)
    answer: dict[str, Any] | None = None
    extra_attempts: int = 0
    output: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    """What the task's succeeding attempt wrote to ``$VIGIL_OUTPUT`` (redacted)."""
    by_condition: bool = False
    """Skipped because an ``if:`` was false (its own, its phase's, or a need's): not a failure."""
    left_out: bool = False
    """Not run because the run was partial (``--only``, ``--skip``, ``--tags``...)."""
    # Dry runs only: the grant this task would need (environment, capabilities, code);
    # it was not run, and its dependents ran without its changes.
    needs_grant: dict[str, Any] | None = None

    @property
    def running(self) -> AttemptState | None:
        """The attempt in flight, if any."""
        if self.attempts and self.attempts[-1].state == RUNNING:
            return self.attempts[-1]
        return None

    def counted_failures(self) -> int:
        """Failures that consume the retry budget (interruptions are partly free)."""
        failed = sum(1 for a in self.attempts if a.state in (ev.FAILED, ev.TIMED_OUT))
        interrupted = sum(1 for a in self.attempts if a.state == ev.INTERRUPTED)
        return failed + max(0, interrupted - FREE_INTERRUPTIONS)

    def interruption_is_free(self) -> bool:
        """Whether the last attempt was interrupted and still within the free allowance."""
        interrupted = sum(1 for a in self.attempts if a.state == ev.INTERRUPTED)
        return self.attempts[-1].state == ev.INTERRUPTED and interrupted <= FREE_INTERRUPTIONS

    def used_fallback(self) -> bool:
        """Whether the fallback command has been tried."""
        return any(a.command == "fallback" for a in self.attempts)


@dataclass
class PhaseState:
    """Where one phase stands."""

    id: str
    index: int
    state: str = PHASE_WAITING
    open_tasks: int = 0
    critical_failures: list[str] = field(default_factory=list)
    reason: str = ""


def shows_changes(attempt: AttemptState) -> bool:
    """Whether the attempt's changeset holds a change a review shows: one that is not of
    an ignored path (new build output, caches, a fresh venv; see
    :mod:`vigil.workspace.ignore`). A changeset of ignored paths only is committed
    without being held: a review of it would show nothing."""
    entries = (attempt.changeset or {}).get("entries") or []
    return any(not entry.get("ignored") for entry in entries)


class RunState:
    """Everything the scheduler needs to know about a run, folded from its journal."""

    def __init__(self, run_id: str, plan: Plan, options: RunOptions | None = None) -> None:
        self.run_id = run_id
        self.plan = plan
        self.options = options or RunOptions()
        self.dry_run = self.options.dry_run
        self.review_all = self.options.review
        self.waiting: dict[str, None] = {}
        self.tasks: dict[str, TaskState] = {}
        self.phases: list[PhaseState] = []
        self.dependents: dict[str, list[str]] = {}
        self.unmet: dict[str, int] = {}
        self.ready: OrderedDict[str, None] = OrderedDict()
        # The ready tasks that need an approval first, kept beside ``ready`` so that
        # ``decide`` opens their questions without scanning every ready task.
        self.ready_approvals: dict[str, None] = {}
        # The ready tasks with an ``if:``: ``decide`` evaluates each before it starts.
        self.ready_conditions: dict[str, None] = {}
        # Tasks whose ``if:`` runs them after failures too (``failure()``, ``always()``):
        # the number of their needs not yet ended, however they end.
        self.unended: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.running: set[str] = set()
        self.unsettled: dict[str, None] = {}
        # Changesets journalled as committing and not yet committed or failed, by task:
        # while any is in flight no attempt starts (every attempt sees each other task's
        # changes wholly applied or not at all), and none is committed a second time.
        self.committing: dict[str, int] = {}
        self.cancel_requested = False
        self.cancel_reason = ""
        self.finished: str | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.last_seq = 0
        self.interruptions = 0
        for index, phase in enumerate(plan.phases):
            self.phases.append(PhaseState(phase.id, index, open_tasks=len(phase.tasks)))
            for task in phase.tasks:
                self.tasks[task.id] = TaskState(task, phase.id, index)
                self.dependents.setdefault(task.id, [])
        for tid, ts in self.tasks.items():
            self.unmet[tid] = len(ts.task.needs)
            if waits_for_all(ts.task):
                self.unended[tid] = len(ts.task.needs)
            for need in ts.task.needs:
                self.dependents.setdefault(need, []).append(tid)
        for tid, why in self.options.left_out.items():
            if tid not in self.tasks:
                continue
            # Decided when the run started and sealed with it: what needs a task left out
            # runs as if it had succeeded.
            out = self.tasks[tid]
            self._settle(out, SKIPPED, None)
            out.reason, out.left_out = why, True
            self._release_dependents(tid)
        if self.phases:
            self._open_phase(0)

    # ----------------------------------------------------------------- folding

    @classmethod
    def replay(
        cls,
        run_id: str,
        plan: Plan,
        journal: list[ev.Event],
        options: RunOptions | None = None,
    ) -> RunState:
        """The state after ``journal``, from scratch."""
        state = cls(run_id, plan, options)
        for event in journal:
            state.apply(event)
        return state

    def apply(self, event: ev.Event) -> None:
        """Advance the state by one journal event."""
        self.last_seq = max(self.last_seq, event.seq)
        handler = _HANDLERS.get(event.kind)
        if handler is not None:
            handler(self, event)

    def _on_driver_started(self, event: ev.Event) -> None:
        if self.started_at is None:
            self.started_at = event.at

    def _on_attempt_started(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.AttemptStarted)
        ts = self.tasks[data["task"]]
        ts.attempts.append(AttemptState(int(data["attempt"]), str(data["command"]), event.at))
        ts.state = RUNNING
        ts.answer = None
        self._unready(ts.task.id)
        self.retry_at.pop(ts.task.id, None)
        self.running.add(ts.task.id)
        self.unsettled.pop(ts.task.id, None)

    def _on_attempt_finished(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.AttemptFinished)
        ts = self.tasks[data["task"]]
        attempt = next((a for a in ts.attempts if a.number == data["attempt"]), None)
        if attempt is None or attempt.state != RUNNING:
            return
        attempt.state = str(data["outcome"])
        attempt.exit_code = data.get("exit_code")
        attempt.reason = str(data.get("reason") or "")
        attempt.ended_at = event.at
        attempt.data = {k: v for k, v in event.data.items() if k not in _ATTEMPT_KEYS}
        changeset = attempt.data.pop("changeset", None)
        if attempt.state == ev.SUCCEEDED and changeset and changeset.get("entries"):
            attempt.changeset = changeset
        else:
            attempt.committed = attempt.state == ev.SUCCEEDED
        if attempt.state == ev.INTERRUPTED:
            self.interruptions += 1
        self.running.discard(ts.task.id)
        self.unsettled[ts.task.id] = None
        ts.state = PENDING

    def _on_task_finished(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.TaskFinished)
        ts = self.tasks[data["task"]]
        if ts.state in TERMINAL:
            return
        self._settle(ts, str(data["state"]), event.at)
        ts.degraded = bool(data.get("degraded", False))
        ts.reason = str(data.get("reason") or "")
        output = data.get("output")
        if output is not None:
            ts.output = str(output)
        elif ts.attempts and "output" in ts.attempts[-1].data:
            ts.output = str(ts.attempts[-1].data["output"])
        outputs = ts.attempts[-1].data.get("outputs") if ts.attempts else None
        if ts.state == SUCCEEDED and isinstance(outputs, dict):
            ts.outputs = {str(k): str(v) for k, v in outputs.items()}
        if ts.state == SUCCEEDED:
            self._release_dependents(ts.task.id)
        elif ts.state == FAILED and ts.task.on_failure == "stop":
            self.phases[ts.phase_index].critical_failures.append(ts.task.id)

    def _on_task_skipped(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.TaskSkipped)
        ts = self.tasks[data["task"]]
        if ts.state in TERMINAL:
            return
        self._settle(ts, str(data.get("state", SKIPPED)), event.at)
        ts.reason = str(data.get("reason") or "")
        ts.blocked_by = data.get("blocked_by")
        ts.by_condition = bool(data.get("condition"))
        needs_grant = data.get("needs_grant")
        if needs_grant is not None:
            # Not run for want of a grant (dry runs only): what needs it still dry-runs.
            ts.needs_grant = dict(needs_grant)
            self._release_dependents(ts.task.id)

    def _on_phase_check_started(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.PhaseCheckStarted)
        self.phases[self._phase_index(data["phase"])].state = PHASE_CHECKING

    def _on_phase_finished(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.PhaseFinished)
        phase = self.phases[self._phase_index(data["phase"])]
        phase.state = PHASE_PASSED if data["passed"] else PHASE_FAILED
        phase.reason = str(data.get("reason") or "")
        following = phase.index + 1
        if (
            following < len(self.phases)
            and self.phases[following].state == PHASE_WAITING
            and (phase.state == PHASE_PASSED or phase_waits_for_all(self, following))
        ):
            # A phase whose ``if:`` runs after failures opens after a failed one too.
            self._open_phase(following)

    def _attempt(self, event: ev.Event) -> tuple[TaskState, AttemptState | None]:
        data = ev.data_of(event, ev.ChangesetRef)
        ts = self.tasks[data["task"]]
        number = data["attempt"]
        return ts, next((a for a in ts.attempts if a.number == number), None)

    def _on_changeset_committing(self, event: ev.Event) -> None:
        ts, attempt = self._attempt(event)
        if attempt is None or attempt.committing or attempt.committed:
            return
        attempt.committing = True
        self.committing[ts.task.id] = attempt.number

    def _on_changeset_committed(self, event: ev.Event) -> None:
        ts, attempt = self._attempt(event)
        if attempt is not None and attempt.committing:
            attempt.committed = True
            attempt.committing = False
            self.committing.pop(ts.task.id, None)

    def _on_changeset_failed(self, event: ev.Event) -> None:
        ts, attempt = self._attempt(event)
        if attempt is None or not attempt.committing:
            return
        attempt.committing = False
        self.committing.pop(ts.task.id, None)
        if ts.state in TERMINAL:
            return
        data = ev.data_of(event, ev.ChangesetFailed)
        attempt.state = ev.FAILED
        attempt.reason = str(data.get("reason") or "the changes could not be committed")
        attempt.data["code"] = data.get("code")
        attempt.data["category"] = data.get("category")
        self.waiting.pop(ts.task.id, None)
        ts.state = PENDING
        self.unsettled[ts.task.id] = None

    def _on_changeset_held(self, event: ev.Event) -> None:
        ts, _ = self._attempt(event)
        if ts.state in TERMINAL:
            return
        ts.state = WAITING
        self.unsettled.pop(ts.task.id, None)
        self.waiting[ts.task.id] = None

    def _on_review_decided(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.ReviewDecided)
        ts = self.tasks.get(data.get("task", ""))
        if ts is None or ts.state != WAITING or ts.review is not None:
            return
        ts.review = "approve" if data.get("approve") else "reject"
        ts.review_by = str(data.get("by") or "")
        ts.review_comment = str(data.get("comment") or "")
        ts.state = PENDING
        self.waiting.pop(ts.task.id, None)
        self.unsettled[ts.task.id] = None

    def _on_escalation_opened(self, event: ev.Event) -> None:
        ts = self.tasks[ev.data_of(event, ev.EscalationOpened)["task"]]
        if ts.state in TERMINAL:
            return
        opened = {**event.data, "opened_at": event.at}
        ts.escalation = opened
        ts.escalations.append(opened)
        ts.state = WAITING
        self._unready(ts.task.id)
        self.unsettled.pop(ts.task.id, None)
        self.waiting[ts.task.id] = None

    def _on_escalation_answered(self, event: ev.Event) -> None:
        data = ev.data_of(event, ev.EscalationAnswered)
        ts = self.tasks.get(data.get("task", ""))
        if ts is None or ts.escalation is None or ts.escalation["id"] != data.get("id"):
            return  # unknown, or already answered: the first answer wins
        answer = {**event.data, "answered_at": event.at}
        ts.escalation["answer"] = answer
        ts.escalation = None
        ts.answer = answer
        self.waiting.pop(ts.task.id, None)
        ts.state = PENDING
        if ts.escalations[-1].get("kind") == "failure" and _approved(answer):
            ts.extra_attempts += self.plan.retry_for(ts.task).attempts
        self.unsettled[ts.task.id] = None

    def _on_cancel_requested(self, event: ev.Event) -> None:
        self.cancel_requested = True
        data = ev.data_of(event, ev.CancelRequested)
        self.cancel_reason = str(data.get("reason") or "cancelled")

    def _on_run_finished(self, event: ev.Event) -> None:
        self.finished = str(ev.data_of(event, ev.RunFinished)["state"])
        self.ended_at = event.at

    # ----------------------------------------------------------------- indexes

    def _phase_index(self, phase_id: str) -> int:
        for phase in self.phases:
            if phase.id == phase_id:
                return phase.index
        raise KeyError(phase_id)

    def _settle(self, ts: TaskState, state: str, at: float | None) -> None:
        ts.state = state
        ts.ended_at = at
        self._unready(ts.task.id)
        self.retry_at.pop(ts.task.id, None)
        self.running.discard(ts.task.id)
        self.unsettled.pop(ts.task.id, None)
        self.waiting.pop(ts.task.id, None)
        self.phases[ts.phase_index].open_tasks -= 1
        for dep in self.dependents.get(ts.task.id, ()):
            if dep in self.unended:
                self.unended[dep] -= 1
                self._maybe_ready(dep)

    def _release_dependents(self, task_id: str) -> None:
        for dep in self.dependents.get(task_id, ()):
            self.unmet[dep] -= 1
            self._maybe_ready(dep)

    def _open_phase(self, index: int) -> None:
        self.phases[index].state = PHASE_OPEN
        for task in self.plan.phases[index].tasks:
            self._maybe_ready(task.id)

    def _maybe_ready(self, task_id: str) -> None:
        ts = self.tasks[task_id]
        waiting_for = self.unended.get(task_id, self.unmet[task_id])
        if (
            ts.state == PENDING
            and not ts.attempts
            and waiting_for == 0
            and self.phases[ts.phase_index].state == PHASE_OPEN
        ):
            self.ready[task_id] = None
            if ts.task.approval is not None:
                self.ready_approvals[task_id] = None
            if ts.task.if_ is not None:
                self.ready_conditions[task_id] = None

    def _unready(self, task_id: str) -> None:
        self.ready.pop(task_id, None)
        self.ready_approvals.pop(task_id, None)
        self.ready_conditions.pop(task_id, None)

    # ----------------------------------------------------------------- queries

    def task_states(self) -> dict[str, str]:
        """Task id to state, in plan order."""
        return {tid: ts.state for tid, ts in self.tasks.items()}

    def needs_review(self, ts: TaskState) -> bool:
        """Whether the task's changes wait for a person before they are committed."""
        if self.dry_run:
            return False
        if ts.task.review == "required" or ts.task.id in self.options.review_tasks:
            return True
        return self.review_all

    def frontier(self) -> PhaseState | None:
        """The first phase that has not finished, or None when all have."""
        for phase in self.phases:
            if phase.state not in (PHASE_PASSED, PHASE_FAILED):
                return phase
        return None


def _approved(answer: dict[str, Any]) -> bool:
    # ``resolved`` counts only in an answer by timeout (see decide._approved_answer).
    decision = answer.get("decision")
    return decision in ("approve", "value") or (
        decision == "timeout" and answer.get("resolved") == "approve"
    )


_ATTEMPT_KEYS = frozenset({"task", "attempt", "outcome", "exit_code", "reason"})

# Keyed by str: a stored event's kind is the journal's text, not an enum member.
_HANDLERS: dict[str, Callable[[RunState, ev.Event], None]] = {
    ev.DRIVER_STARTED: RunState._on_driver_started,
    ev.ATTEMPT_STARTED: RunState._on_attempt_started,
    ev.ATTEMPT_FINISHED: RunState._on_attempt_finished,
    ev.TASK_FINISHED: RunState._on_task_finished,
    ev.TASK_SKIPPED: RunState._on_task_skipped,
    ev.PHASE_CHECK_STARTED: RunState._on_phase_check_started,
    ev.PHASE_FINISHED: RunState._on_phase_finished,
    ev.CANCEL_REQUESTED: RunState._on_cancel_requested,
    ev.RUN_FINISHED: RunState._on_run_finished,
    ev.CHANGESET_COMMITTING: RunState._on_changeset_committing,
    ev.CHANGESET_COMMITTED: RunState._on_changeset_committed,
    ev.CHANGESET_FAILED: RunState._on_changeset_failed,
    ev.CHANGESET_HELD: RunState._on_changeset_held,
    ev.REVIEW_DECIDED: RunState._on_review_decided,
    ev.ESCALATION_OPENED: RunState._on_escalation_opened,
    ev.ESCALATION_ANSWERED: RunState._on_escalation_answered,
}
