"""The journal's vocabulary: every state change of a run is one of these events.

Events are plain ``(kind, data)`` pairs so the store needs no knowledge of them; the
constructors below are the only place that spells a kind or a key.
"""

# No ``from __future__ import annotations``: the payload TypedDicts must know at run time
# which keys are NotRequired (``__required_keys__``), and string annotations hide that.

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NotRequired, TypedDict, TypeVar, cast


class Kind(StrEnum):
    """Every kind of journal event. The value is the text the journal stores: it never
    changes, or older runs would no longer replay."""

    RUN_CREATED = "run.created"
    DRIVER_STARTED = "driver.started"
    DRIVER_STOPPED = "driver.stopped"
    ATTEMPT_STARTED = "attempt.started"
    ATTEMPT_FINISHED = "attempt.finished"
    TASK_FINISHED = "task.finished"
    TASK_SKIPPED = "task.skipped"
    PHASE_CHECK_STARTED = "phase.check.started"
    PHASE_FINISHED = "phase.finished"
    CANCEL_REQUESTED = "run.cancel_requested"
    RUN_FINISHED = "run.finished"
    # Changesets: an attempt's file changes on their way to the workspace.
    CHANGESET_COMMITTING = "changeset.committing"
    CHANGESET_COMMITTED = "changeset.committed"
    CHANGESET_FAILED = "changeset.failed"
    CHANGESET_HELD = "changeset.held"
    REVIEW_DECIDED = "review.decided"
    ROLLBACK_DONE = "rollback.done"
    # Escalations: a question for a person that blocks one task and nothing else.
    ESCALATION_OPENED = "escalation.opened"
    ESCALATION_ANSWERED = "escalation.answered"
    # A person's decision (answer, review) verified, or refused, by the driver acting on it.
    DECISION_ACCEPTED = "decision.accepted"
    DECISION_REFUSED = "decision.refused"


# The kinds by their old names, as the engine has always spelled them (``ev.RUN_CREATED``).
RUN_CREATED: Final = Kind.RUN_CREATED
DRIVER_STARTED: Final = Kind.DRIVER_STARTED
DRIVER_STOPPED: Final = Kind.DRIVER_STOPPED
ATTEMPT_STARTED: Final = Kind.ATTEMPT_STARTED
ATTEMPT_FINISHED: Final = Kind.ATTEMPT_FINISHED
TASK_FINISHED: Final = Kind.TASK_FINISHED
TASK_SKIPPED: Final = Kind.TASK_SKIPPED
PHASE_CHECK_STARTED: Final = Kind.PHASE_CHECK_STARTED
PHASE_FINISHED: Final = Kind.PHASE_FINISHED
CANCEL_REQUESTED: Final = Kind.CANCEL_REQUESTED
RUN_FINISHED: Final = Kind.RUN_FINISHED
CHANGESET_COMMITTING: Final = Kind.CHANGESET_COMMITTING
CHANGESET_COMMITTED: Final = Kind.CHANGESET_COMMITTED
CHANGESET_FAILED: Final = Kind.CHANGESET_FAILED
CHANGESET_HELD: Final = Kind.CHANGESET_HELD
REVIEW_DECIDED: Final = Kind.REVIEW_DECIDED
ROLLBACK_DONE: Final = Kind.ROLLBACK_DONE
ESCALATION_OPENED: Final = Kind.ESCALATION_OPENED
ESCALATION_ANSWERED: Final = Kind.ESCALATION_ANSWERED
DECISION_ACCEPTED: Final = Kind.DECISION_ACCEPTED
DECISION_REFUSED: Final = Kind.DECISION_REFUSED

# Outcomes of one attempt.
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Event:
    """One journal entry: ``seq`` orders a run's events, ``at`` is epoch seconds.

    ``kind`` is the journal's text (compare it with :class:`Kind` members); ``data`` is
    the payload of that kind (one of the shapes below), as :func:`data_of` reads it.
    """

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    at: float = 0.0
    seq: int = 0


# ---------------------------------------------------------------------------- payloads
#
# What each kind's data holds, as vigil writes it; the constructors below are the only
# code that builds one. Readers still read leniently (``.get``, ``str()``): a journal may
# come from an older vigil, and a person's decisions come from other processes.


class RunCreated(TypedDict):
    plan_hash: str
    max_parallel: int


class DriverStarted(TypedDict):
    pid: int
    host: str


class DriverStopped(TypedDict):
    reason: str


class AttemptStarted(TypedDict):
    task: str
    attempt: int
    command: str  # "main" or "fallback"


class AttemptFinished(TypedDict):
    task: str
    attempt: int
    outcome: str  # one of the outcomes above
    exit_code: int | None
    reason: str
    code: NotRequired[str]  # the VigilError that failed it, with its category
    category: NotRequired[str | None]
    duration: NotRequired[float]
    # What the action and its checks add (vigil.engine.attempt).
    usage: NotRequired[dict[str, Any]]
    output: NotRequired[str]
    outputs: NotRequired[dict[str, str]]  # what the step wrote to $VIGIL_OUTPUT (redacted)
    validation_failed: NotRequired[int | str]
    failed_command: NotRequired[str]
    failed_output: NotRequired[str]
    log_excerpt: NotRequired[list[str]]  # the lines of the output that say what went wrong
    changeset: NotRequired[dict[str, Any]]
    base_generation: NotRequired[int]


class TaskFinished(TypedDict):
    task: str
    state: str
    degraded: NotRequired[bool]
    reason: str
    output: NotRequired[str | None]  # an approval's answer, passed to dependents


class NeedsGrant(TypedDict):
    environment: str
    capabilities: list[str]
    code: str


class TaskSkipped(TypedDict):
    task: str
    state: NotRequired[str]  # "cancelled"; "skipped" when absent
    reason: str
    blocked_by: NotRequired[str]  # a task id, or "phase:<id>"
    needs_grant: NotRequired[NeedsGrant]  # dry runs: not run for want of a grant
    condition: NotRequired[bool]  # an ``if:`` was false (its own, its phase's or a need's)


class PhaseCheckStarted(TypedDict):
    phase: str


class PhaseFinished(TypedDict):
    phase: str
    passed: bool
    reason: NotRequired[str]


class CancelRequested(TypedDict):
    reason: str
    by: str


class RunFinished(TypedDict):
    state: str


class ChangesetRef(TypedDict):
    """``changeset.committing``, ``changeset.committed`` and ``changeset.held``."""

    task: str
    attempt: int


class ChangesetFailed(TypedDict):
    task: str
    attempt: int
    code: str
    category: str
    reason: str


class ReviewDecided(TypedDict):
    task: str
    approve: bool
    by: str
    comment: str
    statement: NotRequired[dict[str, str]]  # vigil.safety.decisions.sign_statement


class EscalationOpened(TypedDict):
    id: str
    task: str
    kind: str  # "approval", "security" or "failure"
    context: dict[str, Any]
    question: str
    choices: NotRequired[list[str] | None]
    timeout: NotRequired[float | None]
    on_timeout: NotRequired[str]
    default: NotRequired[str | None]


class EscalationAnswered(TypedDict):
    id: str
    task: str
    decision: str  # "approve", "reject", "value", or "timeout"
    resolved: NotRequired[str]  # what a timeout resolved to
    value: str | None
    comment: NotRequired[str]
    by: str
    statement: NotRequired[dict[str, str]]


class DecisionNoted(TypedDict):
    """``decision.accepted`` and ``decision.refused``: the driver acted on event ``seq``."""

    seq: int
    kind: str
    subject: str
    nonce: NotRequired[str]
    signer: NotRequired[str]
    reason: NotRequired[str]


class RollbackDone(TypedDict):
    """``rollback.done``: what `vigil rollback` restored (a record; it changes no state)."""

    tasks: list[str]
    paths: list[str]
    file: str | None
    force: bool
    by: str
    compensations: list[Any]  # vigil.engine.compensate.Compensation, as JSON


SHAPES: Final[Mapping[Kind, type]] = {
    Kind.RUN_CREATED: RunCreated,
    Kind.DRIVER_STARTED: DriverStarted,
    Kind.DRIVER_STOPPED: DriverStopped,
    Kind.ATTEMPT_STARTED: AttemptStarted,
    Kind.ATTEMPT_FINISHED: AttemptFinished,
    Kind.TASK_FINISHED: TaskFinished,
    Kind.TASK_SKIPPED: TaskSkipped,
    Kind.PHASE_CHECK_STARTED: PhaseCheckStarted,
    Kind.PHASE_FINISHED: PhaseFinished,
    Kind.CANCEL_REQUESTED: CancelRequested,
    Kind.RUN_FINISHED: RunFinished,
    Kind.CHANGESET_COMMITTING: ChangesetRef,
    Kind.CHANGESET_COMMITTED: ChangesetRef,
    Kind.CHANGESET_FAILED: ChangesetFailed,
    Kind.CHANGESET_HELD: ChangesetRef,
    Kind.REVIEW_DECIDED: ReviewDecided,
    Kind.ESCALATION_OPENED: EscalationOpened,
    Kind.ESCALATION_ANSWERED: EscalationAnswered,
    Kind.DECISION_ACCEPTED: DecisionNoted,
    Kind.DECISION_REFUSED: DecisionNoted,
    Kind.ROLLBACK_DONE: RollbackDone,
}
"""The payload shape of each kind vigil writes."""

Entry = tuple[Kind, Mapping[str, Any]]
"""An event on its way into the journal: its kind and its payload."""

P = TypeVar("P")


def data_of(event: Event, shape: type[P]) -> P:
    """``event.data`` typed as ``shape``, the payload of its kind (see :data:`SHAPES`).

    Not checked at run time: the fold reads the journal of any run, and must stay as
    lenient as it was with what older versions wrote.
    """
    return cast(P, event.data)


# ------------------------------------------------------------------------ constructors


def run_created(plan_hash: str, max_parallel: int) -> tuple[Kind, RunCreated]:
    """A run was created from the plan with ``plan_hash``."""
    return RUN_CREATED, {"plan_hash": plan_hash, "max_parallel": max_parallel}


def driver_started(pid: int, host: str) -> tuple[Kind, DriverStarted]:
    """A process took the run's lock and drives it."""
    return DRIVER_STARTED, {"pid": pid, "host": host}


def driver_stopped(reason: str) -> tuple[Kind, DriverStopped]:
    """The driving process stopped before the run ended; ``vigil resume`` goes on."""
    return DRIVER_STOPPED, {"reason": reason}


def attempt_started(task: str, attempt: int, command: str) -> tuple[Kind, AttemptStarted]:
    """An attempt is about to run ``command`` (``main`` or ``fallback``)."""
    return ATTEMPT_STARTED, {"task": task, "attempt": attempt, "command": command}


def attempt_finished(
    task: str,
    attempt: int,
    outcome: str,
    *,
    exit_code: int | None = None,
    reason: str = "",
    duration: float | None = None,
    extra: Mapping[str, Any] | None = None,
    code: str | None = None,
    category: str | None = None,
) -> tuple[Kind, AttemptFinished]:
    """An attempt ended with ``outcome`` (one of the outcome constants).

    ``code`` and ``category`` name the VigilError that failed it, when one did; the
    scheduler reads them as fields, never from ``reason``. ``extra`` holds what the
    action and its checks add (see :class:`AttemptFinished`).
    """
    data: AttemptFinished = {
        "task": task,
        "attempt": attempt,
        "outcome": outcome,
        "exit_code": exit_code,
        "reason": reason,
    }
    if code is not None:
        data["code"] = code
        data["category"] = None if category is None else str(category)
    if duration is not None:
        data["duration"] = round(duration, 6)
    if extra:
        data = cast(AttemptFinished, {**data, **extra})
    return ATTEMPT_FINISHED, data


_UNSET: Any = object()


def task_finished(
    task: str, state: str, reason: str, *, degraded: bool | None = None, output: Any = _UNSET
) -> tuple[Kind, TaskFinished]:
    """The task settled as ``state`` (``succeeded`` or ``failed``).

    ``degraded`` says whether a success came from the fallback command; ``output`` (an
    approval's answer, possibly None) is what dependents receive.
    """
    data: TaskFinished = {"task": task, "state": state, "reason": reason}
    if degraded is not None:
        data = {"task": task, "state": state, "degraded": degraded, "reason": reason}
    if output is not _UNSET:
        data["output"] = output
    return TASK_FINISHED, data


def task_skipped(
    task: str, reason: str, *, blocked_by: str | None = None, state: str | None = None
) -> tuple[Kind, TaskSkipped]:
    """The task will not run: ``blocked_by`` did not succeed, or the run was cancelled
    (``state`` ``cancelled``)."""
    data: TaskSkipped = {"task": task, "reason": reason}
    if state is not None:
        data = {"task": task, "state": state, "reason": reason}
    if blocked_by is not None:
        data["blocked_by"] = blocked_by
    return TASK_SKIPPED, data


def task_skipped_by_condition(
    task: str, reason: str, *, blocked_by: str | None = None
) -> tuple[Kind, TaskSkipped]:
    """The task will not run because an ``if:`` was false: its own, its phase's, or (with
    ``blocked_by``) that of a task it needs. Not a failure of the run."""
    data: TaskSkipped = {"task": task, "reason": reason, "condition": True}
    if blocked_by is not None:
        data["blocked_by"] = blocked_by
    return TASK_SKIPPED, data


def task_blocked_by_phase(task: str, phase: str) -> tuple[Kind, TaskSkipped]:
    """The task will not run: its phase, or an earlier one, ``phase`` did not pass."""
    return TASK_SKIPPED, {
        "task": task,
        "blocked_by": f"phase:{phase}",
        "reason": f"phase {phase} did not complete",
    }


def phase_check_started(phase: str) -> tuple[Kind, PhaseCheckStarted]:
    """The completion checks of ``phase`` are about to run."""
    return PHASE_CHECK_STARTED, {"phase": phase}


def phase_finished(
    phase: str, passed: bool, reason: str | None = None
) -> tuple[Kind, PhaseFinished]:
    """The phase passed (the next one opens) or did not (every later one is blocked)."""
    data: PhaseFinished = {"phase": phase, "passed": passed}
    if reason is not None:
        data["reason"] = reason
    return PHASE_FINISHED, data


def cancel_requested(reason: str, by: str) -> tuple[Kind, CancelRequested]:
    """``by`` asked the run to stop: a cancel, or a halt seen by the driver."""
    return CANCEL_REQUESTED, {"reason": reason, "by": by}


def rollback_done(
    tasks: list[str],
    paths: list[str],
    *,
    file: str | None,
    force: bool,
    by: str,
    compensations: list[Any],
) -> tuple[Kind, RollbackDone]:
    """`vigil rollback` restored ``paths`` of ``tasks`` (and ran ``compensations``)."""
    return ROLLBACK_DONE, {
        "tasks": tasks,
        "paths": paths,
        "file": file,
        "force": force,
        "by": by,
        "compensations": compensations,
    }


def run_finished(state: str) -> tuple[Kind, RunFinished]:
    """The run ended as ``state``."""
    return RUN_FINISHED, {"state": state}


def changeset_committing(task: str, attempt: int) -> tuple[Kind, ChangesetRef]:
    """The attempt's changes are about to be applied; at most once per changeset."""
    return CHANGESET_COMMITTING, {"task": task, "attempt": attempt}


def changeset_committed(task: str, attempt: int) -> tuple[Kind, ChangesetRef]:
    """The attempt's changes are in the workspace."""
    return CHANGESET_COMMITTED, {"task": task, "attempt": attempt}


def changeset_held(task: str, attempt: int) -> tuple[Kind, ChangesetRef]:
    """The attempt's changes wait for a person's review."""
    return CHANGESET_HELD, {"task": task, "attempt": attempt}


def escalation_opened(
    id_: str, task: str, kind: str, context: dict[str, Any], question: str
) -> tuple[Kind, EscalationOpened]:
    """A question ``id_`` for a person blocks ``task``; an approval's settings are added to
    the payload by the caller."""
    return ESCALATION_OPENED, {
        "id": id_,
        "task": task,
        "kind": kind,
        "context": context,
        "question": question,
    }


def escalation_answered(
    id_: str, task: str, decision: str, value: str | None, comment: str, by: str
) -> tuple[Kind, EscalationAnswered]:
    """``by`` answered question ``id_``; the caller adds the signed statement."""
    return ESCALATION_ANSWERED, {
        "id": id_,
        "task": task,
        "decision": decision,
        "value": value,
        "comment": comment,
        "by": by,
    }


def escalation_timed_out(
    id_: str, task: str, resolved: str, value: str | None
) -> tuple[Kind, EscalationAnswered]:
    """Question ``id_`` was not answered in time and resolved as the plan says."""
    return ESCALATION_ANSWERED, {
        "id": id_,
        "task": task,
        "decision": "timeout",
        "resolved": resolved,
        "value": value,
        "by": "timeout",
    }


def changeset_failed(
    task: str, attempt: int, *, code: str, category: str, reason: str
) -> tuple[Kind, ChangesetFailed]:
    """The attempt's changes could not be applied; the workspace is as it was."""
    return CHANGESET_FAILED, {
        "task": task,
        "attempt": attempt,
        "code": code,
        "category": str(category),
        "reason": reason,
    }


def task_not_granted(
    task: str, *, environment: str, capabilities: list[str], code: str, reason: str
) -> tuple[Kind, TaskSkipped]:
    """In a dry run, ``task`` is not run: it needs a grant the dry run does not hold.

    Unlike any other skip, its dependents still dry-run (on the workspace without its
    changes), so ``needs_grant`` is what the state reads to release them.
    """
    return TASK_SKIPPED, {
        "task": task,
        "reason": reason,
        "needs_grant": {
            "environment": environment,
            "capabilities": list(capabilities),
            "code": code,
        },
    }
