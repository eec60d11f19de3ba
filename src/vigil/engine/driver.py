"""The imperative shell around the pure core: journal, decide, act, repeat.

One driver drives one run at a time and holds the run's lock while it does. Every state
change is appended to the store *before* its effect starts (an attempt is journalled as
started before its process is spawned), so a crash at any instant leaves a journal from
which :meth:`Driver.drive` can pick up: attempts that were running are ended (their
leftover processes included) and recorded as interrupted, then retried.
"""

from __future__ import annotations

import functools
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.actions.run import RunAction
from vigil.actions.select import ActionResources, action_for
from vigil.config import Config
from vigil.engine import conditions, ledger
from vigil.engine import events as ev
from vigil.engine.attempt import (
    AttemptResult,
    AttemptSpec,
    StopSignal,
    attempt_workspace,
    execute_attempt,
    step_environment,
)
from vigil.engine.attest import EXTERNAL_KINDS, JournalSigner, checked_journal, head_file
from vigil.engine.audit import Auditor
from vigil.engine.authority import Authority, NotGranted
from vigil.engine.decide import (
    CommitChangeset,
    StartAttempt,
    blocked_by_failed_checks,
    decide,
)
from vigil.engine.decisions import (
    DECISION_KINDS,
    DecisionGate,
    Verdict,
    audit_fields,
    decision_open,
    note_for,
)
from vigil.engine.nursery import Nursery
from vigil.engine.options import RunOptions
from vigil.engine.state import PHASE_CHECKING, RunState
from vigil.errors import Category, CommitFailed, RunTampered, VigilError, category_of
from vigil.executors.process import DEFAULT_GRACE, LogSink, end_tagged
from vigil.layout import attempt_log, logs_dir, phase_log, process_tag, run_tag, write_private
from vigil.plan.models import Check, Plan
from vigil.safety.decisions import decision_key
from vigil.safety.halt import halt_of
from vigil.safety.policy import Decision
from vigil.words import plural
from vigil.workspace import Changeset, Conflict
from vigil.workspace.apply import mismatches

if TYPE_CHECKING:
    from vigil.store import RunStore

Observer = Callable[[list[ev.Event], RunState], None]
FaultHook = Callable[[str], None]
"""Called with the name of each point where a worker can fail (see :data:`FAULT_POINTS`);
tests pass one that raises there. Production code passes none."""

FAULT_POINTS = (
    "attempt.authorize",
    "attempt.execute",
    "attempt.report",
    "commit.audit",
    "commit.apply",
    "checks.execute",
)

# How long a stopping driver waits for its workers before it stops waiting: long enough
# for a step's process group to be ended (DEFAULT_GRACE), short enough that Ctrl-C and
# `vigil cancel` always take effect.
STOP_GRACE = 3 * DEFAULT_GRACE

POLL_INTERVAL = 0.2


@dataclass(frozen=True)
class CommitResult:
    """How applying an attempt's changeset to the workspace ended."""

    task: str
    attempt: int
    ok: bool
    code: str | None = None
    category: str | None = None
    reason: str = ""

    @classmethod
    def from_error(cls, task: str, attempt: int, exc: BaseException) -> CommitResult:
        """A commit that failed with ``exc`` (a VigilError keeps its code and category)."""
        error = exc if isinstance(exc, VigilError) else CommitFailed(f"{type(exc).__name__}: {exc}")
        return cls(task, attempt, False, error.code, str(error.category), str(error))


@dataclass(frozen=True)
class PhaseCheckResult:
    """How a phase's completion checks ended."""

    phase: str
    passed: bool
    reason: str
    stopped: bool


class Driver:
    """Drives one run to its end, or until it is interrupted."""

    def __init__(
        self,
        config: Config,
        store: RunStore,
        run_id: str,
        plan: Plan,
        *,
        max_parallel: int,
        observer: Observer | None = None,
        options: RunOptions | None = None,
        faults: FaultHook | None = None,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.config = config
        self.store = store
        self.run_id = run_id
        self.plan = plan
        self.workspace = config.workspace
        self.state_dir = config.state_dir
        self.max_parallel = max(1, max_parallel)
        self.observer = observer
        self.options = options or RunOptions()
        self.stop = StopSignal()
        self.faults = faults
        self.stop_grace = stop_grace
        self.results: queue.Queue[AttemptResult | PhaseCheckResult | CommitResult] = queue.Queue()
        self.work: Nursery[AttemptResult | PhaseCheckResult | CommitResult] = Nursery(
            self.results.put, name="vigil-attempt"
        )
        self._stopping_since: float | None = None
        self.state = RunState(run_id, plan, self.options)
        self._cursor = 0
        self._own: set[int] = set()  # seqs of our events above the cursor
        self._staged: list[ev.Event] = []
        self.ws = attempt_workspace(config)
        self.auditor = Auditor(config, store=store)
        self.gate = DecisionGate(run_id)
        self.signer: JournalSigner | None = None  # set once the journal is verified
        self.resources = ActionResources.from_config(
            config, allow_stale=self.options.allow_stale_prompts
        )
        self._prefetch_width = self.options.prefetch_prompts
        self._prefetched: set[tuple[str, int]] = set()
        self.authority = Authority(
            config, store, plan, run_id, grant_id=self.options.grant, auditor=self.auditor
        )
        # Dry runs: the authorization of each attempt, taken (and audited) before it was
        # journalled as started, for its worker to act on; or what raised while taking it.
        self._verdicts: dict[tuple[str, int], Decision | Exception] = {}

    # ------------------------------------------------------------------ public

    def interrupt(self) -> None:
        """Stop gracefully: running attempts end as interrupted; the run stays resumable."""
        self.stop.set("interrupt")

    def drive(self) -> str:
        """Run until the run ends (returns its state) or is interrupted (``interrupted``)."""
        with self.store.lock_run(self.run_id):
            journal = self._load()
            # Nothing of the journal is acted on unless vigil's own processes wrote it.
            head = head_file(self.state_dir, self.run_id)
            signed = checked_journal(self.run_id, journal, auditor=self.auditor, head=head)
            self.signer = JournalSigner(self.run_id, decision_key(), signed, head=head)
            created = next((e for e in journal if e.kind == ev.RUN_CREATED), None)
            if created is not None and created.data.get("plan_hash") != self.plan.content_hash():
                # Signed events of another run of the same id, under this run's sealed plan.
                raise RunTampered(f"run {self.run_id}: its journal was started by another plan")
            # A person's decisions are admitted only if their signatures verify.
            self.state, fresh = self.gate.replay(self.plan, journal, self.options)
            if self.state.finished is not None:
                return self.state.finished
            self._note_decisions(fresh)
            self._recover()
            # A commit cut short by a crash is finished before anything else runs.
            self.ws.recover()
            self._charge_budget()
            self.authority.load_secrets()
            self.auditor.log.redact = self.authority.redact
            self._commit([ev.driver_started(os.getpid(), socket.gethostname())])
            if self._prefetch_width and not self.state.dry_run:
                from vigil.llm.prefetch import Prefetcher

                self.resources.prefetcher = Prefetcher(self._prefetch_width)
            try:
                outcome = self._loop()
            finally:
                self.stop.set(self.stop.reason or "interrupt")
                # Normally nothing is in flight here; after an error in the loop itself,
                # workers get the grace to end their processes, and no longer.
                self.work.close(0.0 if self._stopping_since is not None else self.stop_grace)
                if self.resources.prefetcher is not None:
                    self.resources.prefetcher.close()
            if self.state.finished is not None:
                self.auditor.record(
                    action="run.end",
                    decision="allow",
                    run=self.run_id,
                    reason=f"run {self.state.finished}",
                )
                self.auditor.seal()
            return outcome

    # ------------------------------------------------------------------ internals

    def _charge_budget(self) -> None:
        """A resumed run's model budget starts from what its journal says was spent."""
        tokens, cost = 0, 0.0
        for ts in self.state.tasks.values():
            for a in ts.attempts:
                usage = a.data.get("usage") or {}
                tokens += int(usage.get("total_tokens", 0))
                cost += float(usage.get("cost", 0.0))
        if tokens or cost:
            self.resources = ActionResources.from_config(
                self.config,
                spent_tokens=tokens,
                spent_cost=cost,
                allow_stale=self.resources.allow_stale,
            )

    def _load(self) -> list[ev.Event]:
        stored = self.store.events(self.run_id)
        self._cursor = stored[-1].seq if stored else 0
        return [ev.Event(s.kind, s.data, s.at, s.seq) for s in stored]

    def _recover(self) -> None:
        """End what a crashed driver left running and record those attempts as interrupted."""
        leftovers = [ts for ts in self.state.tasks.values() if ts.running is not None]
        if leftovers:
            end_tagged(run_tag(self.workspace, self.run_id))
        batch: list[ev.Entry] = []
        for ts in leftovers:
            running = ts.running
            assert running is not None
            batch.append(
                ev.attempt_finished(
                    ts.task.id,
                    running.number,
                    ev.INTERRUPTED,
                    reason="vigil stopped while the attempt was running",
                )
            )
        if batch:
            self._commit(batch)

    def _commit(self, batch: Sequence[ev.Entry], *, now: float | None = None) -> None:
        """Apply ``batch`` to the state and append it to the journal in one transaction."""
        self._stage(batch, now=now)
        self._flush()

    def _stage(self, batch: Sequence[ev.Entry], *, now: float | None = None) -> None:
        """Apply ``batch`` to the state now; it reaches the journal with the next flush.

        Staging lets one loop iteration settle results, decide and start attempts with a
        single transaction. Nothing staged has an effect before :meth:`_flush` returns.
        """
        at = time.time() if now is None else now
        for kind, data in batch:
            event = ev.Event(kind, data, at)
            self.state.apply(event)
            self._staged.append(event)

    def _flush(self, run_state: str | None = None) -> None:
        """Append everything staged to the journal (durable on return)."""
        if not self._staged and run_state is None:
            return
        events, self._staged = self._staged, []
        self._append_own(
            [(e.kind, e.data) for e in events],
            at=events[-1].at if events else time.time(),
            run_state=run_state,
        )
        if self.observer is not None:
            self.observer(events, self.state)

    def _append_own(
        self,
        entries: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        at: float,
        run_state: str | None = None,
    ) -> int:
        """Sign and append ``entries``; the poll then passes over them. Returns the last seq."""
        assert self.signer is not None, "the driver appends only after drive() verified"
        last = self.signer.append(
            self.store,
            entries,
            at=at,
            state=self.state.finished or run_state or "running",
            started_at=self.state.started_at,
            ended_at=self.state.ended_at,
        )
        first = last - len(entries) + 1
        if first == self._cursor + 1:
            self._cursor = last  # nothing came in between: no need to read our own events
        else:
            # Another process appended (an answer, a cancel) since the last poll: the next
            # poll reads from the old cursor, so nothing of theirs is skipped, and passes
            # over these events of our own.
            self._own.update(range(first, last + 1))
        return last

    def _note_decisions(self, judged: list[tuple[ev.Event, Verdict]]) -> None:
        """Audit each decision acted on or refused, then journal that it was (one step)."""
        for event, verdict in judged:
            self.auditor.record(**audit_fields(self.run_id, event, verdict))
            self._commit([note_for(event, verdict)])

    def _poll_external(self) -> None:
        halted = halt_of(self.store, self.plan.project, self.authority.ledger)
        if halted is not None and not self.state.cancel_requested:
            # A halt stops the run at this safe point: running attempts end and are discarded.
            reason = f"halted by {halted.actor}: {halted.reason}"
            self.auditor.record(
                action="run.halt",
                decision="deny",
                run=self.run_id,
                actor=halted.actor,
                reason=reason,
            )
            self._commit([ev.cancel_requested(reason, halted.actor)])
            self.stop.set("cancel")
        fresh = self.store.events(self.run_id, after=self._cursor)
        for stored in fresh:
            self._cursor = max(self._cursor, stored.seq)
            if stored.seq in self._own:
                self._own.discard(stored.seq)
                continue
            if stored.kind in EXTERNAL_KINDS:
                event = ev.Event(stored.kind, stored.data, stored.at, stored.seq)
                if stored.kind in DECISION_KINDS:
                    verdict = self.gate.judge(event, self.state)
                    if verdict.relevant and (not verdict.admit or verdict.statement is not None):
                        self._note_decisions([(event, verdict)])
                    if not verdict.admit:
                        continue
                self.state.apply(event)
                if stored.kind == ev.CANCEL_REQUESTED:
                    self.stop.set("cancel")
        self._take_delivered()

    def _take_delivered(self) -> None:
        """Decisions left on this machine (:mod:`vigil.engine.ledger`) that the store did not
        bring: journalled by the driver itself, then judged like any other."""
        for path, kind, data in ledger.pending(self.state_dir, self.run_id):
            if kind not in DECISION_KINDS or not decision_open(kind, data, self.state):
                ledger.done(path)  # arrived through the store, or nothing waits for it
                continue
            self._flush()
            now = time.time()
            event = ev.Event(kind, data, now, self._append_own([(kind, data)], at=now))
            verdict = self.gate.judge(event, self.state)
            if verdict.relevant and (not verdict.admit or verdict.statement is not None):
                self._note_decisions([(event, verdict)])
            if verdict.admit:
                self.state.apply(event)
            ledger.done(path)

    def _loop(self) -> str:
        last_poll = 0.0
        # Checks of a phase that was being validated when vigil died run again.
        for phase in self.state.phases:
            if phase.state == PHASE_CHECKING:
                self._start_checks(phase.id)
        # Commits journalled as started but not finished run again (they are idempotent).
        for task_id, number in self.state.committing.items():
            self._start_commit(CommitChangeset(task_id, number))
        while True:
            now = time.time()
            if now - last_poll >= POLL_INTERVAL:
                self._poll_external()
                last_poll = now
            while True:
                try:
                    result = self.results.get_nowait()
                except queue.Empty:
                    break
                self._stage(self._result_events(result), now=now)
            if self.stop.event.is_set():
                stopped = self._stopping(now)
                if stopped is not None:
                    return stopped
                if self.stop.reason == "interrupt":
                    self._flush()
                    self._wait(0.05)
                    continue
            commits: list[CommitChangeset] = []
            while True:
                decision = decide(self.state, now, self.max_parallel)
                commits += decision.commits
                if not decision.events:
                    break
                self._stage(decision.events, now=now)
            if decision.done or self.state.finished is not None:
                self._flush()
                return self.state.finished or "running"
            if decision.waiting and not self.work.in_flight():
                self._flush(run_state="waiting")
                return "waiting"
            starts = decision.starts
            if self.state.dry_run and starts:
                starts = self._dry_run_starts(starts, now)
            self._stage(
                [ev.attempt_started(s.task, s.attempt, s.command) for s in starts]
                + [ev.phase_check_started(c.phase) for c in decision.checks],
                now=now,
            )
            # Durable before any effect: attempts, checks and commits are in the journal
            # (``changeset.committing`` included) before they run.
            self._flush()
            for start in starts:
                self._start_attempt(start)
            for check in decision.checks:
                self._start_checks(check.phase)
            for commit in commits:
                self._start_commit(commit)
            if self.resources.prefetcher is not None:
                self._prefetch()
            timeout = POLL_INTERVAL if len(starts) == len(decision.starts) else 0.0
            if decision.wake_at is not None:
                timeout = max(0.0, min(timeout, decision.wake_at - time.time()))
            self._wait(timeout)

    def _dry_run_starts(self, starts: list[StartAttempt], now: float) -> list[StartAttempt]:
        """In a dry run, authorize each attempt before it is journalled as started.

        A task whose grant is missing or does not cover it is not run: it is journalled
        as skipped with the grant it would need, and what needs it dry-runs on without
        its changes. Every decision is audited as in a real run; a halt or an audit log
        that cannot be written refuses the attempt as it would a real one.
        """
        kept: list[StartAttempt] = []
        for start in starts:
            task = self.plan.task(start.task)
            if not self.authority.privileged(task):
                kept.append(start)
                continue
            try:
                verdict = self.authority.authorize_dry_run(task)
            except Exception as exc:  # reported by the attempt, as if raised in its worker
                self._verdicts[(start.task, start.attempt)] = exc
                kept.append(start)
                continue
            if isinstance(verdict, NotGranted):
                self._stage(
                    [
                        ev.task_not_granted(
                            start.task,
                            environment=verdict.environment,
                            capabilities=list(verdict.capabilities),
                            code=verdict.code,
                            reason=verdict.reason,
                        )
                    ],
                    now=now,
                )
                continue
            self._verdicts[(start.task, start.attempt)] = verdict
            kept.append(start)
        return kept

    # ------------------------------------------------------------------ owned work

    def _start_attempt(self, start: StartAttempt) -> None:
        key = ("attempt", start.task, start.attempt)
        try:
            spec = self._spec(start)
        except Exception as exc:  # a spec that cannot be built is this attempt's failure
            self.results.put(AttemptResult.from_error(start.task, start.attempt, exc))
            return
        self.work.start(
            key,
            functools.partial(self._run_attempt, spec),
            functools.partial(AttemptResult.from_error, start.task, start.attempt),
        )

    def _start_checks(self, phase_id: str) -> None:
        def failed(exc: BaseException) -> PhaseCheckResult:
            return PhaseCheckResult(phase_id, False, f"vigil error: {exc}", False)

        self.work.start(("checks", phase_id), functools.partial(self._run_checks, phase_id), failed)

    def _start_commit(self, commit: CommitChangeset) -> None:
        self.work.start(
            ("commit", commit.task, commit.attempt),
            functools.partial(self._run_commit, commit),
            functools.partial(CommitResult.from_error, commit.task, commit.attempt),
        )

    def _fault(self, point: str) -> None:
        if self.faults is not None:
            self.faults(point)

    def _stopping(self, now: float) -> str | None:
        """While stopping: the driver's outcome once it may stop, else None (keep going).

        Workers get :attr:`stop_grace` to end their processes and report. After that an
        interrupted run stops anyway (resume ends what is left by its tag); a cancelled
        run records its stuck attempts as cancelled, ends their processes and settles.
        """
        if self._stopping_since is None:
            self._stopping_since = now
        in_flight = self.work.in_flight()
        overdue = now - self._stopping_since >= self.stop_grace
        if self.stop.reason == "interrupt":
            if in_flight and not overdue:
                return None
            reason = "interrupted"
            if in_flight:
                reason += (
                    f"; {plural(len(in_flight), 'worker')} did not stop within {self.stop_grace:g}s"
                )
            self._commit([ev.driver_stopped(reason)])
            return "interrupted"
        if not in_flight or not overdue:
            return None
        if any(key[0] == "commit" for key in in_flight if isinstance(key, tuple)):
            # A commit may still land: it cannot be recorded as failed. Stop driving;
            # resume finishes or undoes it (Workspace.recover) before anything else.
            why = f"a commit did not finish within {self.stop_grace:g}s of the cancel"
            self._commit([ev.driver_stopped(why)])
            return "interrupted"
        batch: list[ev.Entry] = []
        for key in in_flight:
            self.work.abandon(key)
            if isinstance(key, tuple) and key[0] == "attempt":
                _, task_id, number = key
                end_tagged(process_tag(self.workspace, self.run_id, task_id, number), grace=0.0)
                why = f"cancelled; the attempt did not stop within {self.stop_grace:g}s"
                batch.append(ev.attempt_finished(task_id, number, ev.CANCELLED, reason=why))
        self._stage(batch, now=now)
        return None

    def _wait(self, timeout: float) -> None:
        """Block until a result arrives or ``timeout`` passes; leave the result queued."""
        try:
            item = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        self.results.put(item)

    def _result_events(
        self, result: AttemptResult | PhaseCheckResult | CommitResult
    ) -> list[ev.Entry]:
        if isinstance(result, AttemptResult):
            kind, finished = result.event()
            finished["reason"] = self.authority.redact(str(finished.get("reason") or ""))
            if finished.get("failed_output") is not None:
                finished["failed_output"] = self.authority.redact(str(finished["failed_output"]))
            if finished.get("output") is not None:
                finished["output"] = self.authority.redact(str(finished["output"]))
            outputs = finished.get("outputs")
            if isinstance(outputs, dict):
                finished["outputs"] = {k: self.authority.redact(str(v)) for k, v in outputs.items()}
            return [(kind, finished)]
        if isinstance(result, CommitResult):
            if result.ok:
                return [ev.changeset_committed(result.task, result.attempt)]
            return [
                ev.changeset_failed(
                    result.task,
                    result.attempt,
                    code=result.code or CommitFailed.code,
                    category=result.category or str(CommitFailed.category),
                    reason=self.authority.redact(result.reason),
                )
            ]
        if result.stopped:
            return []  # checks run again on resume
        if result.passed:
            return [ev.phase_finished(result.phase, True)]
        return blocked_by_failed_checks(self.state, result.phase, result.reason)

    def _spec(self, start: StartAttempt) -> AttemptSpec:
        task = self.plan.task(start.task)
        # ``${{ ... }}`` in env values are evaluated here, and reach the step as data.
        plan_env, task_env = conditions.task_env(self.state, task)
        env = step_environment(
            {},
            plan_env,
            task_env,
            self.authority.env_for(task),
            run_id=self.run_id,
            task_id=task.id,
            attempt=start.attempt,
        )
        checks = tuple(task.checks)
        allowed: tuple[str, ...] = ()
        prior = None
        ts = self.state.tasks[task.id]
        if task.agent is not None:
            from vigil.actions.agent import build_prior, gate_commands

            checks += tuple(Check(run=g.run, name=g.kind) for g in gate_commands(task.agent))
            allowed = tuple(task.agent.allowed_paths)
            failed = [a for a in ts.attempts if a.data.get("validation_failed")]
            if failed:
                last = failed[-1]
                prior = build_prior(
                    last.number,
                    str(last.data.get("failed_command", "")),
                    str(last.data.get("failed_output", "")),
                    self.authority.redactor,
                    reason=last.reason,
                )
        inputs = {
            need: self.state.tasks[need].output or ""
            for need in task.needs
            if self.state.tasks[need].output is not None
        }
        return AttemptSpec(
            run_id=self.run_id,
            plan=self.plan,
            task=task,
            attempt=start.attempt,
            command=start.command,
            action=action_for(task, start.command, self.resources),
            env=env,
            workdir=task.workdir,
            timeout=self.plan.timeout_for(task),
            checks=checks,
            log_path=attempt_log(self.state_dir, self.run_id, task.id, start.attempt),
            # Declared, and (checked before the attempt runs) granted or freed by the
            # policy: a dry run gets exactly the network a real run would.
            network=self.authority.network_allowed(task, self._phase_of(task.id).requires),
            redactor=self.authority.stream,
            base_layers=self._base_layers(task.id),
            secrets=self.authority.env_for(task),
            inputs=inputs,
            expressions=conditions.task_context(self.state, task),
            prior=prior,
            workspace=self.workspace,
            allowed_paths=allowed,
            hidden=tuple(self.ws.hidden),
        )

    def _base_layers(self, task_id: str | None) -> tuple[Changeset, ...]:
        """In a dry run, what an attempt stacks on: its dependencies' uncommitted changes
        and those of every earlier phase, in the order they were made."""
        if not self.state.dry_run:
            return ()
        state = self.state
        wanted: set[str] = set()
        if task_id is None:
            wanted = set(state.tasks)
        else:
            ts = state.tasks[task_id]
            stack = list(ts.task.needs)
            while stack:
                need = stack.pop()
                if need not in wanted:
                    wanted.add(need)
                    stack.extend(state.tasks[need].task.needs)
            wanted |= {t for t, o in state.tasks.items() if o.phase_index < ts.phase_index}
        layers = []
        for tid in wanted:
            done = state.tasks[tid]
            last = done.attempts[-1] if done.attempts else None
            if done.state == "succeeded" and last is not None and last.changeset:
                layers.append((last.ended_at or 0.0, Changeset.from_dict(last.changeset)))
        return tuple(cs for _, cs in sorted(layers, key=lambda item: item[0]))

    def _prefetch(self) -> None:
        """Ask the model ahead for llm tasks queued behind the parallelism limit.

        A prepared reply is used only if the workspace the task then starts on is the one
        it was prepared from (content fingerprint), unless stale prompts are allowed.
        """
        from vigil.actions.llm import LlmAction, call_model
        from vigil.engine.attempt import Attempt
        from vigil.workspace.direct import DirectSandbox

        prefetcher = self.resources.prefetcher
        for tid in list(self.state.ready)[: self._prefetch_width * 2]:
            ts = self.state.tasks[tid]
            number = len(ts.attempts) + 1
            if ts.task.llm is None or (tid, number) in self._prefetched:
                continue
            self._prefetched.add((tid, number))
            try:
                allowed = self.authority.authorize(ts.task).allowed
            except VigilError:
                continue  # e.g. the audit log is full: the attempt meets the failure itself
            if not allowed:
                continue  # refused (and audited); the attempt will meet the refusal itself
            spec = self._spec(StartAttempt(tid, number, "main"))
            action = spec.action
            assert isinstance(action, LlmAction)
            sink = LogSink(logs_dir(self.state_dir, self.run_id) / "_prefetch.log")
            ctx = Attempt(spec, StopSignal(), DirectSandbox(self.workspace), sink)
            try:
                request = action.request(ctx)
                fingerprint = ctx.fingerprint()
            except Exception:
                sink.close()
                continue  # the attempt renders the prompt again and reports the problem
            sink.close()
            key = ctx.secrets.get(request.api_key_secret or "") if request.api_key_secret else None
            call = functools.partial(
                call_model,
                request,
                api_key=key,
                config=self.resources.llm,
                budget=self.resources.budget,
                stop=self.stop.event,
            )
            prefetcher.submit(tid, request.hash, fingerprint, call)

    def _phase_of(self, task_id: str) -> Any:
        return self.plan.phases[self.state.tasks[task_id].phase_index]

    def _run_attempt(self, spec: AttemptSpec) -> AttemptResult:
        """One attempt in a worker; whatever it raises, the nursery reports as its failure."""
        # Authority is checked right before the action, not when the run started. A dry
        # run took (and audited) its decision just before journalling the attempt.
        self._fault("attempt.authorize")
        verdict = self._verdicts.pop((spec.task_id, spec.attempt), None)
        if isinstance(verdict, Exception):
            raise verdict
        decision = verdict if verdict is not None else self.authority.authorize(spec.task)
        if not decision.allowed:
            write_private(spec.log_path, f"[vigil] refused: {decision.code}: {decision.reason}\n")
            category = category_of(decision.code) or Category.REFUSED
            return AttemptResult(
                spec.task_id,
                spec.attempt,
                ev.FAILED,
                None,
                f"{decision.code}: {decision.reason}",
                0.0,
                {},
                decision.code,
                str(category),
            )
        self._fault("attempt.execute")
        result = execute_attempt(spec, self.stop, self.ws)
        self._fault("attempt.report")
        return result

    def _run_commit(self, commit: CommitChangeset) -> CommitResult:
        """Apply one changeset in a worker, audited before it lands."""
        attempt = next(
            a for a in self.state.tasks[commit.task].attempts if a.number == commit.attempt
        )
        assert attempt.changeset is not None
        changeset = Changeset.from_dict(attempt.changeset)
        # The decision goes on the record before its effect; if the record cannot be
        # written, the changes do not land (the commit fails, the attempt is retried).
        self._fault("commit.audit")
        self.auditor.record(
            action="changeset.commit",
            decision="allow",
            run=self.run_id,
            task=commit.task,
            reason=f"attempt {commit.attempt} committed",
        )
        self._fault("commit.apply")
        try:
            since = attempt.data.get("base_generation")
            self.ws.commit(changeset, since=int(since) if since is not None else None)
        except Conflict as exc:
            if mismatches(self.ws.root, changeset, expect="after"):
                return CommitResult.from_error(commit.task, commit.attempt, exc)
            # Already in place: the commit finished before a crash cut its journal short.
        return CommitResult(commit.task, commit.attempt, True)

    def _run_checks(self, phase_id: str) -> PhaseCheckResult:
        phase = next(p for p in self.plan.phases if p.id == phase_id)
        # The phase's checks run as a pseudo-task with no action of its own.
        pseudo = phase.tasks[0].model_copy(
            update={"id": f"_phase.{phase_id}", "run": "true", "needs": (), "checks": ()}
        )
        spec = AttemptSpec(
            run_id=self.run_id,
            plan=self.plan,
            task=pseudo,
            attempt=0,
            command="validate",
            action=RunAction("true"),
            env=step_environment(
                {},
                conditions.plan_env(self.state),
                run_id=self.run_id,
                task_id=f"_phase.{phase_id}",
                attempt=0,
            ),
            workdir=None,
            timeout=None,
            checks=phase.checks,
            log_path=phase_log(self.state_dir, self.run_id, phase_id),
            base_layers=self._base_layers(None),
            capture=False,
            workspace=self.workspace,
        )
        self._fault("checks.execute")
        result = execute_attempt(spec, self.stop, self.ws)
        stopped = result.outcome in (ev.INTERRUPTED, ev.CANCELLED)
        reason = "" if result.outcome == ev.SUCCEEDED else f"phase {result.reason}"
        return PhaseCheckResult(phase_id, result.outcome == ev.SUCCEEDED, reason, stopped)


@contextmanager
def graceful_interrupts(driver: Driver) -> Iterator[None]:
    """While driving, Ctrl-C and SIGTERM stop the run gracefully instead of killing vigil."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        driver.interrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
