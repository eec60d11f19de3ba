"""The journal's vocabulary: every state change of a run is one of these events.

Events are plain ``(kind, data)`` pairs so the store needs no knowledge of them; the
constructors below are the only place that spells a kind or a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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

# Outcomes of one attempt.
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Event:
    """One journal entry: ``seq`` orders a run's events, ``at`` is epoch seconds."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0
    seq: int = 0


def attempt_started(task: str, attempt: int, command: str) -> tuple[str, dict[str, Any]]:
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
    extra: dict[str, Any] | None = None,
    code: str | None = None,
    category: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """An attempt ended with ``outcome`` (one of the outcome constants).

    ``code`` and ``category`` name the VigilError that failed it, when one did; the
    scheduler reads them as fields, never from ``reason``.
    """
    data: dict[str, Any] = {
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
        data.update(extra)
    return ATTEMPT_FINISHED, data


def changeset_committing(task: str, attempt: int) -> tuple[str, dict[str, Any]]:
    """The attempt's changes are about to be applied; at most once per changeset."""
    return CHANGESET_COMMITTING, {"task": task, "attempt": attempt}


def changeset_committed(task: str, attempt: int) -> tuple[str, dict[str, Any]]:
    """The attempt's changes are in the workspace."""
    return CHANGESET_COMMITTED, {"task": task, "attempt": attempt}


def changeset_failed(
    task: str, attempt: int, *, code: str, category: str, reason: str
) -> tuple[str, dict[str, Any]]:
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
) -> tuple[str, dict[str, Any]]:
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
