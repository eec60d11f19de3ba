"""The rows the run store hands out and takes in: runs, journal events, halts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

RUN_STATES: Final = frozenset({"pending", "running", "succeeded", "failed", "cancelled", "waiting"})
"""Every value the ``state`` column of a run may hold."""

RUN_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
"""What a run id may be: it names files (logs, reports), so no separator, no markup."""

ALL_PROJECTS: Final = "*"
"""The project name of a halt that stops every project."""


@dataclass(frozen=True)
class NewRun:
    """What the engine knows about a run before its first event."""

    id: str
    plan_name: str
    project: str
    plan_hash: str
    plan_json: str
    plan_path: str
    workspace: str
    created_at: float
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRecord:
    """The summary row of one run; ``last_seq`` is the seq of its newest event."""

    id: str
    plan_name: str
    project: str
    plan_hash: str
    plan_json: str
    plan_path: str
    workspace: str
    options: dict[str, Any]
    state: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    updated_at: float
    last_seq: int


@dataclass(frozen=True)
class StoredEvent:
    """One journal entry: the ``seq``-th event of run ``run_id``."""

    run_id: str
    seq: int
    kind: str
    data: dict[str, Any]
    at: float


@dataclass(frozen=True)
class Halt:
    """An emergency stop for ``project`` (``"*"`` for all), set by ``actor`` at ``at``."""

    project: str
    reason: str
    actor: str
    at: float
    statement: str | None = None


@dataclass(frozen=True)
class AuditHead:
    """The newest sealed size and root of one audit log, as the store keeps it."""

    log: str
    size: int
    root: str
    updated_at: float
