"""Audit log: an untouched log verifies; every kind of tampering is caught and located."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.safety import merkle, note
from vigil.safety.audit import AuditLog, checkpoints_path
from vigil.safety.audit_verify import verify
from vigil.safety.keys import SigningKey, TrustedKey

KEY = SigningKey.generate()
TRUSTED = [TrustedKey(KEY.public_hex, "2030-01-01")]


def _log(tmp_path: Path, entries: int = 20, every: int = 8, final: bool = True) -> Path:
    path = tmp_path / "audit" / "log.jsonl"
    log = AuditLog(path, key=KEY, checkpoint_every=every, fsync=False)
    for i in range(entries):
        log.append(
            actor="ana@host",
            action="deploy" if i % 2 else "commit",
            decision="allow" if i % 3 else "deny",
            reason=f"reason {i}",
            run="run-1",
            task=f"t{i}",
            capability="deploy",
            grant="g-1",
        )
    if final:
        log.checkpoint()
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_untouched_log_verifies(tmp_path: Path) -> None:
    path = _log(tmp_path, entries=20, every=8)
    report = verify(path, TRUSTED)
    assert report.ok, report.problems
    assert (report.entries, report.checkpoints, report.sealed) == (20, 3, 20)
    leaves = [merkle.leaf_hash(line) for line in _lines(path)]
    assert report.root == merkle.root_of(leaves).hex()


def test_entries_carry_every_field_and_link_by_hash(tmp_path: Path) -> None:
    path = _log(tmp_path, entries=3, final=False)
    rows = [json.loads(line) for line in _lines(path)]
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[1]["prev"] == merkle.leaf_hash(_lines(path)[0]).hex()
    assert set(rows[0]) >= {"time", "actor", "run", "task", "action", "capability", "grant"}
    assert {"decision", "reason"} <= set(rows[0])


def test_edited_field_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    lines[6] = lines[6].replace(b'"decision":"deny"', b'"decision":"allow"')
    assert b'"allow"' in lines[6]
    _write(path, lines)
    report = verify(path, TRUSTED)
    assert not report.ok and report.first_bad_seq == 7 and report.first_bad_line == 7


def test_flipped_bit_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    data = bytearray(path.read_bytes())
    start = sum(len(line) + 1 for line in _lines(path)[:11])
    data[start + 30] ^= 0x04
    path.write_bytes(bytes(data))
    assert verify(path, TRUSTED).first_bad_seq == 12


def test_inserted_entry_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    fake = json.loads(lines[4])
    fake.update(seq=5, reason="nothing to see", prev=merkle.leaf_hash(lines[3]).hex())
    lines.insert(4, json.dumps(fake, separators=(",", ":")).encode())
    _write(path, lines)
    assert verify(path, TRUSTED).first_bad_seq == 5


def test_duplicated_entry_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    lines.insert(10, lines[9])
    _write(path, lines)
    assert verify(path, TRUSTED).first_bad_seq == 11


def test_deleted_entry_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    del lines[13]
    _write(path, lines)
    assert verify(path, TRUSTED).first_bad_seq == 14


def test_reordered_entries_are_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    _write(path, lines)
    assert verify(path, TRUSTED).first_bad_seq == 3


def test_truncation_after_a_checkpoint_is_named(tmp_path: Path) -> None:
    path = _log(tmp_path)
    _write(path, _lines(path)[:17])
    report = verify(path, TRUSTED)
    assert not report.ok and report.first_bad_seq == 18
    assert "truncated" in report.problems[0].message


def test_rewritten_tail_with_a_consistent_chain_is_caught_by_the_checkpoint(
    tmp_path: Path,
) -> None:
    path = _log(tmp_path, entries=20, every=8)
    lines = _lines(path)
    # The attacker edits entry 20 (no successor vouches for it) and recomputes nothing.
    lines[19] = lines[19].replace(b"reason 19", b"reason 91")
    _write(path, lines)
    report = verify(path, TRUSTED)
    assert not report.ok
    assert report.first_bad_seq is not None and 17 <= report.first_bad_seq <= 20


def test_forged_checkpoint_is_refused(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = _lines(path)
    lines[19] = lines[19].replace(b"reason 19", b"reason 91")
    _write(path, lines)
    forger = SigningKey.generate()
    frontier = merkle.Frontier()
    for line in lines:
        frontier.add(merkle.leaf_hash(line))
    forged = note.sign(note.checkpoint_text("vigil-audit", 20, frontier.root()), forger)
    ckpts = checkpoints_path(path)
    rows = ckpts.read_text().splitlines()
    rows[-1] = json.dumps({"size": 20, "note": forged})
    ckpts.write_text("\n".join(rows) + "\n")
    report = verify(path, TRUSTED)
    assert not report.ok
    assert any("no signature by a trusted key" in p.message for p in report.problems)


def test_deleting_the_checkpoints_is_noticed(tmp_path: Path) -> None:
    path = _log(tmp_path, entries=12, every=5, final=False)
    checkpoints_path(path).unlink()
    report = verify(path, TRUSTED)
    assert not report.ok and report.first_bad_seq == 6


def test_witness_checkpoint_catches_a_rollback_of_both_files(tmp_path: Path) -> None:
    path = _log(tmp_path, entries=10, every=100)
    witness = json.loads(checkpoints_path(path).read_text().splitlines()[-1])["note"]
    _write(path, _lines(path)[:6])
    checkpoints_path(path).unlink()
    assert verify(path, TRUSTED).ok  # locally indistinguishable from a younger log
    report = verify(path, TRUSTED, extra_notes=(witness,))
    assert not report.ok and report.first_bad_seq == 7


def test_random_tampering_is_always_detected(tmp_path: Path) -> None:
    pristine = _log(tmp_path, entries=30, every=7)
    original = pristine.read_bytes()
    ckpt = checkpoints_path(pristine).read_bytes()
    rng = random.Random(20300101)
    for round_ in range(150):
        case = tmp_path / f"case{round_}" / "log.jsonl"
        case.parent.mkdir()
        checkpoints_path(case).write_bytes(ckpt)
        lines = original.split(b"\n")[:-1]
        kind = rng.choice(["flip", "delete", "swap", "insert", "truncate", "edit"])
        first_touched = None
        if kind == "flip":
            data = bytearray(original)
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
            case.write_bytes(bytes(data))
            first_touched = original[:pos].count(b"\n") + 1
        else:
            i = rng.randrange(len(lines) - 1)
            if kind == "delete":
                del lines[i]
            elif kind == "swap":
                lines[i], lines[i + 1] = lines[i + 1], lines[i]
            elif kind == "insert":
                lines.insert(i, lines[rng.randrange(len(lines))])
            elif kind == "truncate":
                lines = lines[:i]
            else:
                lines[i] = lines[i].replace(b"reason", b"REASON")
            first_touched = i + 1
            _write(case, lines)
        report = verify(case, TRUSTED)
        assert not report.ok, (kind, round_)
        assert report.first_bad_seq is not None
        assert report.first_bad_seq <= first_touched + 1, (kind, report.problems)


@pytest.mark.slow
def test_concurrent_appenders_never_break_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "log.jsonl"
    script = (
        "import sys; from pathlib import Path\n"
        "from vigil.safety.audit import AuditLog\n"
        "from vigil.safety.keys import SigningKey\n"
        "log = AuditLog(Path(sys.argv[1]), key=SigningKey(sys.argv[2]), checkpoint_every=16)\n"
        "for i in range(60):\n"
        "    log.append(actor=sys.argv[3], action='commit', decision='allow', reason=str(i))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), KEY.private_hex, f"w{n}"])
        for n in range(4)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    report = verify(path, TRUSTED)
    assert report.ok, report.problems
    assert report.entries == 240 and report.sealed >= 224


@pytest.mark.slow
def test_kill_during_appends_leaves_a_log_that_verifies_after_the_next_append(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit" / "log.jsonl"
    script = (
        "import sys; from pathlib import Path\n"
        "from vigil.safety.audit import AuditLog\n"
        "from vigil.safety.keys import SigningKey\n"
        "log = AuditLog(Path(sys.argv[1]), key=SigningKey(sys.argv[2]), checkpoint_every=10)\n"
        "print('ready', flush=True)\n"
        "i = 0\n"
        "while True:\n"
        "    log.append(actor='a', action='commit', decision='allow', reason='x' * 5000 + str(i))\n"
        "    i += 1\n"
    )
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(path), KEY.private_hex], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        size = path.stat().st_size if path.exists() else 0
        while (path.stat().st_size if path.exists() else 0) < size + 200_000:
            pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        # A torn last line is reported, never silently accepted...
        report = verify(path, TRUSTED)
        assert report.ok or report.problems[0].message.endswith("is incomplete")
        # ...and the next append drops it and continues the chain.
        AuditLog(path, key=KEY).append(actor="b", action="resume", decision="allow")
        report = verify(path, TRUSTED)
        assert report.ok, report.problems


def test_redaction_applies_to_reasons(tmp_path: Path) -> None:
    from vigil.safety.redact import Redactor

    path = tmp_path / "log.jsonl"
    log = AuditLog(path, redact=Redactor(["s3cr3t-value"]).redact, fsync=False)
    log.append(actor="a", action="deploy", decision="deny", reason="token s3cr3t-value refused")
    assert b"s3cr3t" not in path.read_bytes()


@given(st.lists(st.binary(max_size=8), max_size=70))
@settings(max_examples=200, deadline=None)
def test_incremental_root_equals_rfc6962_root(items: list[bytes]) -> None:
    leaves = [merkle.leaf_hash(item) for item in items]
    frontier = merkle.Frontier()
    for leaf in leaves:
        frontier.add(leaf)
    assert frontier.root() == merkle.root_of(leaves)
    again = merkle.Frontier.from_hex(frontier.size, frontier.to_hex())
    assert again.root() == frontier.root()


def test_rfc6962_known_values() -> None:
    # Empty tree and one-leaf tree hashes from RFC 6962 / the CT test vectors.
    assert merkle.root_of([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@pytest.mark.parametrize("damage", ["signature", "size", "root", "garbage"])
def test_damaged_checkpoint_notes_are_refused(damage: str) -> None:
    text = note.sign(note.checkpoint_text("vigil-audit", 5, b"\x01" * 32), KEY)
    assert note.open_checkpoint(text, TRUSTED).size == 5
    body, sig = text.split("\n\n")
    if damage == "signature":
        text = body + "\n\n" + sig[:-6] + ("A" if sig[-6] != "A" else "B") + sig[-5:]
    elif damage == "size":
        text = text.replace("\n5\n", "\n6\n")
    elif damage == "root":
        text = text.replace(note.checkpoint_text("o", 5, b"\x01" * 32).split("\n")[2], "AQ==")
    else:
        text = "hello"
    with pytest.raises(note.NoteError):
        note.open_checkpoint(text, TRUSTED)
