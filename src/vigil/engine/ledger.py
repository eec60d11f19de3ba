"""A person's decisions delivered twice: through the store, and through this machine.

An answer or a review decision reaches its run's driver through the store, and a writer of
the store can drop it: a rejection given in time would then be lost, and a question with
``on_timeout: approve`` would approve itself. So the command that decides also leaves the
signed decision in the run's private directory (``.vigil/logs/RUN/decisions/``, hidden from
every step). A driver on this machine reads that directory at each poll: a decision it has
not seen in the journal is appended by the driver itself (signed with its batch, so a store
that drops it too leaves a journal the next resume refuses), then judged like any other.
The statement inside is what is trusted; the file is only a second way in.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vigil.layout import logs_dir, write_private

MAX_BYTES = 64 * 1024


def ledger_dir(state_dir: Path, run_id: str) -> Path:
    """Where decisions for ``run_id`` wait for its driver on this machine."""
    return logs_dir(state_dir, run_id) / "decisions"


def deliver(state_dir: Path, run_id: str, kind: str, data: Mapping[str, Any]) -> None:
    """Leave one signed decision for the run's driver (named by its statement's nonce)."""
    statement = data.get("statement")
    nonce = ""
    if isinstance(statement, Mapping):
        with contextlib.suppress(ValueError, TypeError):
            nonce = str(json.loads(str(statement.get("payload")))["nonce"])
    if not nonce.isalnum():
        return  # unsigned: nothing a driver would act on
    body = json.dumps({"kind": str(kind), "data": dict(data)}, ensure_ascii=True)
    # A second way in, never the only one: a state directory this user cannot write (the
    # run is another user's) leaves the store as the way, as before.
    with contextlib.suppress(OSError):
        write_private(ledger_dir(state_dir, run_id) / f"{nonce}.json", body)


def pending(state_dir: Path, run_id: str) -> list[tuple[Path, str, dict[str, Any]]]:
    """The decisions waiting in the run's directory, oldest first; unreadable ones removed."""
    directory = ledger_dir(state_dir, run_id)
    try:
        entries = sorted(
            os.scandir(directory), key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns
        )
    except OSError:
        return []
    found: list[tuple[Path, str, dict[str, Any]]] = []
    for entry in entries:
        path = Path(entry.path)
        try:
            loaded = json.loads(_read_small(path).decode("ascii"))
            kind, data = str(loaded["kind"]), loaded["data"]
            if not isinstance(data, dict):
                raise ValueError("not a decision")
        except (OSError, ValueError, KeyError, TypeError):
            done(path)
            continue
        found.append((path, kind, data))
    return found


def _read_small(path: Path) -> bytes:
    """A regular file of at most MAX_BYTES, opened without following a link or waiting on
    a FIFO; ValueError for anything else."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            raise ValueError("not a decision file")
        return fh.read(MAX_BYTES + 1)


def done(path: Path) -> None:
    """The decision at ``path`` reached the journal (or never will)."""
    with contextlib.suppress(OSError):
        path.unlink()
