"""The journal vouched for: every event vigil's own processes write is signed.

What a run does next is folded from its journal, and anything that can write the store
could append to it: an ``attempt.finished`` that never ran (so a changeset nobody
validated lands), a ``changeset.committing`` for changes held for review (so a resume
finishes the "commit"), a changeset whose pre-images were edited (so a rollback writes
what the attacker chose), or a ``task.finished`` for an approval nobody gave.

So the processes that drive a run (the driver, ``vigil run`` creating it, ``vigil cancel``
closing it) sign what they append, with the key that signs the run's seal (the starting
person's, in the user's config directory, out of every step's reach):

- every event of a batch carries ``_n``, its number among the run's signed events
  (0, 1, 2, …: none missing, none repeated, none out of order);
- the last event of the batch carries ``_sig``: an Ed25519 signature over the run id and
  each event's ``(n, kind, time, data)`` in the batch, ``{"signer": hex, "sig": base64}``
  (the time too: an escalation's timeout, a retry's backoff run from it).

One signature per batch, not per event: a driver appends a loop's worth of events in one
transaction (see ``Driver._flush``), so signing costs one Ed25519 signature (tens of µs)
per transaction.

Only four kinds may be appended unsigned, by other processes while a driver holds the
run (:data:`EXTERNAL_KINDS`): a cancel request, a person's answer or review decision
(each carrying its own signed statement, verified by :mod:`vigil.engine.decisions`), and
a rollback's record (which changes no state). Before a run's journal is acted on again
(``vigil resume``, an approval, a rollback, a cancel that settles the run),
:func:`verify_journal` checks every other event; a missing, forged, reordered or
removed signed event refuses the whole run with VIGIL-RUN-TAMPERED. A store writer can
stop a run from going on, as it could by deleting it; it cannot make vigil act.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.engine import events as ev
from vigil.errors import RunTampered, VigilError
from vigil.layout import logs_dir, open_private, private_dir
from vigil.safety.keys import SigningKey, TrustedKey, trusted_keys

if TYPE_CHECKING:
    from vigil.engine.audit import Auditor
    from vigil.store import EventEntry, RunStore

DOMAIN = b"vigil-journal-v1\n"
NUMBER = "_n"
SIGNATURE = "_sig"
META = frozenset({NUMBER, SIGNATURE})

EXTERNAL_KINDS = frozenset(
    {ev.CANCEL_REQUESTED, ev.ESCALATION_ANSWERED, ev.REVIEW_DECIDED, ev.ROLLBACK_DONE}
)
"""The kinds other processes append while a driver holds the run; they may go unsigned."""


def _digest(run_id: str, number: int, kind: str, at: float, data: Mapping[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k not in META}
    text = json.dumps(
        [run_id, number, str(kind), float(at), body],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _message(run_id: str, digests: Sequence[str]) -> bytes:
    return DOMAIN + json.dumps([run_id, list(digests)], separators=(",", ":")).encode()


@dataclass(frozen=True)
class Head:
    """How far a journal's signed events go: their count, and a hash chained over them.

    ``chain`` is ``sha256(previous chain || event digest)`` over every signed event in
    order, starting from 64 zeros: one value that changes if any signed event does.
    """

    count: int = 0
    chain: str = "0" * 64

    def extended(self, digests: Iterable[str]) -> Head:
        """The head after events with these digests."""
        count, chain = self.count, self.chain
        for digest in digests:
            chain = hashlib.sha256(bytes.fromhex(chain) + bytes.fromhex(digest)).hexdigest()
            count += 1
        return Head(count, chain)


def head_file(state_dir: Path, run_id: str) -> Path:
    """Where this machine keeps the head of what it wrote to the run's journal.

    Signatures show that no signed event was changed, added or removed *between* others;
    they cannot show that the newest batches were not cut off the end. So each writer also
    notes the journal's :class:`Head` in the private state directory, out of the store
    writer's reach. A journal whose signed events do not reach that head, or reach it by
    another chain, is refused; the events up to it, being exactly what this machine wrote,
    need no signature check (a resume of a long run hashes its journal once and checks
    only the signatures of batches written elsewhere). Written after the append (never
    ahead of the journal) and without fsync: after a power cut it may lag, which only
    weakens the check, never fails an honest journal.
    """
    return logs_dir(state_dir, run_id) / "journal.head"


HEAD_WIDTH = 128
"""Bytes of a head record: JSON padded with spaces to a fixed width and a newline."""


def note_head(path: Path, head: Head) -> None:
    """Write ``head`` to ``path`` in place: one ``pwrite`` of :data:`HEAD_WIDTH` bytes.

    Not a truncate and rewrite: on ext4 truncating a file that holds data makes the next
    close wait for the new data to reach the disk (``auto_da_alloc``), about as long as
    the journal's own commit, once per batch. A record of fixed width written at offset 0
    replaces the last one whole (one write within one disk sector), so a crash leaves the
    old head or the new one.
    """
    text = json.dumps({"count": head.count, "chain": head.chain})
    record = text.ljust(HEAD_WIDTH - 1).encode("ascii") + b"\n"
    if len(record) != HEAD_WIDTH:
        raise ValueError(f"a journal head does not fit {HEAD_WIDTH} bytes")
    private_dir(path.parent)
    # Never waits on a FIFO put there (ENXIO), never writes a device: OSError instead.
    fd = open_private(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_size != HEAD_WIDTH:
            os.ftruncate(fd, 0)  # a head of another shape (an older vigil's), or a new file
        os.pwrite(fd, record, 0)
    finally:
        os.close(fd)


def read_head(path: Path | None) -> Head | None:
    """The head noted in ``path``; None when there is none (another machine wrote the run)."""
    if path is None:
        return None
    try:
        # Not through a link, never waiting on a FIFO: anything but a regular file is no head.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = os.read(fd, 4 * HEAD_WIDTH).decode("ascii")
        finally:
            os.close(fd)
        noted = json.loads(text)
        head = Head(int(noted["count"]), str(noted["chain"]))
        bytes.fromhex(head.chain)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return head if head.count > 0 and len(head.chain) == 64 else None


class JournalSigner:
    """Signs the batches one process appends to one run, numbering their events."""

    def __init__(
        self,
        run_id: str,
        key: SigningKey,
        start: Head | None = None,
        *,
        head: Path | None = None,
    ) -> None:
        self.run_id = run_id
        self.key = key
        self.at = start or Head()
        self.head = head
        self._digests: list[str] = []

    @property
    def next_number(self) -> int:
        """The number the next signed event gets."""
        return self.at.count

    def sign(self, batch: Iterable[tuple[str, Mapping[str, Any]]], at: float) -> list[EventEntry]:
        """``batch`` as it is to be appended at time ``at`` (the time the store records for
        each of its events, signed with them: an escalation's timeout runs from it):
        numbered, the last event carrying the signature.

        The numbers do not advance until :meth:`appended` says the batch is in the journal:
        a batch whose append failed is signed again, with the same numbers, next time.
        """
        out: list[EventEntry] = []
        digests: list[str] = []
        last: dict[str, Any] = {}
        for kind, data in batch:
            number = self.next_number + len(out)
            last = {k: v for k, v in data.items() if k not in META}
            last[NUMBER] = number
            digests.append(_digest(self.run_id, number, kind, at, last))
            out.append((kind, last))
        if out:
            signature = self.key.sign(_message(self.run_id, digests))
            last[SIGNATURE] = {
                "signer": self.key.public_hex,
                "sig": base64.b64encode(signature).decode(),
            }
        self._digests = digests
        return out

    def appended(self) -> None:
        """The batch :meth:`sign` returned last is in the journal."""
        if not self._digests:
            return
        self.at = self.at.extended(self._digests)
        self._digests = []
        if self.head is not None:
            # On failure the check it feeds only gets weaker; the journal itself is whole.
            with contextlib.suppress(OSError):
                note_head(self.head, self.at)

    def append(
        self,
        store: RunStore,
        batch: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        at: float,
        **summary: Any,
    ) -> int:
        """Sign ``batch`` and append it to the run's journal at ``at``; returns the last seq."""
        entries = self.sign(batch, at)
        last = store.append(self.run_id, entries, at=at, **summary)
        self.appended()
        return last


def _tampered(run_id: str, event: ev.Event, why: str) -> RunTampered:
    return RunTampered(f"run {run_id}: event {event.seq} ({event.kind}) {why}")


def verify_journal(
    run_id: str,
    journal: Sequence[ev.Event],
    trusted: Sequence[TrustedKey],
    *,
    noted: Head | None = None,
) -> Head:
    """Check that every event vigil's processes wrote is theirs, whole and in order, and
    that the journal reaches the head this machine ``noted`` by the same chain (see
    :func:`head_file`).

    Returns the journal's head (its count is the next signer's first number); raises
    RunTampered, naming the first event that fails, otherwise.
    """
    keys = {k.public_hex: k for k in trusted}
    at = Head()
    pending: list[tuple[ev.Event, str]] = []
    for event in journal:
        data = event.data
        number = data.get(NUMBER)
        if number is None:
            if event.kind in EXTERNAL_KINDS:
                continue
            raise _tampered(run_id, event, "carries no signature of a vigil process")
        if (
            not isinstance(number, int)
            or isinstance(number, bool)
            or number != at.count + len(pending)
        ):
            raise _tampered(
                run_id, event, f"is signed event {number!r}, not {at.count + len(pending)}"
            )
        try:
            pending.append((event, _digest(run_id, number, event.kind, event.at, data)))
        except (TypeError, ValueError):
            raise _tampered(run_id, event, "holds data that cannot have been signed") from None
        seal = data.get(SIGNATURE)
        if seal is None:
            continue
        digests = [d for _, d in pending]
        after = at.extended(digests)
        # The batch that reaches the noted head must end there, by the same chain: then
        # every signed event up to it is what this machine wrote, and needs no signature check.
        if noted is not None and at.count < noted.count <= after.count and after != noted:
            raise _tampered(run_id, event, "ends a batch other than the one this machine wrote")
        if noted is None or after.count > noted.count:
            _check_seal(run_id, event, seal, digests, keys)
        at = after
        pending = []
    if pending:
        raise _tampered(run_id, pending[-1][0], "ends a batch that no signature covers")
    if noted is not None and at.count < noted.count:
        raise RunTampered(
            f"run {run_id}: the journal holds {at.count} signed events, but {noted.count} "
            "were written to it from this machine (its newest events were removed)"
        )
    return at


def _check_seal(
    run_id: str,
    event: ev.Event,
    seal: Any,
    digests: list[str],
    keys: Mapping[str, TrustedKey],
) -> None:
    if not isinstance(seal, Mapping):
        raise _tampered(run_id, event, "carries a malformed signature")
    try:
        signer = str(seal["signer"])
        signature = base64.b64decode(str(seal["sig"]), validate=True)
    except (KeyError, ValueError):
        raise _tampered(run_id, event, "carries a malformed signature") from None
    key = keys.get(signer)
    if key is None:
        raise _tampered(run_id, event, f"is signed by key {signer[:16]}…, which is not trusted")
    if not key.verify(signature, _message(run_id, digests)):
        raise _tampered(
            run_id, event, "does not match its signature (it, or an event before it, was changed)"
        )


def checked_journal(
    run_id: str,
    journal: Sequence[ev.Event],
    *,
    auditor: Auditor | None = None,
    action: str = "run.resume",
    actor: str = "vigil",
    head: Path | None = None,
) -> Head:
    """:func:`verify_journal` against the keys this user trusts and the head noted in
    ``head``; a refusal is audited."""
    try:
        trusted = trusted_keys()
    except VigilError:
        trusted = []  # an unreadable list of trusted keys trusts nobody
    try:
        return verify_journal(run_id, journal, trusted, noted=read_head(head))
    except RunTampered as exc:
        if auditor is not None:
            auditor.record(
                action=action, decision="deny", actor=actor, run=run_id, reason=exc.cause
            )
        raise
