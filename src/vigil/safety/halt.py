"""The emergency stop: a halted project (or ``*``, every project) runs no privileged action.

The halt is a row in the run store, so every process and machine driving runs against that
store sees it at its next check. Not even a break-glass grant passes a halt.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

from vigil.errors import ExitCode, VigilError

ALL = "*"


class Halted(VigilError):
    code = "VIGIL-HALTED"
    title = "the project is halted"
    remedy = "Find out why (`vigil halt` was run with a reason); lift it with `vigil unhalt`."
    exit_code = ExitCode.REFUSED


class HaltStore(Protocol):
    """The part of the run store that holds halts."""

    def set_halt(self, project: str, reason: str, actor: str, at: float) -> Any:
        """Record a halt."""

    def clear_halt(self, project: str) -> bool:
        """Lift a halt; whether there was one."""

    def halts(self) -> list[Any]:
        """Every halt in force (objects with project, reason, actor, at)."""


def halt(store: HaltStore, project: str, reason: str, actor: str, at: float | None = None) -> None:
    """Stop every privileged action of ``project`` (``*`` for all) until unhalted."""
    if not reason.strip():
        raise Halted("a halt needs a reason", "Give --reason saying why.")
    store.set_halt(project, reason.strip(), actor, time.time() if at is None else at)


def unhalt(store: HaltStore, project: str) -> bool:
    """Lift the halt of ``project``; whether there was one."""
    return store.clear_halt(project)


def halt_of(store: HaltStore, project: str) -> Any | None:
    """The halt that stops ``project`` (its own or the global one), or None."""
    for item in store.halts():
        if item.project in (project, ALL):
            return item
    return None


def check_not_halted(store: HaltStore, project: str) -> None:
    """Raise :class:`Halted` if ``project`` or every project is halted."""
    item = halt_of(store, project)
    if item is not None:
        scope = "every project" if item.project == ALL else f"project '{project}'"
        when = datetime.fromtimestamp(float(item.at), UTC).isoformat(timespec="seconds")
        raise Halted(f"{scope} was halted by {item.actor} at {when}: {item.reason}")
