"""A person's decision as a signed statement: approvals, answers, reviews, halts, unhalts.

A decision reaches a run through the store (a journal event, a halt row), and a step that
can reach the store could write one. So every decision carries a statement signed with
the deciding person's (or operator's) Ed25519 key, the key that signs grants, which lives
in the user's config directory that no step can read. The statement binds the decision to
everything that gives it meaning::

    {"v": 1, "kind": "escalation.answer", "project": "shop", "run": "r-…",
     "subject": "<escalation id | task#attempt | project>", "task": "deploy",
     "answer": {...the decision's fields...}, "by": "alice",
     "at": 1764240000.0, "expires": 1764243600.0, "nonce": "9f2c…"}

signed as ``Ed25519(b"vigil-decision-v1\\n" || canonical JSON)``. The process that acts on
a decision (the driver, the halt check) calls :func:`verify_statement` with what it
expects; a missing, forged, untrusted, expired or mismatched statement is refused with
:class:`DecisionRefused`, whose message says which.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.errors import ExitCode, VigilError
from vigil.safety.keys import (
    SIGNING_KEY_FILE,
    KeyMissing,
    SigningKey,
    TrustedKey,
    _save_trusted,
    active_key,
    init_key,
    keys_dir,
    trusted_keys,
)

DOMAIN = b"vigil-decision-v1\n"
ESCALATION_ANSWER = "escalation.answer"
REVIEW_DECISION = "review.decision"
HALT = "halt"
UNHALT = "unhalt"
RUN_START = "run.start"
"""The person who started a run vouches for its recorded plan and options (its seal)."""
KINDS = frozenset({ESCALATION_ANSWER, REVIEW_DECISION, HALT, UNHALT, RUN_START})
DEFAULT_TTL = 3600.0
"""How long a signed decision may wait before a driver first acts on it."""
CLOCK_SKEW = 300.0
"""How far in the future a statement's time may be (clocks of two machines differ)."""


class DecisionRefused(VigilError):
    code = "VIGIL-DECISION-REFUSED"
    title = "a decision was not signed by a trusted key for this run and question"
    remedy = (
        "Decide with `vigil escalations answer`, `vigil review` or `vigil unhalt` as a person "
        "holding a trusted key; a decision written into the store by other means is ignored."
    )
    exit_code = ExitCode.REFUSED


@dataclass(frozen=True)
class Statement:
    """A verified decision: its signed fields and the key that signed them."""

    kind: str
    project: str
    run: str | None
    subject: str
    task: str | None
    answer: dict[str, Any]
    by: str
    at: float
    expires: float
    nonce: str
    signer: str


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_statement(
    key: SigningKey,
    *,
    kind: str,
    project: str,
    run: str | None,
    subject: str,
    task: str | None,
    answer: dict[str, Any],
    by: str,
    ttl: float = DEFAULT_TTL,
    now: float | None = None,
) -> dict[str, str]:
    """A signed statement of one decision, as stored beside it (JSON-ready)."""
    if kind not in KINDS:
        raise ValueError(f"unknown decision kind {kind!r}")
    at = time.time() if now is None else now
    payload = {
        "v": 1,
        "kind": kind,
        "project": project,
        "run": run,
        "subject": subject,
        "task": task,
        "answer": answer,
        "by": by,
        "at": at,
        "expires": at + ttl,
        "nonce": secrets.token_hex(16),
    }
    body = _canonical(payload)
    return {
        "payload": body.decode(),
        "signer": key.public_hex,
        "sig": base64.b64encode(key.sign(DOMAIN + body)).decode(),
    }


def verify_statement(
    statement: Any,
    trusted: list[TrustedKey],
    *,
    kind: str,
    project: str,
    run: str | None,
    subject: str,
    task: str | None = None,
    answer: dict[str, Any] | None = None,
    now: float | None = None,
    check_expiry: bool = True,
) -> Statement:
    """The verified statement, if it is signed by a trusted key and says what is expected.

    ``answer``, when given, must equal the signed answer exactly: the event beside the
    statement cannot say something else than what was signed.
    """
    if not isinstance(statement, dict):
        raise DecisionRefused(f"the {kind} carries no signed statement")
    try:
        body = str(statement["payload"]).encode()
        signer = str(statement["signer"])
        signature = base64.b64decode(str(statement["sig"]), validate=True)
        payload = json.loads(body)
    except (KeyError, ValueError, TypeError):
        raise DecisionRefused(f"the {kind}'s statement is malformed") from None
    key = next((k for k in trusted if k.public_hex == signer), None)
    if key is None:
        raise DecisionRefused(f"the {kind} is signed by key {signer[:16]}…, which is not trusted")
    if not key.verify(signature, DOMAIN + body):
        raise DecisionRefused(f"the {kind}'s signature does not verify")
    if not isinstance(payload, dict) or payload.get("v") != 1:
        raise DecisionRefused(f"the {kind}'s statement has an unknown format")
    expected = {"kind": kind, "project": project, "run": run, "subject": subject}
    if task is not None:
        expected["task"] = task
    for name, value in expected.items():
        if payload.get(name) != value:
            raise DecisionRefused(
                f"the {kind} was signed for {name} {payload.get(name)!r}, not {value!r}"
            )
    if answer is not None and payload.get("answer") != answer:
        raise DecisionRefused(f"the {kind} says something other than what was signed")
    try:
        at, expires = float(payload["at"]), float(payload["expires"])
        stmt = Statement(
            kind=kind,
            project=project,
            run=run,
            subject=subject,
            task=payload.get("task"),
            answer=dict(payload["answer"]),
            by=str(payload["by"]),
            at=at,
            expires=expires,
            nonce=str(payload["nonce"]),
            signer=signer,
        )
    except (KeyError, ValueError, TypeError):
        raise DecisionRefused(f"the {kind}'s statement lacks a field") from None
    current = time.time() if now is None else now
    if check_expiry and not at - CLOCK_SKEW <= current <= expires:
        raise DecisionRefused(f"the {kind} was signed for {at:.0f}..{expires:.0f}; it has expired")
    return stmt


def decision_key(base: Path | None = None) -> SigningKey:
    """The key a person's command signs decisions with, created on first use.

    Creating it here keeps `vigil escalations answer` working for someone who never ran
    `vigil keys init`; the key lands in the user's config directory, out of every step's
    reach. Concurrent first uses create one key (an exclusive lock on the key directory).
    """
    try:
        return active_key(base)
    except KeyMissing:
        pass
    directory = keys_dir(base)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not (directory / SIGNING_KEY_FILE).exists():
            earlier = trusted_keys(base)
            init_key(base=base)
            if earlier:
                # Keys trusted before (a team's, say) stay trusted beside the new one.
                _save_trusted(directory, [*earlier, *trusted_keys(base)])
        return active_key(base)
    finally:
        os.close(fd)
