"""A task's ``rollback:`` command (its compensation), run the way its attempts run.

A compensation is a command of the task, written by whoever wrote the plan, so it gets
exactly the containment of the task's attempts: the same sandbox (allowlist root; keys,
grants, audit log and store hidden; an unprivileged identity when vigil runs as root; no
network unless the task declares it), the same environment (the plan's and the task's
``env``, the task's secrets and vigil's variables, never vigil's own environment) and
the same redaction of its log. It is authorized like the task (same grant, checked when
it runs), and each one that runs is audited with its exit code.

A compensation acts outside the workspace (an API, a registry), never on it: it runs over
a throwaway copy-on-write view of the workspace, as a dry run does, and whatever it
changed there is discarded and listed in its result. Only isolation ``off``, which the
user must ask for, runs it in the real workspace with vigil's whole environment.
"""

from __future__ import annotations

import threading
from typing import Any, NotRequired, TypedDict

from vigil.actions.run import RunAction
from vigil.config import Config
from vigil.engine import conditions
from vigil.engine import events as ev
from vigil.engine.attempt import (
    AttemptResult,
    AttemptSpec,
    StopSignal,
    attempt_workspace,
    execute_attempt,
    step_environment,
)
from vigil.engine.audit import Auditor
from vigil.engine.authority import Authority
from vigil.engine.state import SUCCEEDED, RunState, TaskState
from vigil.errors import VigilError
from vigil.layout import rollback_log
from vigil.words import plural
from vigil.workspace import Changeset, Workspace

LABEL = "rollback"
"""Names a compensation's sandbox and process tag in place of an attempt number."""


class Compensation(TypedDict):
    """What became of one task's ``rollback:`` command."""

    task: str
    ok: bool
    exit_code: NotRequired[int | None]
    refused: NotRequired[str]  # not run: the grant, policy or a halt refused it
    reason: NotRequired[str]  # why it did not succeed
    discarded: NotRequired[list[str]]  # workspace paths it changed, thrown away


class Compensator:
    """The ``rollback:`` commands of a run's succeeded tasks, newest completion first.

    Everything that can refuse before a command runs (the grant, the secrets, the
    sandbox's settings) is settled when this is built, so a caller can build it before
    it restores any file.
    """

    authority: Authority  # set only when there is a command to run
    workspace: Workspace

    def __init__(
        self,
        config: Config,
        store: Any,
        state: RunState,
        run_id: str,
        *,
        task: str | None = None,
        grant: str | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.run_id = run_id
        self.tasks = [
            ts
            for ts in state.tasks.values()
            if ts.state == SUCCEEDED and ts.task.rollback and (task is None or ts.task.id == task)
        ]
        self.tasks.sort(key=lambda ts: ts.ended_at or 0.0, reverse=True)
        self.auditor = Auditor(config, store=store)
        if not self.tasks:
            return  # nothing to authorize, resolve or sandbox
        self.authority = Authority(
            config, store, state.plan, run_id, grant_id=grant, auditor=self.auditor
        )
        self.authority.load_secrets()
        self.workspace = attempt_workspace(config)

    def run(self) -> list[Compensation]:
        """Authorize and run each command in its task's sandbox; one entry per task."""
        done: list[Compensation] = []
        for ts in self.tasks:
            decision = self.authority.authorize(ts.task)
            if not decision.allowed:
                refused = f"{decision.code}: {decision.reason}"
                done.append({"task": ts.task.id, "ok": False, "refused": refused})
                continue
            done.append(self._run_one(ts))
        return done

    def _run_one(self, ts: TaskState) -> Compensation:
        try:
            spec = self.spec(ts)
        except VigilError as exc:  # an env expression that fails now: the command never ran
            return {"task": ts.task.id, "ok": False, "reason": f"{exc.code}: {exc}"}
        result = _on_own_thread(spec, self.workspace)
        ok = result.outcome == ev.SUCCEEDED
        changed = result.extra.get("changeset")
        discarded = Changeset.from_dict(changed).paths if changed else []
        entry: Compensation = {
            "task": ts.task.id,
            "ok": ok,
            "exit_code": result.exit_code,
            "discarded": discarded,
        }
        if not ok:
            entry["reason"] = result.reason
        how = f"exit code {result.exit_code}" if result.exit_code is not None else result.reason
        note = (
            f"; discarded its changes to {plural(len(discarded), 'workspace path')}"
            if discarded
            else ""
        )
        self.auditor.record(
            action="rollback.compensate",
            decision="allow",
            run=self.run_id,
            task=ts.task.id,
            reason=f"rollback command ran ({self.workspace.isolation.mode}): {how}{note}",
        )
        return entry

    def spec(self, ts: TaskState) -> AttemptSpec:
        """The task's ``rollback:`` command as an attempt of the task: same sandbox, same
        environment and secrets, same redaction; its changes are captured only to be
        listed and thrown away."""
        task, plan = ts.task, self.state.plan
        assert task.rollback is not None
        succeeded = [a.number for a in ts.attempts if a.state == ev.SUCCEEDED]
        number = succeeded[-1] if succeeded else len(ts.attempts)
        secrets = self.authority.env_for(task)
        # ``${{ ... }}`` in env values as the task's attempts had them, never the raw text.
        plan_env, task_env = conditions.task_env(self.state, task)
        env = step_environment(
            {}, plan_env, task_env, secrets, run_id=self.run_id, task_id=task.id, attempt=number
        )
        env["VIGIL_ROLLBACK"] = "1"
        phase = plan.phases[ts.phase_index]
        return AttemptSpec(
            run_id=self.run_id,
            plan=plan,
            task=task,
            attempt=number,
            command=LABEL,
            action=RunAction(task.rollback),
            env=env,
            workdir=None,
            timeout=plan.timeout_for(task),
            checks=(),
            log_path=rollback_log(self.config.state_dir, self.run_id, task.id),
            network=self.authority.network_allowed(task, phase.requires),
            redactor=self.authority.stream,
            secrets=secrets,
            workspace=self.config.workspace,
            label=LABEL,
        )


def _on_own_thread(spec: AttemptSpec, workspace: Workspace) -> AttemptResult:
    """Run the compensation on a thread of its own, as the driver runs attempts: a root-run
    sandbox unshares the mount namespace of the thread that prepares it. Ctrl-C stops the
    command and waits for it to end."""
    stop = StopSignal()
    outcome: list[AttemptResult] = []

    def work() -> None:
        try:
            outcome.append(execute_attempt(spec, stop, workspace))
        except BaseException as exc:  # reported as the compensation's failure
            outcome.append(AttemptResult.from_error(spec.task_id, spec.attempt, exc))

    thread = threading.Thread(target=work, name="vigil-compensation")
    thread.start()
    try:
        thread.join()
    except BaseException:
        stop.set("interrupt")
        thread.join()
        raise
    return outcome[0]
