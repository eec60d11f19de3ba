"""User-visible errors: one class per failure, each with a stable code, a cause and a remedy.

Every error a person can meet carries a code such as ``VIGIL-RUN-LOCKED``. The code never
changes meaning once published; ``vigil explain CODE`` prints the catalogue entry, and
``docs/errors.md`` lists them all. Subsystems define their own subclasses next to the code
that raises them; defining the class registers it in :data:`CATALOG`.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ExitCode(enum.IntEnum):
    """Process exit codes of the ``vigil`` command. Documented in the README."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    CANCELLED = 3
    REFUSED = 4
    WAITING = 5
    STORE = 6
    INTERNAL = 70


CATALOG: dict[str, type[VigilError]] = {}


class VigilError(Exception):
    """Base of every error vigil reports to a person.

    Subclasses set ``code``, ``title`` (what kind of failure this is) and a default
    ``remedy``; instances carry the one-line ``cause`` of this occurrence.
    """

    code: ClassVar[str] = "VIGIL-ERROR"
    title: ClassVar[str] = "vigil failed"
    remedy: str = "Run again with --debug and report the output."
    exit_code: ClassVar[ExitCode] = ExitCode.INTERNAL

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__ and cls.__mro__[1] is not VigilError:
            # A variant of its parent's error (same code, its own exit code or remedy):
            # the catalogue keeps the parent's entry.
            return
        existing = CATALOG.get(cls.code)
        if existing is not None and existing is not cls and existing.__name__ != cls.__name__:
            raise TypeError(f"error code {cls.code} is defined twice")
        CATALOG[cls.code] = cls

    def __init__(
        self, cause: str, remedy: str | None = None, *, details: list[str] | None = None
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        if remedy is not None:
            self.remedy = remedy
        self.details: list[str] = list(details or [])

    def __str__(self) -> str:
        return f"{self.code}: {self.cause}"

    def to_dict(self) -> dict[str, object]:
        """The error as the JSON object printed by ``--format json``."""
        return {
            "code": self.code,
            "cause": self.cause,
            "remedy": self.remedy,
            "details": self.details,
        }


class UsageError(VigilError):
    code = "VIGIL-USAGE"
    title = "the command was called wrongly"
    remedy = "See `vigil --help` for the command's options."
    exit_code = ExitCode.USAGE


class ConfigError(VigilError):
    code = "VIGIL-CONFIG"
    title = "vigil.toml or a VIGIL_* variable is invalid"
    remedy = "Fix the setting named in the message; `vigil doctor` shows the effective config."
    exit_code = ExitCode.USAGE


class RunNotFound(VigilError):
    code = "VIGIL-RUN-NOT-FOUND"
    title = "no run with that id in this store"
    remedy = "List runs with `vigil runs`; check --workspace or VIGIL_DATABASE_URL."
    exit_code = ExitCode.USAGE


class RunLocked(VigilError):
    code = "VIGIL-RUN-LOCKED"
    title = "another process is driving this run"
    remedy = "Wait for it to finish, or stop it with `vigil cancel RUN_ID`."
    exit_code = ExitCode.REFUSED


class RunFinished(VigilError):
    code = "VIGIL-RUN-FINISHED"
    title = "the run has already ended"
    remedy = "Start a new run with `vigil run PLAN`; see the old one with `vigil status RUN_ID`."
    exit_code = ExitCode.USAGE


class PlanChanged(VigilError):
    code = "VIGIL-PLAN-CHANGED"
    title = "the plan file changed since this run started"
    remedy = "Resume with `vigil resume RUN_ID` (it uses the recorded plan) or use a new --run-id."
    exit_code = ExitCode.USAGE


class StoreError(VigilError):
    """The run store failed; ``failure`` names the cause for programs (``--format json``).

    The variants below carry the exit code of their kind of cause; none is a bug in vigil.
    """

    code = "VIGIL-STORE"
    title = "the run store could not be opened or written"
    remedy = "Check VIGIL_DATABASE_URL and that the database is reachable and writable."
    exit_code = ExitCode.STORE

    def __init__(
        self,
        cause: str,
        remedy: str | None = None,
        *,
        failure: str = "failed",
        details: list[str] | None = None,
    ) -> None:
        super().__init__(cause, remedy, details=details)
        self.failure = failure

    def to_dict(self) -> dict[str, object]:
        """The error as JSON, with the kind of store failure."""
        return {**super().to_dict(), "failure": self.failure}


class StoreMisconfigured(StoreError):
    """The store URL, its credentials, its database or its location need fixing (exit 2)."""

    exit_code = ExitCode.USAGE


class StoreRefused(StoreError):
    """The store is locked by another process, or would start history afresh (exit 4)."""

    exit_code = ExitCode.REFUSED


class StoreDamaged(StoreError):
    """The store's file or its disk is damaged or full (exit 6)."""

    exit_code = ExitCode.STORE


def explain(code: str) -> type[VigilError] | None:
    """The catalogue entry for ``code`` (case-insensitive), or None."""
    return CATALOG.get(code.upper())
