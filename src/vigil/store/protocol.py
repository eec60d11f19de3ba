"""What the rest of vigil may ask of a run store, as a type.

The engine, the commands, the reports and the dashboard are written against
:class:`RunStore`, not against :class:`vigil.store.Store`: one class serves SQLite and
PostgreSQL today, and anything that wraps it (a test that lands a cancel between two
appends, say) is checked by ``mypy`` against the same list of methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    from vigil.store.locks import RunLock
    from vigil.store.records import AuditHead, Halt, NewRun, RunRecord, StoredEvent

EventEntry = tuple[str, Mapping[str, Any]]
"""One event on its way into a journal: its kind and its JSON-ready data."""


class RunStore(Protocol):
    """Runs, their append-only journals, run locks, halts and audit heads."""

    @property
    def url(self) -> str:
        """The URL the store was opened with (it may hold a password: see display_url)."""

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages and reports."""

    def create_run(self, run: NewRun) -> bool:
        """Record a new run in state ``pending``; False (and no change) if the id exists."""

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run's summary row, or None."""

    def list_runs(
        self,
        *,
        project: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Runs newest first, optionally of one project and in some states."""

    def run_ids(
        self, *, prefix: str = "", workspace: str | None = None, limit: int = 10
    ) -> list[str]:
        """Ids of runs starting with ``prefix`` (of one workspace if given), newest first."""

    def append(
        self,
        run_id: str,
        events: Sequence[EventEntry],
        *,
        at: float,
        state: str | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
    ) -> int:
        """Append events (all or none) and update the run's summary; returns the last seq."""

    def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        """The run's events with seq greater than ``after``, in seq order."""

    def lock_run(self, run_id: str) -> RunLock:
        """Take the run's lock; raises RunLocked (naming the holder) if another has it."""

    def run_lock_held(self, run_id: str) -> bool | None:
        """Whether a process holds the run's lock; None when that cannot be told."""

    def set_halt(
        self, project: str, reason: str, actor: str, at: float, statement: str | None = None
    ) -> None:
        """Halt ``project`` (``"*"`` for all), replacing any earlier halt of it."""

    def clear_halt(self, project: str) -> bool:
        """Delete the halt row of ``project``; False if there was none."""

    def halts(self) -> list[Halt]:
        """Every halt row, by project name."""

    def set_audit_head(self, log: str, size: int, root: str, at: float) -> None:
        """Record the newest sealed size and root of the audit log ``log``."""

    def audit_head(self, log: str) -> AuditHead | None:
        """The recorded head of the audit log ``log``, if any."""

    def close(self) -> None:
        """Close the store's connections."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
