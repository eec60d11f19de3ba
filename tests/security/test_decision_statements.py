"""Signed decision statements: every field that gives a decision its meaning is bound."""

from __future__ import annotations

import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vigil.safety.decisions import (
    ESCALATION_ANSWER,
    HALT,
    UNHALT,
    DecisionRefused,
    decision_key,
    sign_statement,
    verify_statement,
)
from vigil.safety.halt import Ledger
from vigil.safety.keys import SigningKey, TrustedKey, init_key, trusted_keys

KEY = SigningKey.generate()
TRUSTED = [TrustedKey(KEY.public_hex, "2026-01-01")]
ANSWER = {"decision": "approve", "value": None, "comment": ""}
EXPECT: dict[str, Any] = {
    "kind": ESCALATION_ANSWER,
    "project": "shop",
    "run": "r1",
    "subject": "esc-1",
    "task": "ask",
    "answer": ANSWER,
}


def statement(**over: Any) -> dict[str, str]:
    fields: dict[str, Any] = {**EXPECT, "by": "ana", **over}
    key = fields.pop("key", KEY)
    return sign_statement(key, **fields)


def test_the_genuine_statement_verifies() -> None:
    stmt = verify_statement(statement(), TRUSTED, **EXPECT)
    assert stmt.by == "ana" and stmt.signer == KEY.public_hex and len(stmt.nonce) == 32


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "review.decision"),
        ("project", "blog"),
        ("run", "r2"),
        ("subject", "esc-2"),
        ("task", "deploy"),
        ("answer", {"decision": "reject", "value": None, "comment": ""}),
    ],
)
def test_a_statement_for_anything_else_is_refused(field: str, value: Any) -> None:
    with pytest.raises(DecisionRefused):
        verify_statement(statement(), TRUSTED, **{**EXPECT, field: value})


def test_every_single_bit_flip_of_the_payload_or_signature_is_refused() -> None:
    genuine = statement()
    payload = genuine["payload"].encode()
    for i in range(0, len(payload), 7):
        flipped = bytearray(payload)
        flipped[i] ^= 0x01
        with pytest.raises(DecisionRefused):
            verify_statement({**genuine, "payload": flipped.decode("latin-1")}, TRUSTED, **EXPECT)
    sig = bytearray(base64.b64decode(genuine["sig"]))
    for i in range(len(sig)):
        bad = bytearray(sig)
        bad[i] ^= 0x80
        with pytest.raises(DecisionRefused):
            verify_statement({**genuine, "sig": base64.b64encode(bad).decode()}, TRUSTED, **EXPECT)


def test_untrusted_keys_missing_statements_and_expiry_are_refused() -> None:
    with pytest.raises(DecisionRefused, match="not trusted"):
        verify_statement(statement(key=SigningKey.generate()), TRUSTED, **EXPECT)
    for junk in (None, "x", {}, {"payload": "{}", "signer": KEY.public_hex, "sig": "!!"}):
        with pytest.raises(DecisionRefused):
            verify_statement(junk, TRUSTED, **EXPECT)
    old = statement(now=time.time() - 7200)
    with pytest.raises(DecisionRefused, match="expired"):
        verify_statement(old, TRUSTED, **EXPECT)
    verify_statement(old, TRUSTED, **EXPECT, check_expiry=False)
    future = statement(now=time.time() + 3600)
    with pytest.raises(DecisionRefused, match="expired"):
        verify_statement(future, TRUSTED, **EXPECT)


def test_concurrent_first_uses_create_one_key_and_keep_earlier_trust(tmp_path: Path) -> None:
    base = tmp_path / "config"
    team = SigningKey.generate()
    (base / "keys").mkdir(parents=True)
    (base / "keys" / "trusted.json").write_text(
        json.dumps({"keys": [{"public_key": team.public_hex, "created": "x", "retired": None}]})
    )
    made: list[str] = []
    threads = [
        threading.Thread(target=lambda: made.append(decision_key(base).public_hex))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1
    assert {k.public_hex for k in trusted_keys(base)} == {team.public_hex, made[0]}


def test_the_ledger_lifts_a_halt_only_with_a_trusted_signed_unhalt(tmp_path: Path) -> None:
    base = tmp_path / "config"
    key = init_key(base=base)
    ledger = Ledger(base / "halts.jsonl", trusted_keys(base))

    def signed(kind: str, by: SigningKey) -> dict[str, str]:
        answer = {"reason": "incident"} if kind == HALT else {}
        return sign_statement(
            by,
            kind=kind,
            project="shop",
            run=None,
            subject="shop",
            task=None,
            answer=answer,
            by="ana",
        )

    ledger.append(signed(HALT, key))
    assert "shop" in ledger.in_force()
    ledger.append(signed(UNHALT, SigningKey.generate()))  # another key's unhalt
    with ledger.path.open("a") as fh:
        fh.write('{"payload": "{\\"kind\\": \\"unhalt\\", \\"project\\": \\"shop\\"}"}\n')
    assert "shop" in ledger.in_force() and len(ledger.refused) == 2
    ledger.append(signed(UNHALT, key))
    assert "shop" not in ledger.in_force()
    unsigned_halt = {"payload": json.dumps({"kind": "halt", "project": "blog"}), "sig": ""}
    ledger.append({**unsigned_halt, "signer": key.public_hex})
    assert "blog" in ledger.in_force(), "a halt that does not verify must still stop"
