"""Questions for people: list them, answer them, and let the run go on.

An escalation lives in its run's journal (``escalation.opened`` / ``escalation.answered``),
so it survives any crash and needs no table of its own. Answering appends an event; a
driver that is alive picks it up within a poll interval, otherwise the run is resumed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vigil.config import Config, whoami
from vigil.engine import events as ev
from vigil.engine import ledger
from vigil.engine.decisions import escalation_answer, question_subject
from vigil.engine.replay import load_state
from vigil.errors import ExitCode, RunLocked, VigilError
from vigil.layout import iso
from vigil.safety.decisions import ESCALATION_ANSWER, decision_key, sign_statement
from vigil.safety.keys import SigningKey

if TYPE_CHECKING:
    from vigil.engine.driver import Observer
    from vigil.store import RunStore


class EscalationNotFound(VigilError):
    code = "VIGIL-ESCALATION-NOT-FOUND"
    title = "no open question with that id"
    remedy = "List open questions with `vigil escalations`; it may have been answered already."
    exit_code = ExitCode.USAGE


class BadAnswer(VigilError):
    code = "VIGIL-ESCALATION-ANSWER"
    title = "the answer does not fit the question"
    remedy = "Use --approve, --reject, or --value with one of the question's choices."
    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Escalation:
    """One question, open or answered, with what led to it."""

    id: str
    run_id: str
    task_id: str
    kind: str
    question: str
    choices: list[str] | None
    context: dict[str, Any]
    opened_at: float
    timeout_at: float | None
    answered: bool
    answer: dict[str, Any] | None = None
    plan: str = ""
    project: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    subject: str = ""
    """What an answer to it is signed for (:func:`vigil.engine.decisions.question_subject`)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``vigil escalations --format json``)."""
        return {
            "id": self.id,
            "run": self.run_id,
            "plan": self.plan,
            "project": self.project,
            "task": self.task_id,
            "kind": self.kind,
            "question": self.question,
            "choices": self.choices,
            "context": self.context,
            "opened_at": iso(self.opened_at),
            "timeout_at": iso(self.timeout_at),
            "answered": self.answered,
            "answer": self.answer,
            "subject": self.subject,
        }


def list_escalations(
    store: RunStore,
    *,
    run_id: str | None = None,
    open_only: bool = True,
    state_dir: Path | None = None,
) -> list[Escalation]:
    """Questions of one run, or of every run that has not ended, oldest first.

    Read from verified journals (:mod:`vigil.engine.attest`; with ``state_dir``, also
    against this machine's heads): a person answers what vigil asked, never a question
    rewritten in the store (VIGIL-RUN-TAMPERED names the run).
    """
    if run_id is not None:
        run_ids = [run_id]
    else:
        active = ["waiting", "running"] if open_only else None
        run_ids = [r.id for r in store.list_runs(states=active, limit=10_000)]
    found: list[Escalation] = []
    for rid in run_ids:
        record, state = load_state(store, rid, verify=True, state_dir=state_dir)
        for ts in state.tasks.values():
            for q in ts.escalations:
                answer = q.get("answer")
                if open_only and (answer is not None or q is not ts.escalation):
                    continue
                timeout = q.get("timeout")
                found.append(
                    Escalation(
                        id=str(q["id"]),
                        run_id=rid,
                        task_id=ts.task.id,
                        kind=str(q.get("kind", "approval")),
                        question=str(q.get("question", "")),
                        choices=q.get("choices"),
                        context=dict(q.get("context") or {}),
                        opened_at=float(q["opened_at"]),
                        timeout_at=None if timeout is None else float(q["opened_at"]) + timeout,
                        answered=answer is not None,
                        answer=answer,
                        plan=record.plan_name,
                        project=record.project,
                        subject=question_subject(q),
                    )
                )
    return sorted(found, key=lambda e: e.opened_at)


def find_escalation(store: RunStore, esc_id: str, *, state_dir: Path | None = None) -> Escalation:
    """The open question ``esc_id``; VIGIL-ESCALATION-NOT-FOUND otherwise."""
    for esc in list_escalations(store, state_dir=state_dir):
        if esc.id == esc_id:
            return esc
    raise EscalationNotFound(f"no open question {esc_id!r}")


def answer_escalation(
    config: Config,
    store: RunStore,
    esc_id: str,
    *,
    decision: Literal["approve", "reject", "value"],
    value: str | None = None,
    comment: str = "",
    actor: str | None = None,
    resume: Literal["background", "inline", "none"] = "background",
    key: SigningKey | None = None,
    observer: Observer | None = None,
) -> Escalation:
    """Answer ``esc_id``; the run goes on (resumed here or in the background if idle;
    ``observer`` sees the events of a run resumed here)."""
    esc = find_escalation(store, esc_id, state_dir=config.state_dir)
    if decision == "value":
        if value is None:
            raise BadAnswer("--value needs a value")
        if esc.choices and value not in esc.choices:
            raise BadAnswer(f"{value!r} is not one of {', '.join(esc.choices)}")
    who = actor or whoami()
    kind, data = ev.escalation_answered(esc.id, esc.task_id, decision, value, comment, who)
    # The answer is a signed statement bound to this project, run, question and answer;
    # the driver acts on it only if the signature verifies (engine/decisions.py).
    data["statement"] = sign_statement(
        key or decision_key(),
        kind=ESCALATION_ANSWER,
        project=esc.project,
        run=esc.run_id,
        subject=esc.subject,  # the question as the person was shown it, by content
        task=esc.task_id,
        answer=escalation_answer(data),
        by=who,
    )
    _record_answer(config, store, esc, decision, comment, who)
    # Also left on this machine: a store that drops it cannot leave the question to its
    # timeout while this run's driver runs here (vigil.engine.ledger).
    ledger.deliver(config.state_dir, esc.run_id, kind, data)
    store.append(esc.run_id, [(kind, data)], at=time.time())
    if resume != "none":
        continue_run(config, store, esc.run_id, inline=resume == "inline", observer=observer)
    return esc


def continue_run(
    config: Config,
    store: RunStore,
    run_id: str,
    *,
    inline: bool,
    observer: Observer | None = None,
) -> str | None:
    """Drive ``run_id`` on if no process is driving it; returns how it stands, if known.
    ``observer`` sees the events of a run driven here (``inline``), as ``vigil run``'s
    progress does."""
    try:
        lock = store.lock_run(run_id)
        lock.release()
    except RunLocked:
        return None  # a live driver polls the journal and sees the answer
    if inline:
        from vigil.engine.runs import resume_run

        return resume_run(config, store, run_id, observer=observer).state
    # Owned by nobody on purpose: the resumed run must outlive the caller (a web request).
    subprocess.Popen(
        [sys.executable, "-m", "vigil.cli.main", "resume", run_id, "-w", str(config.workspace)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return None


def _record_answer(
    config: Config, store: RunStore, esc: Escalation, decision: str, comment: str, who: str
) -> None:
    """Put the signed answer and who gave it in the audit log (the driver adds its own)."""
    from vigil.engine.audit import audit_event

    audit_event(
        config,
        store,
        actor=who,
        action="escalation.answer",
        decision="allow" if decision != "reject" else "deny",
        reason=f"{esc.kind}: {esc.question} -> {decision}" + (f" ({comment})" if comment else ""),
        run=esc.run_id,
        task=esc.task_id,
    )
