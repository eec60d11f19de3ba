"""The audit log: an append-only, hash-linked, Merkle-sealed record of privileged decisions.

Files (default ``<state dir>/audit/``)::

    log.jsonl            one JSON object per line, the entry; its exact bytes are the leaf
    log.checkpoints      one JSON object per line: a signed checkpoint note and resume hints

Each entry holds ``seq`` (1, 2, …), ``time``, ``actor``, ``run``, ``task``, ``action``,
``capability``, ``grant``, ``decision``, ``reason``, ``prev`` (hex RFC 6962 leaf hash of the
previous line, zeros for the first) and ``sealed`` (tree size of the newest checkpoint when
it was written, so removing checkpoints is noticed). Every ``checkpoint_every`` entries, and
whenever :meth:`AuditLog.checkpoint` is called, the Merkle root over all entries is signed
with the vigil key as a C2SP checkpoint. Writers hold an exclusive ``flock`` on the log, so
several processes can append; an append reads only the log's last line.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vigil.errors import TransientError
from vigil.layout import open_private, private_dir
from vigil.safety import merkle, note
from vigil.safety.keys import SigningKey

ORIGIN = "vigil-audit"
GENESIS = "0" * 64
FIELDS = (
    "seq",
    "time",
    "actor",
    "run",
    "task",
    "action",
    "capability",
    "grant",
    "decision",
    "reason",
    "prev",
    "sealed",
)


class AuditFailed(TransientError):
    code = "VIGIL-AUDIT-UNWRITABLE"
    title = "an audit entry could not be written, so the action it records was not taken"
    remedy = "Free disk space or fix the permissions of .vigil/audit, then `vigil resume RUN`."


def audit_path(state_dir: Path) -> Path:
    """The default audit log of a workspace's state directory."""
    return state_dir / "audit" / "log.jsonl"


def checkpoints_path(log_path: Path) -> Path:
    """The checkpoint file kept next to ``log_path``."""
    return log_path.with_suffix(".checkpoints")


@dataclass(frozen=True)
class AuditEntry:
    """One appended entry, as written."""

    seq: int
    line: bytes

    @property
    def data(self) -> dict[str, Any]:
        """The entry's fields."""
        result: dict[str, Any] = json.loads(self.line)
        return result


def _last_line(fd: int, size: int) -> bytes:
    """The last line of a file that ends with a newline, without the newline."""
    pos = size - 1
    buf = b""
    while pos > 0:
        start = max(0, pos - 4096)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        cut = buf.rfind(b"\n")
        if cut != -1:
            return buf[cut + 1 :]
    return buf


def _last_json_line(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        raw = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
    finally:
        os.close(fd)
    lines = [ln for ln in raw.split(b"\n") if ln.strip()]
    if not lines:
        return None
    try:
        value: dict[str, Any] = json.loads(lines[-1])
    except ValueError:
        return None
    return value


class AuditLog:
    """Appends entries and seals them with signed checkpoints."""

    def __init__(
        self,
        path: Path,
        *,
        key: SigningKey | None = None,
        origin: str = ORIGIN,
        checkpoint_every: int = 256,
        fsync: bool = True,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.path = path
        self.checkpoints_path = checkpoints_path(path)
        self.key = key
        self.origin = origin
        self.checkpoint_every = checkpoint_every
        self.fsync = fsync
        self.redact = redact

    @contextmanager
    def _locked(self) -> Iterator[int]:
        private_dir(self.path.parent)
        fd = open_private(self.path, os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def append(
        self,
        *,
        actor: str,
        action: str,
        decision: str,
        reason: str = "",
        run: str | None = None,
        task: str | None = None,
        capability: str | None = None,
        grant: str | None = None,
        time: datetime | None = None,
    ) -> AuditEntry:
        """Append one entry (durably unless ``fsync=False``); checkpoint every N entries."""
        if self.redact is not None:
            reason = self.redact(reason)
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A crash mid-write left a partial line; it was never acknowledged.
                size = self._drop_torn_tail(fd, size)
            seq, prev = 1, GENESIS
            if size:
                last = _last_line(fd, size)
                seq = int(json.loads(last)["seq"]) + 1
                prev = merkle.leaf_hash(last).hex()
            sealed_entry = _last_json_line(self.checkpoints_path)
            values = {
                "seq": seq,
                "time": (time or datetime.now(UTC)).isoformat(timespec="microseconds"),
                "actor": actor,
                "run": run,
                "task": task,
                "action": action,
                "capability": capability,
                "grant": grant,
                "decision": decision,
                "reason": reason,
                "prev": prev,
                "sealed": int(sealed_entry["size"]) if sealed_entry else 0,
            }
            line = json.dumps(values, separators=(",", ":")).encode()
            self._write_whole(fd, size, line + b"\n")
            if self.key is not None and seq % self.checkpoint_every == 0:
                self._checkpoint_locked(fd, self.key)
        return AuditEntry(seq, line)

    def _write_whole(self, fd: int, size: int, data: bytes) -> None:
        """Write ``data`` at the end and make it durable, or leave the log as it was.

        A short write (a full disk) or a failed ``fsync`` is undone and raised: an entry
        either is wholly in the log and durable, or the caller learns it is not.
        """
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(28, "No space left on device (short write)")
            if self.fsync:
                os.fsync(fd)
        except OSError:
            # If even this fails, the next append drops the torn line and verify reports it.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise

    @staticmethod
    def _drop_torn_tail(fd: int, size: int) -> int:
        start = max(0, size - (1 << 20))
        data = os.pread(fd, size - start, start)
        keep = start + data.rfind(b"\n") + 1 if b"\n" in data else 0
        os.ftruncate(fd, keep)
        return keep

    def checkpoint(self, key: SigningKey | None = None) -> note.Checkpoint:
        """Seal every entry so far with a checkpoint signed by ``key`` (or the log's key)."""
        signer = key or self.key
        if signer is None:
            raise ValueError("a checkpoint needs a signing key")
        with self._locked() as fd:
            return self._checkpoint_locked(fd, signer)

    def _checkpoint_locked(self, fd: int, key: SigningKey) -> note.Checkpoint:
        frontier, offset = self._resume_point()
        size = os.fstat(fd).st_size
        data = os.pread(fd, size - offset, offset)
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.split(b"\n")[:-1]:
            frontier.add(merkle.leaf_hash(line))
        root = frontier.root()
        text = note.sign(note.checkpoint_text(self.origin, frontier.size, root), key)
        record = {
            "size": frontier.size,
            "note": text,
            "offset": offset + len(complete),
            "frontier": frontier.to_hex(),
        }
        with os.fdopen(open_private(self.checkpoints_path, os.O_WRONLY | os.O_APPEND), "a") as fh:
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        return note.Checkpoint(self.origin, frontier.size, root, key.public_hex)

    def _resume_point(self) -> tuple[merkle.Frontier, int]:
        """Where the last checkpoint left off, if its hints are sound; else the start."""
        last = _last_json_line(self.checkpoints_path)
        if last is None:
            return merkle.Frontier(), 0
        try:
            frontier = merkle.Frontier.from_hex(int(last["size"]), list(last["frontier"]))
            root_line = str(last["note"]).split("\n")[2]
            if frontier.root().hex() != _b64_to_hex(root_line):
                raise ValueError("hint does not match the signed root")
            return frontier, int(last["offset"])
        except (KeyError, ValueError, TypeError, IndexError):
            return merkle.Frontier(), 0


def _b64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every parseable entry of the log, in order (for show and export; not a verification)."""
    entries: list[dict[str, Any]] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return entries
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries
