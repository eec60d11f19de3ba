"""The engine's side of the audit log: who decided what, appended as it happens.

Every privileged decision (grant checks, halts, a person's decisions and their refusals),
commit, rollback and review is recorded through :class:`Auditor`. Each entry is sealed at
once by a checkpoint signed with the vigil key (when one exists, `vigil keys init`), and
the sealed size and root are also written to the run store, a second record that `vigil
audit verify` compares the log with: a cut or edited tail, or a rolled-back log or store,
shows.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from vigil.config import Config, whoami
from vigil.safety import AuditLog, audit_path
from vigil.safety import merkle as _merkle
from vigil.safety.audit import AuditFailed
from vigil.safety.keys import active_key

if TYPE_CHECKING:
    from vigil.store import RunStore


def _actor() -> str:
    return whoami()


def log_id(config: Config) -> str:
    """The name under which the store keeps this workspace's audit head."""
    return str(audit_path(config.state_dir).resolve())


class Auditor:
    """Appends to the workspace's audit log and seals each entry; thread-safe.

    :meth:`record` returns only once the entry is durably in the log; when it cannot be
    written it raises :class:`AuditFailed` and the caller must not take the action (an
    action is never left un-audited). A failure to seal or to update the store's record
    after the entry is durable is not hidden either: it raises too.
    """

    def __init__(
        self, config: Config, *, redact: Any = None, store: RunStore | None = None
    ) -> None:
        self.config = config
        self.path = audit_path(config.state_dir)
        try:
            key = active_key()
        except Exception:
            key = None  # no key yet: entries are hash-linked, and the store keeps the head
        sync = str(config.data.get("audit", {}).get("fsync", "true")).lower() != "false"
        self.log = AuditLog(self.path, key=key, fsync=sync, redact=redact)
        self.store = store
        self._lock = threading.Lock()

    def record(
        self, *, action: str, decision: str, actor: str | None = None, **fields: Any
    ) -> None:
        """Append one entry and seal it; raise :class:`AuditFailed` if that fails."""
        with self._lock:
            try:
                self.log.append(actor=actor or _actor(), action=action, decision=decision, **fields)
            except Exception as exc:
                raise AuditFailed(f"could not append to {self.path}: {exc}") from exc
            self._seal_locked()

    def seal(self) -> None:
        """Checkpoint everything so far and record the head in the store."""
        with self._lock:
            self._seal_locked()

    def _seal_locked(self) -> None:
        try:
            if self.log.key is not None:
                ckpt = self.log.checkpoint()
                size, root = ckpt.size, ckpt.root.hex()
            else:
                size, root = _whole_root(self.path)
            self._write_head(size, root)
        except AuditFailed:
            raise
        except Exception as exc:
            raise AuditFailed(f"could not seal {self.path}: {exc}") from exc

    def _write_head(self, size: int, root: str) -> None:
        if self.store is not None:
            self.store.set_audit_head(log_id(self.config), size, root, time.time())
            return
        from vigil.store import open_store

        with open_store(self.config.database_url) as store:
            store.set_audit_head(log_id(self.config), size, root, time.time())


def _whole_root(path: Any) -> tuple[int, str]:
    """Size and Merkle root of every complete line of the log (no key to checkpoint with)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0, _merkle.root_of([]).hex()
    lines = raw.split(b"\n")[:-1]
    return len(lines), _merkle.root_of([_merkle.leaf_hash(x) for x in lines]).hex()


def audit_event(config: Config, store: RunStore | None = None, **fields: Any) -> None:
    """Append one entry to ``config``'s audit log (for one-off commands)."""
    Auditor(config, store=store).record(**fields)
