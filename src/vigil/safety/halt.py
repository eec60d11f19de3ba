"""The emergency stop: a halted project (or ``*``, every project) runs no privileged action.

A halt is recorded in two places:

* a row in the run store, so every process and machine driving runs against that store
  sees it at its next check; the row carries the halt's signed statement;
* a ledger of signed halt and unhalt statements in the user's config directory
  (``halts.jsonl``), which no step can reach.

Stopping is never a privilege, so a halt row is honoured whether or not it is signed (a
step that can write the store could as well delete its rows or fail its run). Lifting a
halt is a privilege: a project halted in the ledger stays halted until a *signed* unhalt
is appended there, so a step that deletes the store's row lifts nothing on this machine.
Not even a break-glass grant passes a halt.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from vigil.errors import ExitCode, VigilError
from vigil.safety.decisions import (
    HALT,
    UNHALT,
    DecisionRefused,
    sign_statement,
    verify_statement,
)
from vigil.safety.keys import SigningKey, TrustedKey

if TYPE_CHECKING:
    from vigil.store import Halt

ALL = "*"
LEDGER_FILE = "halts.jsonl"


class Halted(VigilError):
    code = "VIGIL-HALTED"
    title = "the project is halted"
    remedy = "Find out why (`vigil halt` was run with a reason); lift it with `vigil unhalt`."
    exit_code = ExitCode.REFUSED


class HaltStore(Protocol):
    """The part of the run store that holds halts."""

    def set_halt(
        self, project: str, reason: str, actor: str, at: float, statement: str | None = None
    ) -> None:
        """Record a halt."""

    def clear_halt(self, project: str) -> bool:
        """Lift a halt; whether there was one."""

    def halts(self) -> list[Halt]:
        """Every halt in force."""


class AuditRecorder(Protocol):
    """Where halts and unhalts go on the record: the workspace's audit log
    (:class:`vigil.engine.audit.Auditor`)."""

    def record(
        self, *, action: str, decision: str, actor: str | None = None, **fields: Any
    ) -> None:
        """Append one entry; raise if it cannot be written."""


@dataclass(frozen=True)
class LedgerHalt:
    """A halt the local ledger holds in force."""

    project: str
    reason: str
    actor: str
    at: float
    statement: str | None = None


class Ledger:
    """Signed halts and unhalts in the user's config directory, re-read when it changes."""

    def __init__(self, path: Path, trusted: list[TrustedKey]) -> None:
        self.path = path
        self.trusted = trusted
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._halts: dict[str, LedgerHalt] = {}
        self.refused: list[str] = []

    def append(self, statement: dict[str, str]) -> None:
        """Add one signed statement, durably."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            line = (json.dumps(statement, separators=(",", ":")) + "\n").encode()
            if os.write(fd, line) != len(line):
                raise OSError("short write to the halt ledger")
            os.fsync(fd)
        finally:
            os.close(fd)

    def in_force(self) -> dict[str, LedgerHalt]:
        """Project to the halt the ledger holds for it (one ``stat`` when unchanged)."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._stamp, self._halts = None, {}
                return {}
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp != self._stamp:
                self._halts, self.refused = self._read()
                self._stamp = stamp
            return dict(self._halts)

    def _read(self) -> tuple[dict[str, LedgerHalt], list[str]]:
        halts: dict[str, LedgerHalt] = {}
        refused: list[str] = []
        for raw in self.path.read_text().splitlines():
            if not raw.strip():
                continue
            try:
                statement = json.loads(raw)
                payload = json.loads(statement["payload"])
                kind, project = str(payload["kind"]), str(payload["project"])
            except (ValueError, KeyError, TypeError):
                refused.append("a damaged line in the halt ledger")
                continue
            try:
                stmt = verify_statement(
                    statement,
                    self.trusted,
                    kind=kind if kind in (HALT, UNHALT) else HALT,
                    project=project,
                    run=None,
                    subject=project,
                    check_expiry=False,
                )
            except DecisionRefused as exc:
                if kind == UNHALT:
                    refused.append(f"unhalt of {project} refused: {exc.cause}")
                    continue
                # Fail-safe: a halt that does not verify still stops the project.
                halts[project] = LedgerHalt(project, "unverified halt", "unknown", 0.0, raw)
                continue
            if stmt.kind == HALT:
                reason = str(stmt.answer.get("reason", ""))
                halts[project] = LedgerHalt(project, reason, stmt.by, stmt.at, raw)
            else:
                halts.pop(project, None)
        return halts, refused


def ledger_path(config_dir: Path) -> Path:
    """The halt ledger in a user config directory."""
    return config_dir / LEDGER_FILE


def halt(
    store: HaltStore,
    project: str,
    reason: str,
    actor: str,
    at: float | None = None,
    *,
    audit: AuditRecorder,
    key: SigningKey | None = None,
    ledger: Ledger | None = None,
) -> None:
    """Stop every privileged action of ``project`` (``*`` for all) until unhalted, and
    put the halt in the audit log.

    The halt takes effect first: stopping never waits for the record, and a log that
    cannot be written still raises once the halt is in force.
    """
    if not reason.strip():
        raise Halted("a halt needs a reason", "Give --reason saying why.")
    when = time.time() if at is None else at
    statement = None
    if key is not None:
        signed = sign_statement(
            key,
            kind=HALT,
            project=project,
            run=None,
            subject=project,
            task=None,
            answer={"reason": reason.strip()},
            by=actor,
            now=when,
        )
        statement = json.dumps(signed, separators=(",", ":"))
        if ledger is not None:
            ledger.append(signed)
    store.set_halt(project, reason.strip(), actor, when, statement)
    audit.record(action="halt", decision="allow", actor=actor, reason=f"{project}: {reason}")


def unhalt(
    store: HaltStore,
    project: str,
    *,
    audit: AuditRecorder,
    key: SigningKey | None = None,
    actor: str = "",
    ledger: Ledger | None = None,
) -> bool:
    """Lift the halt of ``project``; whether there was one (a lift goes in the audit log).

    With a ``ledger``, the lift is a signed unhalt appended there first; the ledger's halt
    is lifted by nothing else.
    """
    held = ledger is not None and project in ledger.in_force()
    if ledger is not None:
        if key is None:
            raise DecisionRefused("an unhalt must be signed", "Run `vigil keys init` first.")
        ledger.append(
            sign_statement(
                key,
                kind=UNHALT,
                project=project,
                run=None,
                subject=project,
                task=None,
                answer={},
                by=actor,
            )
        )
    lifted = store.clear_halt(project) or held
    if lifted:
        audit.record(action="unhalt", decision="allow", actor=actor, reason=project)
    return lifted


def halt_of(
    store: HaltStore, project: str, ledger: Ledger | None = None
) -> Halt | LedgerHalt | None:
    """The halt that stops ``project`` (its own or the global one), or None."""
    for item in store.halts():
        if item.project in (project, ALL):
            return item
    if ledger is not None:
        found = ledger.in_force()
        for name in (project, ALL):
            if name in found:
                return found[name]
    return None


def check_not_halted(store: HaltStore, project: str, ledger: Ledger | None = None) -> None:
    """Raise :class:`Halted` if ``project`` or every project is halted."""
    item = halt_of(store, project, ledger)
    if item is not None:
        scope = "every project" if item.project == ALL else f"project '{project}'"
        when = datetime.fromtimestamp(float(item.at), UTC).isoformat(timespec="seconds")
        raise Halted(f"{scope} was halted by {item.actor} at {when}: {item.reason}")
