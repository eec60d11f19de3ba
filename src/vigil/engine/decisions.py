"""Where a person's decisions enter a run: each is verified before the state takes it in.

An answer (``escalation.answered``) or a review decision (``review.decided``) is a journal
event, and anything that can write the store can append one. The driver therefore admits
such an event only if it carries a statement signed by a trusted key for exactly this
project, run, question (or held attempt) and answer (see :mod:`vigil.safety.decisions`);
an answer by timeout is admitted only if it is due and says what the plan says. A refused
event is never folded into the run's state.

The driver, the process that acts, writes the audit entry for each decision it admits or
refuses, then journals ``decision.accepted`` / ``decision.refused`` in the same step, so
the entry is written once even when the journal is replayed. A decision admitted once is
verified again on every replay (signature and binding), but its expiry is not re-checked.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vigil.engine import events as ev
from vigil.engine.options import RunOptions
from vigil.engine.state import SUCCEEDED, WAITING, RunState
from vigil.errors import VigilError
from vigil.plan.models import Plan
from vigil.safety.decisions import (
    ESCALATION_ANSWER,
    REVIEW_DECISION,
    DecisionRefused,
    Statement,
    verify_statement,
)
from vigil.safety.keys import TrustedKey, trusted_keys

DECISION_KINDS = frozenset({ev.ESCALATION_ANSWERED, ev.REVIEW_DECIDED})
ANSWERS = frozenset({"approve", "reject", "value"})


@dataclass(frozen=True)
class Verdict:
    """Whether one decision event may take effect, and why."""

    admit: bool
    relevant: bool
    reason: str = ""
    statement: Statement | None = None
    subject: str = ""


def escalation_answer(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an answer event that its statement signs."""
    return {
        "decision": data.get("decision"),
        "value": data.get("value"),
        "comment": data.get("comment") or "",
    }


def review_answer(data: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a review decision event that its statement signs."""
    return {"approve": bool(data.get("approve")), "comment": data.get("comment") or ""}


def held_changes(state: RunState, task: str) -> tuple[int | None, str]:
    """The attempt whose changes a review of ``task`` decides on, and their changeset id."""
    ts = state.tasks.get(task)
    if ts is None:
        return None, ""
    done = [a for a in ts.attempts if a.state == SUCCEEDED and a.changeset]
    if not done:
        return None, ""
    last = done[-1]
    assert last.changeset is not None
    # Imported here: reading a run's state (`vigil status`) loads no workspace code.
    from vigil.workspace.changeset import Changeset

    return last.number, Changeset.from_dict(last.changeset).id


QUESTION_FIELDS = ("id", "task", "kind", "question", "choices", "context", "timeout")
"""What a question says, as the person answering it was shown it."""


def question_subject(question: Mapping[str, Any]) -> str:
    """What an answer statement is signed for: the question's id and a hash of its words.

    An answer given to a question shown rewritten (a store writer changed its text, then
    put it back) does not answer the real one: the driver computes this from the question
    in its verified journal, and the signed subject must match.
    """
    shown = {name: question.get(name) for name in QUESTION_FIELDS}
    text = json.dumps(shown, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{question.get('id')}:{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def review_subject(state: RunState, task: str) -> str:
    """What a review statement is signed for: one attempt's held changes, by content.

    The changeset id is the hash of every path with its pre- and post-image digests, so
    an approval given for the changes a person saw approves those and no others.
    """
    attempt, changes = held_changes(state, task)
    return f"{task}#{attempt}:{changes}"


def decision_open(kind: str, data: Mapping[str, Any], state: RunState) -> bool:
    """Whether the question or held changes a decision event is about still wait for one."""
    ts = state.tasks.get(str(data.get("task", "")))
    if ts is None:
        return False
    if kind == ev.ESCALATION_ANSWERED:
        return ts.escalation is not None and ts.escalation["id"] == data.get("id")
    if kind == ev.REVIEW_DECIDED:
        return ts.state == WAITING and ts.review is None and ts.escalation is None
    return False


def judge(
    event: ev.Event,
    state: RunState,
    *,
    trusted: list[TrustedKey],
    now: float,
    accepted_before: bool = False,
    nonces: set[str] | None = None,
) -> Verdict:
    """Whether ``event`` may change ``state``; events that would change nothing pass."""
    data = event.data
    if event.kind == ev.ESCALATION_ANSWERED:
        return _judge_answer(data, state, trusted, now, accepted_before, nonces)
    if event.kind == ev.REVIEW_DECIDED:
        return _judge_review(data, state, trusted, now, accepted_before, nonces)
    return Verdict(True, False)


def _refused(exc: VigilError, subject: str) -> Verdict:
    return Verdict(False, True, f"{exc.code}: {exc.cause}", subject=subject)


def _judge_answer(
    data: Mapping[str, Any],
    state: RunState,
    trusted: list[TrustedKey],
    now: float,
    accepted_before: bool,
    nonces: set[str] | None,
) -> Verdict:
    ts = state.tasks.get(str(data.get("task", "")))
    if ts is None or ts.escalation is None or ts.escalation["id"] != data.get("id"):
        return Verdict(True, False)  # the fold ignores it: first answer wins
    q = ts.escalation
    subject = question_subject(q)
    if data.get("decision") == "timeout":
        timeout = q.get("timeout")
        due = None if timeout is None else float(q["opened_at"]) + float(timeout)
        if (
            due is not None
            and now >= due
            and data.get("by") == "timeout"
            and data.get("resolved") == (q.get("on_timeout") or "reject")
            and data.get("value") == q.get("default")
        ):
            return Verdict(True, True, "timeout", subject=subject)
        return _refused(
            DecisionRefused("an answer by timeout that is not due or not what the plan says"),
            subject,
        )
    if data.get("decision") not in ANSWERS:
        return _refused(DecisionRefused(f"unknown answer {data.get('decision')!r}"), subject)
    choices = q.get("choices")
    if data.get("decision") == "value" and choices and data.get("value") not in choices:
        return _refused(DecisionRefused("the answer is not one of the question's choices"), subject)
    return _judge_signed(
        data,
        state,
        trusted,
        now,
        accepted_before,
        nonces,
        kind=ESCALATION_ANSWER,
        subject=subject,
        task=ts.task.id,
        answer=escalation_answer(data),
    )


def _judge_review(
    data: Mapping[str, Any],
    state: RunState,
    trusted: list[TrustedKey],
    now: float,
    accepted_before: bool,
    nonces: set[str] | None,
) -> Verdict:
    task = str(data.get("task", ""))
    ts = state.tasks.get(task)
    if ts is None or ts.state != WAITING or ts.review is not None or ts.escalation is not None:
        return Verdict(True, False)
    subject = review_subject(state, task)
    return _judge_signed(
        data,
        state,
        trusted,
        now,
        accepted_before,
        nonces,
        kind=REVIEW_DECISION,
        subject=subject,
        task=task,
        answer=review_answer(data),
    )


def _judge_signed(
    data: Mapping[str, Any],
    state: RunState,
    trusted: list[TrustedKey],
    now: float,
    accepted_before: bool,
    nonces: set[str] | None,
    *,
    kind: str,
    subject: str,
    task: str,
    answer: dict[str, Any],
) -> Verdict:
    """Accept a decision only with a statement of ``kind`` that binds exactly it."""
    try:
        stmt = verify_statement(
            data.get("statement"),
            trusted,
            kind=kind,
            project=state.plan.project,
            run=state.run_id,
            subject=subject,
            task=task,
            answer=answer,
            now=now,
            check_expiry=not accepted_before,
        )
        _check_common(stmt, data, nonces)
    except DecisionRefused as exc:
        return _refused(exc, subject)
    return Verdict(True, True, "signed", stmt, subject)


def _check_common(stmt: Statement, data: Mapping[str, Any], nonces: set[str] | None) -> None:
    if stmt.by != data.get("by"):
        raise DecisionRefused("the decision names another person than its statement")
    if nonces is not None and stmt.nonce in nonces:
        raise DecisionRefused("the signed decision was already used once in this run")


def replay_verified(
    run_id: str,
    plan: Plan,
    journal: list[ev.Event],
    options: RunOptions | None = None,
    *,
    now: float | None = None,
) -> RunState:
    """The run's state with every decision that does not verify left out (for readers)."""
    state, _ = DecisionGate(run_id).replay(plan, journal, options, now=now)
    return state


class DecisionGate:
    """Verifies a run's decision events; remembers what was admitted and what was noted."""

    def __init__(self, run_id: str, *, keys: Any = trusted_keys) -> None:
        self.run_id = run_id
        self._keys = keys
        self.nonces: set[str] = set()
        self.accepted: set[int] = set()
        self.noted: set[int] = set()

    def replay(
        self,
        plan: Plan,
        journal: list[ev.Event],
        options: RunOptions | None = None,
        *,
        now: float | None = None,
    ) -> tuple[RunState, list[tuple[ev.Event, Verdict]]]:
        """Fold ``journal``, admitting only verified decisions.

        Returns the state and the decisions (admitted or refused) that no earlier driver
        noted yet: the caller audits and notes them.
        """
        when = time.time() if now is None else now
        for event in journal:
            if event.kind == ev.DECISION_ACCEPTED:
                self.accepted.add(int(event.data.get("seq", 0)))
            if event.kind in (ev.DECISION_ACCEPTED, ev.DECISION_REFUSED):
                self.noted.add(int(event.data.get("seq", 0)))
        trusted = self._trusted()
        state = RunState(run_id=self.run_id, plan=plan, options=options)
        fresh: list[tuple[ev.Event, Verdict]] = []
        for event in journal:
            if event.kind in DECISION_KINDS:
                verdict = self.judge(event, state, trusted=trusted, now=when)
                worth_noting = not verdict.admit or verdict.statement is not None
                if verdict.relevant and worth_noting and event.seq not in self.noted:
                    fresh.append((event, verdict))
                if not verdict.admit:
                    continue
            state.apply(event)
        return state, fresh

    def judge(
        self,
        event: ev.Event,
        state: RunState,
        *,
        trusted: list[TrustedKey] | None = None,
        now: float | None = None,
    ) -> Verdict:
        """Judge one event against the state it would change; remember its nonce if admitted."""
        verdict = judge(
            event,
            state,
            trusted=self._trusted() if trusted is None else trusted,
            now=time.time() if now is None else now,
            accepted_before=event.seq in self.accepted,
            nonces=self.nonces,
        )
        if verdict.admit and verdict.statement is not None:
            self.nonces.add(verdict.statement.nonce)
        return verdict

    def _trusted(self) -> list[TrustedKey]:
        try:
            found: list[TrustedKey] = self._keys()
        except VigilError:
            return []  # an unreadable trusted key list trusts nobody
        return found


def note_for(event: ev.Event, verdict: Verdict) -> tuple[ev.Kind, ev.DecisionNoted]:
    """The journal event recording that the driver acted on (or refused) ``event``."""
    data: ev.DecisionNoted = {"seq": event.seq, "kind": event.kind, "subject": verdict.subject}
    if verdict.admit:
        if verdict.statement is not None:
            data["nonce"] = verdict.statement.nonce
            data["signer"] = verdict.statement.signer
        return ev.DECISION_ACCEPTED, data
    data["reason"] = verdict.reason
    return ev.DECISION_REFUSED, data


def audit_fields(run_id: str, event: ev.Event, verdict: Verdict) -> dict[str, Any]:
    """The audit entry for acting on, or refusing, one decision event."""
    data = event.data
    what = (
        f"answer {data.get('decision')}"
        if event.kind == ev.ESCALATION_ANSWERED
        else ("review approve" if data.get("approve") else "review reject")
    )
    if verdict.admit:
        signer = verdict.statement.signer[:16] if verdict.statement else "-"
        how = "by timeout" if verdict.statement is None else f"signed by key {signer}"
        return {
            "action": "decision.accept",
            "decision": "allow",
            "actor": str(data.get("by") or "unknown"),
            "run": run_id,
            "task": str(data.get("task") or ""),
            "reason": f"{verdict.subject}: {what}, {how}",
        }
    return {
        "action": "decision.refuse",
        "decision": "deny",
        "actor": str(data.get("by") or "unknown"),
        "run": run_id,
        "task": str(data.get("task") or ""),
        "reason": f"{verdict.subject}: {what} refused: {verdict.reason}",
    }
