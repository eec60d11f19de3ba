"""The journal's signatures: every change to what vigil signed is found (vigil.engine.attest).

A property test builds journals as drivers write them (batches of signed events, with
unsigned events of the external kinds in between), round-trips them through JSON as the
store does, then changes them as a store writer could: one value, one key, one kind, an
event deleted, repeated, moved, or added with a number and a signature of its own. Every
change must be refused; the untouched journal must verify.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.engine import attest
from vigil.engine import events as ev
from vigil.errors import RunTampered
from vigil.safety.keys import SigningKey, TrustedKey

KEY = SigningKey.generate()
TRUSTED = [TrustedKey(KEY.public_hex, "now")]
RUN = "r-1"

values = st.one_of(
    st.integers(-5, 5), st.text(max_size=4), st.booleans(), st.none(), st.floats(0, 10)
)
payloads = st.dictionaries(st.sampled_from(["task", "attempt", "reason", "x"]), values, max_size=3)
signed_kinds = st.sampled_from([k for k in ev.Kind if k not in attest.EXTERNAL_KINDS])
external = st.tuples(st.sampled_from(sorted(attest.EXTERNAL_KINDS)), payloads)
batches = st.lists(
    st.tuples(
        st.lists(st.tuples(signed_kinds, payloads), min_size=1, max_size=3),
        st.lists(external, max_size=2),
    ),
    min_size=1,
    max_size=4,
)


def build(spec: list[tuple[list[Any], list[Any]]]) -> list[ev.Event]:
    """A journal as the store gives it back: signed batches, external events between."""
    signer = attest.JournalSigner(RUN, KEY)
    raw: list[tuple[str, Any, float]] = []
    for n, (signed, others) in enumerate(spec):
        at = 1764240000.125 + 7.3 * n  # each batch is stored with its own time
        raw += [(kind, data, at) for kind, data in signer.sign(signed, at)]
        signer.appended()
        raw += [(kind, data, at + 0.5) for kind, data in others]
    return [
        ev.Event(str(kind), json.loads(json.dumps(data)), at, seq)
        for seq, (kind, data, at) in enumerate(raw, start=1)
    ]


def signed_positions(journal: list[ev.Event]) -> list[int]:
    return [i for i, e in enumerate(journal) if attest.NUMBER in e.data]


@settings(max_examples=100, deadline=None)
@given(batches)
def test_an_untouched_journal_verifies(spec: list[tuple[list[Any], list[Any]]]) -> None:
    journal = build(spec)
    head = attest.verify_journal(RUN, journal, TRUSTED)
    assert head.count == len(signed_positions(journal))
    # As the machine that wrote it sees it: the same, with no signature checked.
    assert attest.verify_journal(RUN, journal, [], noted=head) == head


MUTATIONS = [
    "value",
    "add-key",
    "drop-key",
    "kind",
    "delete",
    "repeat",
    "move",
    "strip-number",
    "time",
    "other-run",
    "forged-batch",
    "untrusted",
]


@settings(max_examples=200, deadline=None)
@given(batches, st.sampled_from(MUTATIONS), st.data())
def test_every_change_to_a_signed_event_is_refused(
    spec: list[tuple[list[Any], list[Any]]], mutation: str, data: st.DataObject
) -> None:
    journal = build(spec)
    positions = signed_positions(journal)
    i = data.draw(st.sampled_from(positions))
    # Checked where it was written (the head noted, no key trusted: the chain alone must
    # find it), or elsewhere (signatures only; cutting the last batch off is then allowed).
    local = data.draw(st.booleans())
    sealed = [p for p in positions if attest.SIGNATURE in journal[p].data]
    if mutation == "delete" and (len(sealed) == 1 or i > sealed[-2]):
        local = True
    if mutation == "untrusted":
        local = False
    noted = attest.verify_journal(RUN, journal, TRUSTED) if local else None
    target = journal[i]
    body = dict(target.data)
    run = RUN
    if mutation == "value":
        key = data.draw(st.sampled_from(sorted(set(body) - attest.META) or ["fresh"]))
        new = data.draw(values.filter(lambda v: v != body.get(key) or key not in body))
        body[key] = new
    elif mutation == "add-key":
        body["added"] = data.draw(values)
    elif mutation == "drop-key":
        plain = sorted(set(body) - attest.META)
        if plain:
            body.pop(data.draw(st.sampled_from(plain)))
        else:
            body.pop(attest.NUMBER)
    elif mutation == "kind":
        kinds = [k for k in ev.Kind if k != target.kind]
        journal[i] = ev.Event(data.draw(st.sampled_from(kinds)), body, 0.0, target.seq)
    elif mutation == "delete":
        del journal[i]
    elif mutation == "repeat":
        journal.insert(data.draw(st.integers(i + 1, len(journal))), target)
    elif mutation == "move":
        j = data.draw(st.sampled_from([p for p in positions if p != i] or [i]))
        if j == i:  # the only signed event: renumbered instead
            body[attest.NUMBER] = body[attest.NUMBER] + 1
            journal[i] = ev.Event(target.kind, body, 0.0, target.seq)
        else:
            journal[i], journal[j] = journal[j], journal[i]
    elif mutation == "strip-number":
        body.pop(attest.NUMBER)
        body.pop(attest.SIGNATURE, None)
    elif mutation == "time":  # an escalation's timeout runs from its event's time
        journal[i] = ev.Event(target.kind, body, target.at - 86400.0, target.seq)
    elif mutation == "other-run":
        run = "r-2"
    elif mutation == "forged-batch":
        # A batch numbered where the journal goes on, signed by a key nobody trusts.
        start = attest.verify_journal(RUN, journal, TRUSTED)
        signer = attest.JournalSigner(RUN, SigningKey.generate(), start)
        forged_batch = [(ev.TASK_FINISHED, {"task": "t", "state": "succeeded"})]
        [(kind, forged)] = signer.sign(forged_batch, 5.0)
        journal.append(ev.Event(kind, json.loads(json.dumps(forged)), 5.0, len(journal) + 1))
    elif mutation == "untrusted":
        with pytest.raises(RunTampered):
            attest.verify_journal(RUN, journal, [TrustedKey(SigningKey.generate().public_hex, "x")])
        return
    if mutation in ("value", "add-key", "drop-key", "strip-number"):
        journal[i] = ev.Event(target.kind, body, 0.0, target.seq)
    with pytest.raises(RunTampered):
        attest.verify_journal(run, journal, [] if local else TRUSTED, noted=noted)


def test_the_newest_batch_cut_off_is_found_only_with_the_head_noted(tmp_path: Path) -> None:
    signer = attest.JournalSigner(RUN, KEY, head=tmp_path / "journal.head")
    raw = []
    for task in ("a", "b"):
        raw += signer.sign([(ev.TASK_SKIPPED, {"task": task})], 0.0)
        signer.appended()
    journal = [ev.Event(k, json.loads(json.dumps(d)), 0.0, n) for n, (k, d) in enumerate(raw, 1)]
    noted = attest.read_head(tmp_path / "journal.head")
    assert noted == attest.verify_journal(RUN, journal, TRUSTED) and noted.count == 2
    cut = journal[:-1]
    assert attest.verify_journal(RUN, cut, TRUSTED).count == 1  # signatures alone cannot tell
    with pytest.raises(RunTampered, match="newest events were removed"):
        attest.verify_journal(RUN, cut, TRUSTED, noted=noted)


def test_the_head_is_rewritten_in_place_and_reads_back_after_every_batch(tmp_path: Path) -> None:
    path = tmp_path / "journal.head"
    # A head an older vigil wrote (longer, another layout) is replaced, not appended to.
    path.write_text(json.dumps({"count": 1, "chain": "ab" * 32}, indent=8) + " " * 300)
    signer = attest.JournalSigner(RUN, KEY, head=path)
    for n in range(1, 40):
        signer.sign([(ev.TASK_SKIPPED, {"task": f"t{n}"})] * (n % 3 + 1), float(n))
        signer.appended()
        assert attest.read_head(path) == signer.at
        assert path.stat().st_size == attest.HEAD_WIDTH
        assert path.stat().st_mode & 0o777 == 0o600
    inode = path.stat().st_ino
    signer.sign([(ev.TASK_SKIPPED, {"task": "last"})], 99.0)
    signer.appended()
    assert path.stat().st_ino == inode  # written in place, not a new file each batch


def test_a_batch_whose_append_failed_is_signed_again_with_the_same_numbers() -> None:
    start = attest.Head().extended(["00" * 32] * 3)
    signer = attest.JournalSigner(RUN, KEY, start)
    first = signer.sign([(ev.TASK_SKIPPED, {"task": "a"})], 1.0)
    again = signer.sign([(ev.TASK_SKIPPED, {"task": "a"})], 1.0)
    assert first[0][1][attest.NUMBER] == again[0][1][attest.NUMBER] == 3
    signer.appended()
    assert signer.sign([(ev.TASK_SKIPPED, {"task": "b"})], 2.0)[0][1][attest.NUMBER] == 4


def test_the_message_names_the_first_event_that_fails() -> None:
    journal = build([([(ev.TASK_SKIPPED, {"task": "a"}), (ev.TASK_SKIPPED, {"task": "b"})], [])])
    journal[0] = ev.Event(journal[0].kind, {**journal[0].data, "task": "z"}, 0.0, 1)
    with pytest.raises(RunTampered) as raised:
        attest.verify_journal(RUN, journal, TRUSTED)
    assert "event 2 (task.skipped)" in str(raised.value)
