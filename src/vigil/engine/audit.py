"""The engine's side of the audit log: who decided what, appended as it happens.

Every privileged decision (grant checks), commit, rollback, review and answer is
recorded through :class:`Auditor`; at each run's end the log is sealed by a checkpoint
signed with the vigil key, when one exists (`vigil keys init`).
"""

from __future__ import annotations

import threading
from typing import Any

from vigil.config import Config, whoami
from vigil.safety import AuditLog, audit_path
from vigil.safety.keys import active_key


def _actor() -> str:
    return whoami()


class Auditor:
    """Appends to the workspace's audit log; thread-safe, never raises into the caller's path."""

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
        """Append one entry."""
        with self._lock:
            self.log.append(actor=actor or _actor(), action=action, decision=decision, **fields)

    def seal(self) -> None:
        """Checkpoint everything so far, if there is a key to sign with."""
        if self.log.key is None:
            return
        with self._lock:
            self.log.checkpoint()


def audit_event(config: Config, **fields: Any) -> None:
    """Append one entry to ``config``'s audit log (for one-off commands)."""
    Auditor(config).record(**fields)
