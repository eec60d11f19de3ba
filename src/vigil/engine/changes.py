"""A run's file changes after the fact: review them, approve or reject them, roll them back.

Everything here reads the run's journal (which holds every changeset's manifest) and the
content-addressed objects under ``.vigil/objects``; nothing needs the attempt's sandbox.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.actions.run import shell_argv
from vigil.config import Config, whoami
from vigil.engine import events as ev
from vigil.engine.audit import Auditor
from vigil.engine.decisions import held_attempt, review_answer, review_subject
from vigil.engine.replay import load_state
from vigil.engine.state import WAITING, RunState
from vigil.errors import ExitCode, UsageError, VigilError
from vigil.executors.process import LogSink, run_process
from vigil.layout import process_tag, rollback_log
from vigil.safety.decisions import REVIEW_DECISION, decision_key, sign_statement
from vigil.safety.keys import SigningKey
from vigil.workspace import Changeset, Workspace, combined_diff

if TYPE_CHECKING:
    from vigil.store import RunStore


class NothingToReview(VigilError):
    code = "VIGIL-REVIEW-NOTHING"
    title = "no changes are waiting for review"
    remedy = "See the run with `vigil status RUN_ID`; only held tasks can be approved or rejected."
    exit_code = ExitCode.USAGE


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


def run_diff(config: Config, store: RunStore, run_id: str) -> str:
    """The combined diff of every change a run made (or, for a dry run, would make)."""
    _, state = load_state(store, run_id)
    changes = task_changes(state)
    return combined_diff([c.changeset for c in changes], workspace_for(config).objects)


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
) -> list[str]:
    """Approve (commit) or reject (discard) held changes; returns the tasks decided."""
    _, state = load_state(store, run_id)
    held = [c.task for c in task_changes(state, task=task) if c.held]
    if not held:
        raise NothingToReview(f"run {run_id} has no changes waiting for review")
    who = actor or whoami()
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
            subject=review_subject(t, held_attempt(state, t)),
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
    compensations: list[dict[str, Any]]


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
    With ``compensate``, the tasks' ``rollback:`` commands run too, newest first.
    """
    record, state = load_state(store, run_id)
    changes = [c for c in task_changes(state, task=task) if c.committed]
    ws = workspace_for(config)
    paths = [file] if file else None
    result = ws.rollback([c.changeset for c in changes], paths=paths, force=force)
    who = actor or whoami()
    ran: list[dict[str, Any]] = []
    if compensate:
        ran = _compensate(config, store, state, run_id, task, grant or record.options.get("grant"))
    store.append(
        run_id,
        [
            (
                ev.ROLLBACK_DONE,
                {
                    "tasks": [c.task for c in changes],
                    "paths": result.restored,
                    "file": file,
                    "force": force,
                    "by": who,
                    "compensations": ran,
                },
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
        reason=f"restored {len(result.restored)} path(s)"
        + (f", overwrote {len(result.overwritten)} drifted" if result.overwritten else ""),
    )
    return RollbackOutcome(result.restored, result.overwritten, ran)


def _compensate(
    config: Config,
    store: RunStore,
    state: RunState,
    run_id: str,
    task: str | None,
    grant: str | None,
) -> list[dict[str, Any]]:
    """Run ``rollback:`` commands of succeeded tasks, newest completion first.

    A compensation acts outside the workspace with the task's capabilities, so it is
    authorized like the task itself (same grant, checked now) and audited.
    """
    from vigil.engine.authority import Authority

    authority = Authority(
        config, store, state.plan, run_id, grant_id=grant, auditor=Auditor(config, store=store)
    )
    done = [
        ts
        for ts in state.tasks.values()
        if ts.state == "succeeded" and ts.task.rollback and (task is None or ts.task.id == task)
    ]
    done.sort(key=lambda ts: ts.ended_at or 0.0, reverse=True)
    ran: list[dict[str, Any]] = []
    for ts in done:
        assert ts.task.rollback is not None
        decision = authority.authorize(ts.task)
        if not decision.allowed:
            ran.append(
                {"task": ts.task.id, "ok": False, "refused": f"{decision.code}: {decision.reason}"}
            )
            continue
        log = rollback_log(config.state_dir, run_id, ts.task.id)
        sink = LogSink(log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        env.update(state.plan.env)
        env.update(ts.task.env)
        env.update({"VIGIL_RUN_ID": run_id, "VIGIL_TASK_ID": ts.task.id, "VIGIL_ROLLBACK": "1"})
        out = run_process(
            shell_argv(ts.task.rollback, env.get("PATH")),
            env=env,
            cwd=config.workspace,
            sink=sink,
            timeout=state.plan.timeout_for(ts.task),
            stop=threading.Event(),
            tag=process_tag(config.workspace, run_id, ts.task.id, "rollback"),
        )
        sink.close()
        ran.append({"task": ts.task.id, "ok": out.ok, "exit_code": out.exit_code})
    return ran
