"""The engine's side of the audit log: who decided what, appended as it happens.

Every privileged decision (grant checks), commit, rollback, review and answer is
recorded through :class:`Auditor`; at each run's end the log is sealed by a checkpoint
signed with the vigil key, when one exists (`vigil keys init`).
"""

from __future__ import annotations

import threading
from typing import Any

from vigil.config import Config, whoami
from vigil.errors import TransientError
from vigil.safety import AuditLog, audit_path
from vigil.safety.keys import active_key


def _actor() -> str:
    return whoami()


class AuditUnwritable(TransientError):
    code = "VIGIL-AUDIT-UNWRITABLE"
    title = "the audit log could not be written, so the action it records did not happen"
    remedy = "Free disk space or fix the permissions of .vigil/audit, then `vigil resume RUN`."


class Auditor:
    """Appends to the workspace's audit log; thread-safe.

    A decision that cannot be recorded is not acted on: :meth:`record` raises
    :class:`AuditUnwritable`, and every privileged path records before it acts, so a full
    disk fails the action (closed) rather than letting it happen off the record.
    """

    def __init__(self, config: Config, *, redact: Any = None) -> None:
        self.path = audit_path(config.state_dir)
        try:
            key = active_key()
        except Exception:
            key = None  # no key yet: entries are hash-linked but not sealed
        sync = str(config.data.get("audit", {}).get("fsync", "true")).lower() != "false"
        self.log = AuditLog(self.path, key=key, fsync=sync, redact=redact)
        self._lock = threading.Lock()

    def record(
        self, *, action: str, decision: str, actor: str | None = None, **fields: Any
    ) -> None:
        """Append one entry, or raise :class:`AuditUnwritable` (the entry may be missing)."""
        with self._lock:
            try:
                self.log.append(actor=actor or _actor(), action=action, decision=decision, **fields)
            except OSError as exc:
                raise AuditUnwritable(f"cannot append to {self.path}: {exc}") from exc

    def seal(self) -> None:
        """Checkpoint everything so far, if there is a key to sign with."""
        if self.log.key is None:
            return
        with self._lock:
            self.log.checkpoint()


def audit_event(config: Config, **fields: Any) -> None:
    """Append one entry to ``config``'s audit log (for one-off commands)."""
    Auditor(config).record(**fields)
