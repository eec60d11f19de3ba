"""A run's file changes after the fact: review them, approve or reject them, roll them back.

Everything here reads the run's journal (which holds every changeset's manifest) and the
content-addressed objects under ``.vigil/objects``; nothing needs the attempt's sandbox
except a task's ``rollback:`` command, which runs in one (:mod:`vigil.engine.compensate`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.config import Config, whoami
from vigil.engine import events as ev
from vigil.engine import ledger
from vigil.engine.audit import Auditor
from vigil.engine.decisions import review_answer, review_subject
from vigil.engine.replay import load_state
from vigil.engine.state import WAITING, RunState
from vigil.errors import ExitCode, UsageError, VigilError
from vigil.safety.decisions import REVIEW_DECISION, decision_key, sign_statement
from vigil.safety.keys import SigningKey
from vigil.words import plural
from vigil.workspace import Changeset, Workspace, combined_diff

if TYPE_CHECKING:
    from vigil.engine.compensate import Compensation
    from vigil.store import RunStore


class NothingToReview(VigilError):
    code = "VIGIL-REVIEW-NOTHING"
    title = "no changes are waiting for review"
    remedy = "See the run with `vigil status RUN_ID`; only held tasks can be approved or rejected."
    exit_code = ExitCode.USAGE


class ChangesMoved(VigilError):
    code = "VIGIL-REVIEW-CHANGED"
    title = "the held changes are not the ones named for approval"
    remedy = (
        "Look at the changes again with `vigil review RUN_ID`: each task's header shows the "
        "id of its held changes; approve with `--changes ID` naming what you saw."
    )
    exit_code = ExitCode.REFUSED


@dataclass(frozen=True)
class TaskChanges:
    """One task's changes in a run."""

    task: str
    attempt: int
    changeset: Changeset
    committed: bool
    held: bool
    ended_at: float

    def to_dict(self, workspace: Workspace, *, with_diff: bool = True) -> dict[str, Any]:
        """JSON-ready form, with the unified diff unless asked not to."""
        data: dict[str, Any] = {
            "task": self.task,
            "attempt": self.attempt,
            "changes": self.changeset.id,
            "committed": self.committed,
            "held": self.held,
            "stat": self.changeset.stat(),
            "paths": [
                {"path": e.path, "kind": e.kind, "ignored": e.ignored}
                for e in self.changeset.entries
            ],
        }
        if with_diff:
            data["diff"] = self.changeset.diff(workspace.objects)
        return data


def task_changes(state: RunState, *, task: str | None = None) -> list[TaskChanges]:
    """The last successful attempt's changes of each task, in the order they were made."""
    found: list[TaskChanges] = []
    for ts in state.tasks.values():
        if task is not None and ts.task.id != task:
            continue
        done = [a for a in ts.attempts if a.state == ev.SUCCEEDED and a.changeset]
        if not done:
            continue
        last = done[-1]
        assert last.changeset is not None
        found.append(
            TaskChanges(
                ts.task.id,
                last.number,
                Changeset.from_dict(last.changeset),
                last.committed,
                ts.state == WAITING and ts.escalation is None,
                last.ended_at or 0.0,
            )
        )
    if task is not None and not found and task not in state.tasks:
        raise UsageError(f"the run has no task {task!r}", "See the tasks with `vigil status`.")
    return sorted(found, key=lambda c: c.ended_at)


def workspace_for(config: Config) -> Workspace:
    """The run's workspace, for reading objects and applying changes."""
    return Workspace(config.workspace, config.state_dir)


def run_diff(config: Config, store: RunStore, run_id: str, *, limit: int | None = None) -> str:
    """The combined diff of every change a run made (or, for a dry run, would make);
    ``limit``: see :func:`vigil.workspace.render.unified_diff`."""
    _, state = load_state(store, run_id)
    changes = task_changes(state)
    objects = workspace_for(config).objects
    return combined_diff([c.changeset for c in changes], objects, limit=limit)


def _names(changeset_id: str, given: str) -> bool:
    """Whether ``given`` (a full id or a prefix of at least 8 characters) names the id."""
    given = given.strip().lower()
    return len(given) >= 8 and changeset_id.startswith(given)


def decide_review(
    config: Config,
    store: RunStore,
    run_id: str,
    *,
    approve: bool,
    task: str | None = None,
    comment: str = "",
    actor: str | None = None,
    resume: bool = True,
    key: SigningKey | None = None,
    expect: list[str] | None = None,
) -> list[str]:
    """Approve (commit) or reject (discard) held changes; returns the tasks decided.

    Each decision is signed for the exact changes held (their changeset id). With
    ``expect``, the ids a person saw in `vigil review`, a task whose held changes are not
    among them is refused (VIGIL-REVIEW-CHANGED) before anything is signed.
    """
    # Only a journal vigil's processes signed is decided on (VIGIL-RUN-TAMPERED otherwise).
    who = actor or whoami()
    _, state = load_state(
        store,
        run_id,
        verify=True,
        auditor=Auditor(config, store=store),
        action="review.approve" if approve else "review.reject",
        actor=who,
        state_dir=config.state_dir,
    )
    pending = [c for c in task_changes(state, task=task) if c.held]
    if not pending:
        raise NothingToReview(f"run {run_id} has no changes waiting for review")
    if expect is not None:
        moved = [c for c in pending if not any(_names(c.changeset.id, e) for e in expect)]
        if moved:
            shown = ", ".join(f"{c.task} holds {c.changeset.id}" for c in moved)
            raise ChangesMoved(f"run {run_id}: {shown}")
    held = [c.task for c in pending]
    signer = key or decision_key()
    decisions = []
    for t in held:
        data: ev.ReviewDecided = {"task": t, "approve": approve, "by": who, "comment": comment}
        # Signed for this run and the exact attempt whose changes are held.
        data["statement"] = sign_statement(
            signer,
            kind=REVIEW_DECISION,
            project=state.plan.project,
            run=run_id,
            subject=review_subject(state, t),
            task=t,
            answer=review_answer(data),
            by=who,
        )
        decisions.append((ev.REVIEW_DECIDED, data))
    auditor = Auditor(config, store=store)
    for t in held:
        auditor.record(
            action="review.approve" if approve else "review.reject",
            decision="allow" if approve else "deny",
            actor=who,
            run=run_id,
            task=t,
            reason=comment or ("changes approved" if approve else "changes rejected"),
        )
    for kind, decided in decisions:  # also on this machine (vigil.engine.ledger)
        ledger.deliver(config.state_dir, run_id, kind, decided)
    store.append(run_id, decisions, at=time.time())
    if resume:
        from vigil.engine.escalations import continue_run

        continue_run(config, store, run_id, inline=True)
    return held


@dataclass(frozen=True)
class RollbackOutcome:
    """What a rollback restored and which compensations ran."""

    restored: list[str]
    overwritten: list[str]
    compensations: list[Compensation]


def rollback_run(
    config: Config,
    store: RunStore,
    run_id: str,
    *,
    task: str | None = None,
    file: str | None = None,
    compensate: bool = False,
    force: bool = False,
    actor: str | None = None,
    grant: str | None = None,
) -> RollbackOutcome:
    """Restore the pre-images of a run's committed changes, newest first.

    A file changed since vigil committed it is refused with VIGIL-DRIFT unless ``force``.
    With ``compensate``, the tasks' ``rollback:`` commands run too, newest first, each in
    its task's sandbox (:mod:`vigil.engine.compensate`); what can refuse them (grant,
    secrets, sandbox settings) is settled before any file is restored.
    """
    # Pre-images come from the journal: restore only what vigil's processes recorded.
    record, state = load_state(
        store,
        run_id,
        verify=True,
        auditor=Auditor(config, store=store),
        action="rollback",
        actor=actor or whoami(),
        state_dir=config.state_dir,
    )
    changes = [c for c in task_changes(state, task=task) if c.committed]
    compensator = None
    if compensate and state.dry_run:
        # A dry run did nothing outside its throwaway sandboxes: nothing to compensate, and
        # a task's rollback: command would act on the real world.
        raise UsageError(
            f"run {run_id} was a dry run: it changed nothing, so nothing is rolled back",
            "Roll back the real run instead; `vigil runs` lists them.",
        )
    if compensate:
        from vigil.engine.compensate import Compensator
        from vigil.engine.runs import sealed_plan

        # The rollback: commands are the recorded plan's: run none of a rewritten record.
        sealed_plan(config, store, record)
        compensator = Compensator(
            config, store, state, run_id, task=task, grant=grant or record.options.get("grant")
        )
    ws = workspace_for(config)
    paths = [file] if file else None
    result = ws.rollback([c.changeset for c in changes], paths=paths, force=force)
    who = actor or whoami()
    ran = compensator.run() if compensator is not None else []
    store.append(
        run_id,
        [
            ev.rollback_done(
                [c.task for c in changes],
                result.restored,
                file=file,
                force=force,
                by=who,
                compensations=list(ran),
            )
        ],
        at=time.time(),
    )
    Auditor(config, store=store).record(
        action="rollback",
        decision="allow",
        actor=who,
        run=run_id,
        task=task,
        reason=f"restored {plural(len(result.restored), 'path')}"
        + (f", overwrote {len(result.overwritten)} drifted" if result.overwritten else ""),
    )
    return RollbackOutcome(result.restored, result.overwritten, ran)
