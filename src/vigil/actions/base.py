"""What an action kind is: one module that turns a task into effects inside an attempt.

The engine gives every action an :class:`AttemptContext`: a way to run programs inside
the attempt's sandbox (so whatever they change lands in the attempt's changeset), the
attempt's log, the task's inputs, and what the previous round left behind. The action
reports an :class:`ActionResult`; validation, retries, commit and review are the
engine's business, never the action's.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vigil.executors.process import ProcessOutcome
from vigil.plan.models import Plan, Task


@dataclass(frozen=True)
class PriorRound:
    """What went wrong in the previous attempt, for actions that can learn from it."""

    attempt: int
    failed_command: str
    output: str  # redacted and truncated by the engine
    reason: str


@dataclass(frozen=True)
class ActionResult:
    """How an action ended. ``usage`` carries tokens and cost for model calls."""

    ok: bool
    exit_code: int | None = None
    reason: str = ""
    output: str | None = None
    usage: Mapping[str, Any] = field(default_factory=dict)
    timed_out: bool = False
    stopped: bool = False
    code: str | None = None
    """The error code when the action failed with a VigilError (never parsed from text)."""
    category: str | None = None
    """That error's category (:class:`vigil.errors.Category`)."""


class AttemptContext(Protocol):
    """The attempt as an action sees it."""

    run_id: str
    plan: Plan
    task: Task
    attempt: int
    stop: threading.Event
    secrets: Mapping[str, str]
    """Values of the secrets this task lists (already in ``env`` of ``run``)."""
    inputs: Mapping[str, str]
    """Outputs of the tasks this one needs, by task id."""
    prior: PriorRound | None
    """The previous failed round of this task, if any (fix rounds)."""
    path: str | None
    """The ``PATH`` steps see, for resolving programs."""

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ProcessOutcome:
        """Run ``argv`` inside the attempt's sandbox, output to the attempt's log."""
        ...

    def log(self, text: str) -> None:
        """Add a line from vigil to the attempt's log."""
        ...

    def fingerprint(self) -> str:
        """Content fingerprint of the workspace view this attempt started on."""
        ...


class Action(Protocol):
    """One action kind (``run``, ``agent``, ``llm`` ...)."""

    def execute(self, ctx: AttemptContext) -> ActionResult:
        """Perform the task's work inside ``ctx``."""
        ...
