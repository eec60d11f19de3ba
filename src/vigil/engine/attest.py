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
  each event's ``(n, kind, data)`` in the batch, ``{"signer": hex, "sig": base64}``.

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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.engine import events as ev
from vigil.errors import RunTampered, VigilError
from vigil.layout import logs_dir, write_private
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


def _digest(run_id: str, number: int, kind: str, data: Mapping[str, Any]) -> str:
    body = {k: v for k, v in data.items() if k not in META}
    text = json.dumps(
        [run_id, number, str(kind), body],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _message(run_id: str, digests: Sequence[str]) -> bytes:
    return DOMAIN + json.dumps([run_id, list(digests)], separators=(",", ":")).encode()


def head_file(state_dir: Path, run_id: str) -> Path:
    """Where this machine keeps how many signed events it wrote to the run's journal.

    Signatures show that no signed event was changed, added or removed *between* others;
    they cannot show that the newest batches were not cut off the end. So each writer also
    notes the count in the private state directory, out of the store writer's reach, and
    a journal holding fewer signed events than noted is refused. Written after the append
    (never ahead of the journal) and without fsync: after a power cut it may lag, which
    only weakens the check, never fails an honest journal.
    """
    return logs_dir(state_dir, run_id) / "journal.head"


def read_head(path: Path | None) -> int:
    """The count noted in ``path``; 0 when there is none (another machine wrote the run)."""
    if path is None:
        return 0
    try:
        return max(0, int(path.read_text(encoding="ascii").strip() or 0))
    except (OSError, ValueError):
        return 0


class JournalSigner:
    """Signs the batches one process appends to one run, numbering their events."""

    def __init__(
        self, run_id: str, key: SigningKey, next_number: int = 0, *, head: Path | None = None
    ) -> None:
        self.run_id = run_id
        self.key = key
        self.next_number = next_number
        self.head = head

    def sign(self, batch: Iterable[tuple[str, Mapping[str, Any]]]) -> list[EventEntry]:
        """``batch`` as it is to be appended: numbered, the last event carrying the signature.

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
            digests.append(_digest(self.run_id, number, kind, last))
            out.append((kind, last))
        if out:
            signature = self.key.sign(_message(self.run_id, digests))
            last[SIGNATURE] = {
                "signer": self.key.public_hex,
                "sig": base64.b64encode(signature).decode(),
            }
        return out

    def appended(self, count: int) -> None:
        """The last signed batch, of ``count`` events, is in the journal."""
        self.next_number += count
        if self.head is not None and count:
            # On failure the check it feeds only gets weaker; the journal itself is whole.
            with contextlib.suppress(OSError):
                write_private(self.head, str(self.next_number))

    def append(
        self, store: RunStore, batch: Sequence[tuple[str, Mapping[str, Any]]], **summary: Any
    ) -> int:
        """Sign ``batch`` and append it to the run's journal; returns the last seq."""
        entries = self.sign(batch)
        last = store.append(self.run_id, entries, **summary)
        self.appended(len(entries))
        return last


def _tampered(run_id: str, event: ev.Event, why: str) -> RunTampered:
    return RunTampered(f"run {run_id}: event {event.seq} ({event.kind}) {why}")


def verify_journal(
    run_id: str,
    journal: Sequence[ev.Event],
    trusted: Sequence[TrustedKey],
    *,
    at_least: int = 0,
) -> int:
    """Check that every event vigil's processes wrote is theirs, whole and in order, and
    that there are at least ``at_least`` of them (see :func:`head_file`).

    Returns how many signed events the journal holds (the next signer's first number);
    raises RunTampered, naming the first event that fails, otherwise.
    """
    keys = {k.public_hex: k for k in trusted}
    expected = 0
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
            or number != expected + len(pending)
        ):
            raise _tampered(
                run_id, event, f"is signed event {number!r}, not {expected + len(pending)}"
            )
        try:
            pending.append((event, _digest(run_id, number, event.kind, data)))
        except (TypeError, ValueError):
            raise _tampered(run_id, event, "holds data that cannot have been signed") from None
        seal = data.get(SIGNATURE)
        if seal is None:
            continue
        _check_seal(run_id, event, seal, [d for _, d in pending], keys)
        expected += len(pending)
        pending = []
    if pending:
        raise _tampered(run_id, pending[-1][0], "ends a batch that no signature covers")
    if expected < at_least:
        raise RunTampered(
            f"run {run_id}: the journal holds {expected} signed events, but {at_least} were "
            "written to it from this machine (its newest events were removed)"
        )
    return expected


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
) -> int:
    """:func:`verify_journal` against the keys this user trusts and the count noted in
    ``head``; a refusal is audited."""
    try:
        trusted = trusted_keys()
    except VigilError:
        trusted = []  # an unreadable list of trusted keys trusts nobody
    try:
        return verify_journal(run_id, journal, trusted, at_least=read_head(head))
    except RunTampered as exc:
        if auditor is not None:
            auditor.record(
                action=action, decision="deny", actor=actor, run=run_id, reason=exc.cause
            )
        raise
