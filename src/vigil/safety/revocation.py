"""The revocation list: grants (and tokens derived from them) that must never work again.

A JSON Lines file, ``<user config>/revoked.jsonl``, appended under an exclusive lock. Each
line names a grant id and the Biscuit revocation id of the grant's own last block. A token
attenuated from a revoked grant carries that block's revocation id too, so revoking a grant
revokes everything derived from it; revoking a derived grant leaves its parent alone.

The list is re-read whenever the file changes (one ``stat`` per check), so a grant revoked
during a run is refused at the run's next privileged action.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vigil.config import user_config_dir
from vigil.errors import ExitCode, VigilError

REVOKED_FILE = "revoked.jsonl"


class RevocationListInvalid(VigilError):
    code = "VIGIL-REVOCATIONS-INVALID"
    title = "the revocation list is damaged"
    remedy = "Restore the file named from a backup; until then every grant is refused."
    exit_code = ExitCode.REFUSED


@dataclass(frozen=True)
class Revocations:
    """Revoked grant ids and Biscuit revocation ids."""

    grant_ids: frozenset[str] = field(default_factory=frozenset)
    revocation_ids: frozenset[str] = field(default_factory=frozenset)

    def revoked(self, grant_ids: tuple[str, ...], revocation_ids: tuple[str, ...]) -> bool:
        """Whether any of these grant ids or token revocation ids is on the list."""
        return any(g in self.grant_ids for g in grant_ids) or any(
            r in self.revocation_ids for r in revocation_ids
        )


_cache: dict[Path, tuple[tuple[int, int, int], Revocations]] = {}


def revocations_path(base: Path | None = None) -> Path:
    """Where the revocation list lives."""
    return (base or user_config_dir()) / REVOKED_FILE


def load_revocations(base: Path | None = None) -> Revocations:
    """The current list; cached until the file changes. A damaged list refuses everything."""
    path = revocations_path(base)
    try:
        st = path.stat()
    except FileNotFoundError:
        return Revocations()
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    grants: set[str] = set()
    ids: set[str] = set()
    text = path.read_text()
    lines = text.split("\n")
    # A crash mid-append can leave a partial last line; it revoked nothing yet.
    complete = lines[:-1]
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            grants.add(str(entry["grant"]))
            if entry.get("revocation_id"):
                ids.add(str(entry["revocation_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise RevocationListInvalid(f"{path}:{number} is not a revocation entry") from exc
    result = Revocations(frozenset(grants), frozenset(ids))
    _cache[path] = (key, result)
    return result


def revoke(grant_id: str, revocation_id: str | None, base: Path | None = None) -> None:
    """Append ``grant_id`` (and its block's revocation id) to the list, durably."""
    path = revocations_path(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(
        {
            "grant": grant_id,
            "revocation_id": revocation_id,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Drop a torn last line (a crash mid-append) so this entry starts on a line of its own.
        content = path.read_bytes()
        if content and not content.endswith(b"\n"):
            os.ftruncate(fd, content.rfind(b"\n") + 1)
        os.write(fd, line.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
