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


class Category(enum.StrEnum):
    """What kind of failure an error is, so callers can act on it without reading its text.

    ``not_found``: the thing named does not exist; ``refused``: vigil said no on purpose
    (grant, policy, halt, protection), and no retry changes that; ``transient``: the
    world was not ready (store outage, a conflict, a busy lock), and trying again later can
    succeed; ``permanent``: the request itself cannot succeed (bad usage or config, a
    budget spent); ``internal``: vigil itself failed.
    """

    NOT_FOUND = "not_found"
    REFUSED = "refused"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    INTERNAL = "internal"


# An error class that does not say its category gets the one its exit code implies.
_CATEGORY_OF_EXIT = {
    ExitCode.REFUSED: Category.REFUSED,
    ExitCode.USAGE: Category.PERMANENT,
    ExitCode.RUN_FAILED: Category.TRANSIENT,
    ExitCode.INTERNAL: Category.INTERNAL,
}

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
    category: ClassVar[Category] = Category.INTERNAL
    catalogued: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "category" not in cls.__dict__ and not _declares_category(cls):
            cls.category = _CATEGORY_OF_EXIT.get(cls.exit_code, Category.INTERNAL)
        if not cls.__dict__.get("catalogued", True):
            return  # a category base: never raised itself, so not a published code
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
            "category": str(self.category),
            "cause": self.cause,
            "remedy": self.remedy,
            "details": self.details,
        }


CATALOG[VigilError.code] = VigilError


def _declares_category(cls: type[VigilError]) -> bool:
    """Whether a base between ``cls`` and VigilError fixes the category (e.g. RefusedError)."""
    return any(base in _CATEGORY_BASES for base in cls.__mro__[1:])


class NotFoundError(VigilError):
    """Base of errors for a thing that does not exist."""

    title = "the thing named does not exist"
    remedy = "Check the name or id; list what exists with the matching `vigil` command."
    exit_code = ExitCode.USAGE
    category = Category.NOT_FOUND
    catalogued = False


class RefusedError(VigilError):
    """Base of refusals: vigil said no on purpose, and a retry will say no again."""

    title = "vigil refused the action"
    remedy = "Read the cause; it names the grant, policy, halt or protection that refused."
    exit_code = ExitCode.REFUSED
    category = Category.REFUSED
    catalogued = False


class TransientError(VigilError):
    """Base of failures that trying again later can fix."""

    title = "something vigil needs was not available"
    remedy = "Try again; if it keeps failing, fix what the cause names."
    exit_code = ExitCode.RUN_FAILED
    category = Category.TRANSIENT
    catalogued = False


class PermanentError(VigilError):
    """Base of failures no retry fixes: the request itself cannot succeed."""

    title = "the request cannot succeed as given"
    remedy = "Change what the cause names, then try again."
    exit_code = ExitCode.USAGE
    category = Category.PERMANENT
    catalogued = False


class InternalError(VigilError):
    """vigil itself failed: a bug, or an unexpected failure of the machine under it."""

    code = "VIGIL-INTERNAL"
    title = "vigil failed unexpectedly"
    remedy = "Run again with --debug and report the output; `vigil resume RUN` continues a run."
    exit_code = ExitCode.INTERNAL
    category = Category.INTERNAL


_CATEGORY_BASES: frozenset[type[VigilError]] = frozenset(
    {NotFoundError, RefusedError, TransientError, PermanentError, InternalError}
)


class CommitFailed(InternalError):
    code = "VIGIL-COMMIT"
    title = "an attempt's changes could not be applied to the workspace"
    remedy = "Read the cause (disk full, permissions); fix it and `vigil resume RUN`."


class CaptureFailed(InternalError):
    code = "VIGIL-CAPTURE"
    title = "an attempt's changes could not be read from its sandbox"
    remedy = "Read the cause (disk full, permissions); fix it and `vigil resume RUN`."


class SecretInPath(RefusedError):
    code = "VIGIL-SECRET-IN-PATH"
    title = "a step put a secret it holds into a file name or a link target"
    remedy = (
        "File names are shown in diffs, reviews and the journal, where no secret may stand: "
        "make the step write the secret into a file's content (or not at all), not its name."
    )


def category_of(code: str | None) -> Category | None:
    """The category of a catalogued ``code`` (None for no code or an unknown one)."""
    if code is None:
        return None
    cls = CATALOG.get(code)
    return cls.category if cls is not None else None


class UsageError(PermanentError):
    code = "VIGIL-USAGE"
    title = "the command was called wrongly"
    remedy = "See `vigil --help` for the command's options."
    exit_code = ExitCode.USAGE


class ConfigError(PermanentError):
    code = "VIGIL-CONFIG"
    title = "vigil.toml or a VIGIL_* variable is invalid"
    remedy = "Fix the setting named in the message; `vigil doctor` shows the effective config."
    exit_code = ExitCode.USAGE


class RunNotFound(NotFoundError):
    code = "VIGIL-RUN-NOT-FOUND"
    title = "no run with that id in this store"
    remedy = "List runs with `vigil runs`; check --workspace or VIGIL_DATABASE_URL."
    exit_code = ExitCode.USAGE


class RunAmbiguous(PermanentError):
    code = "VIGIL-RUN-AMBIGUOUS"
    title = "the run id prefix names more than one run"
    remedy = "Give more of the id (the candidates are listed), or the whole id."
    exit_code = ExitCode.USAGE


class RunLocked(RefusedError):
    code = "VIGIL-RUN-LOCKED"
    title = "another process is driving this run"
    remedy = "Wait for it to finish, or stop it with `vigil cancel RUN_ID`."
    exit_code = ExitCode.REFUSED


class RunFinished(PermanentError):
    code = "VIGIL-RUN-FINISHED"
    title = "the run has already ended"
    remedy = "Start a new run with `vigil run PLAN`; see the old one with `vigil status RUN_ID`."
    exit_code = ExitCode.USAGE


class PlanChanged(PermanentError):
    code = "VIGIL-PLAN-CHANGED"
    title = "the plan file changed since this run started"
    remedy = "Resume with `vigil resume RUN_ID` (it uses the recorded plan) or use a new --run-id."
    exit_code = ExitCode.USAGE


class RunTampered(RefusedError):
    code = "VIGIL-RUN-TAMPERED"
    title = "the run's record in the store is not what vigil wrote"
    remedy = (
        "Do not resume this run: something rewrote its record in the store, or it was "
        "started by a key you do not trust. Start the plan again with `vigil run`, and check "
        "who can write the store (docs/security.md, 'Securing a team store')."
    )


class StoreError(TransientError):
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
    category = Category.PERMANENT


class StoreRefused(StoreError):
    """The store is locked by another process, or would start history afresh (exit 4)."""

    exit_code = ExitCode.REFUSED
    category = Category.REFUSED


class StoreDamaged(StoreError):
    """The store's file or its disk is damaged or full (exit 6)."""

    exit_code = ExitCode.STORE


class LimitExceeded(VigilError):
    code = "VIGIL-LIMIT"
    title = "an attempt went over a resource limit"
    remedy = "Make the step produce less, or raise the limit named in the message in vigil.toml."
    exit_code = ExitCode.RUN_FAILED


def explain(code: str) -> type[VigilError] | None:
    """The catalogue entry for ``code`` (case-insensitive), or None."""
    return CATALOG.get(code.upper())
