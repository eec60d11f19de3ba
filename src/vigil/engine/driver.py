"""The imperative shell around the pure core: journal, decide, act, repeat.

One driver drives one run at a time and holds the run's lock while it does. Every state
change is appended to the store *before* its effect starts (an attempt is journalled as
started before its process is spawned), so a crash at any instant leaves a journal from
which :meth:`Driver.drive` can pick up: attempts that were running are ended (their
leftover processes included) and recorded as interrupted, then retried.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.engine import events as ev
from vigil.engine.attempt import (
    AttemptResult,
    AttemptSpec,
    StopSignal,
    execute_attempt,
    host_environment,
    step_environment,
)
from vigil.engine.decide import (
    RunPhaseChecks,
    StartAttempt,
    blocked_by_failed_checks,
    decide,
)
from vigil.engine.state import PHASE_CHECKING, RunState
from vigil.executors.process import end_tagged
from vigil.plan.models import Check, Plan

Observer = Callable[[list[ev.Event], RunState], None]

# External processes may append only these kinds while a driver holds the run.
EXTERNAL_KINDS = frozenset({ev.CANCEL_REQUESTED})
POLL_INTERVAL = 0.2


@dataclass(frozen=True)
class PhaseCheckResult:
    """How a phase's completion checks ended."""

    phase: str
    passed: bool
    reason: str
    stopped: bool


def logs_dir(state_dir: Path, run_id: str) -> Path:
    """Where a run's captured output lives."""
    return state_dir / "logs" / run_id


def attempt_log(state_dir: Path, run_id: str, task_id: str, attempt: int) -> Path:
    """The log file of one attempt."""
    return logs_dir(state_dir, run_id) / task_id / f"{attempt}.log"


def phase_log(state_dir: Path, run_id: str, phase_id: str) -> Path:
    """The log file of one phase's completion checks."""
    return logs_dir(state_dir, run_id) / f"_phase.{phase_id}.log"


class Driver:
    """Drives one run to its end, or until it is interrupted."""

    def __init__(
        self,
        store: Any,
        run_id: str,
        plan: Plan,
        *,
        workspace: Path,
        state_dir: Path,
        max_parallel: int,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.plan = plan
        self.workspace = workspace
        self.state_dir = state_dir
        self.max_parallel = max(1, max_parallel)
        self.observer = observer
        self.stop = StopSignal()
        self.results: queue.Queue[AttemptResult | PhaseCheckResult] = queue.Queue()
        self.state = RunState(run_id, plan)
        self._cursor = 0
        self._staged: list[ev.Event] = []
        self._base_env = host_environment()

    # ------------------------------------------------------------------ public

    def interrupt(self) -> None:
        """Stop gracefully: running attempts end as interrupted; the run stays resumable."""
        self.stop.set("interrupt")

    def drive(self) -> str:
        """Run until the run ends (returns its state) or is interrupted (``interrupted``)."""
        with self.store.lock_run(self.run_id):
            journal = self._load()
            self.state = RunState.replay(self.run_id, self.plan, journal)
            if self.state.finished is not None:
                return self.state.finished
            self._recover()
            self._commit([(ev.DRIVER_STARTED, {"pid": os.getpid(), "host": socket.gethostname()})])
            with ThreadPoolExecutor(self.max_parallel, thread_name_prefix="vigil-attempt") as pool:
                try:
                    return self._loop(pool)
                finally:
                    self.stop.set(self.stop.reason or "interrupt")

    # ------------------------------------------------------------------ internals

    def _load(self) -> list[ev.Event]:
        stored = self.store.events(self.run_id)
        self._cursor = stored[-1].seq if stored else 0
        return [ev.Event(s.kind, s.data, s.at, s.seq) for s in stored]

    def _recover(self) -> None:
        """End what a crashed driver left running and record those attempts as interrupted."""
        leftovers = [ts for ts in self.state.tasks.values() if ts.running is not None]
        if leftovers:
            end_tagged(f"{self.run_id}/")
        batch = []
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

    def _commit(self, batch: list[tuple[str, dict[str, Any]]], *, now: float | None = None) -> None:
        """Apply ``batch`` to the state and append it to the journal in one transaction."""
        self._stage(batch, now=now)
        self._flush()

    def _stage(self, batch: list[tuple[str, dict[str, Any]]], *, now: float | None = None) -> None:
        """Apply ``batch`` to the state now; it reaches the journal with the next flush.

        Staging lets one loop iteration settle results, decide and start attempts with a
        single transaction. Nothing staged has an effect before :meth:`_flush` returns.
        """
        at = time.time() if now is None else now
        for kind, data in batch:
            event = ev.Event(kind, data, at)
            self.state.apply(event)
            self._staged.append(event)

    def _flush(self) -> None:
        """Append everything staged to the journal (durable on return)."""
        if not self._staged:
            return
        events, self._staged = self._staged, []
        self._cursor = self.store.append(
            self.run_id,
            [(e.kind, e.data) for e in events],
            at=events[-1].at,
            state=self.state.finished or "running",
            started_at=self.state.started_at,
            ended_at=self.state.ended_at,
        )
        if self.observer is not None:
            self.observer(events, self.state)

    def _poll_external(self) -> None:
        fresh = self.store.events(self.run_id, after=self._cursor)
        for stored in fresh:
            self._cursor = max(self._cursor, stored.seq)
            if stored.kind in EXTERNAL_KINDS:
                self.state.apply(ev.Event(stored.kind, stored.data, stored.at, stored.seq))
                if stored.kind == ev.CANCEL_REQUESTED:
                    self.stop.set("cancel")

    def _loop(self, pool: ThreadPoolExecutor) -> str:
        in_flight = 0
        last_poll = 0.0
        # Checks of a phase that was being validated when vigil died run again.
        pending_checks = [
            RunPhaseChecks(p.id) for p in self.state.phases if p.state == PHASE_CHECKING
        ]
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
                in_flight -= 1
                self._stage(self._result_events(result), now=now)
            if self.stop.event.is_set() and self.stop.reason == "interrupt":
                if in_flight == 0:
                    self._commit([(ev.DRIVER_STOPPED, {"reason": "interrupted"})])
                    return "interrupted"
                self._flush()
                self._wait(0.05)
                continue
            while True:
                decision = decide(self.state, now, self.max_parallel)
                if not decision.events:
                    break
                self._stage(decision.events, now=now)
            if decision.done or self.state.finished is not None:
                self._flush()
                return self.state.finished or "running"
            checks = pending_checks + decision.checks
            pending_checks = []
            self._stage(
                [ev.attempt_started(s.task, s.attempt, s.command) for s in decision.starts]
                + [(ev.PHASE_CHECK_STARTED, {"phase": c.phase}) for c in decision.checks],
                now=now,
            )
            # Durable before any effect: the attempts are in the journal before they run.
            self._flush()
            for start in decision.starts:
                pool.submit(self._run_attempt, self._spec(start))
                in_flight += 1
            for check in checks:
                pool.submit(self._run_checks, check.phase)
                in_flight += 1
            timeout = POLL_INTERVAL
            if decision.wake_at is not None:
                timeout = max(0.0, min(timeout, decision.wake_at - time.time()))
            self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        """Block until a result arrives or ``timeout`` passes; leave the result queued."""
        try:
            item = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        self.results.put(item)

    def _result_events(
        self, result: AttemptResult | PhaseCheckResult
    ) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(result, AttemptResult):
            return [result.event()]
        if result.stopped:
            return []  # checks run again on resume
        if result.passed:
            return [(ev.PHASE_FINISHED, {"phase": result.phase, "passed": True})]
        return blocked_by_failed_checks(self.state, result.phase, result.reason)

    def _spec(self, start: StartAttempt) -> AttemptSpec:
        task = self.plan.task(start.task)
        script = task.run if start.command == "main" else (task.fallback or task.run)
        env = step_environment(
            self._base_env,
            self.plan.env,
            task.env,
            run_id=self.run_id,
            task_id=task.id,
            attempt=start.attempt,
        )
        cwd = self.workspace / task.workdir if task.workdir else self.workspace
        return AttemptSpec(
            run_id=self.run_id,
            task_id=task.id,
            attempt=start.attempt,
            command=start.command,
            script=script,
            env=env,
            cwd=cwd,
            timeout=self.plan.timeout_for(task),
            checks=task.checks,
            log_path=attempt_log(self.state_dir, self.run_id, task.id, start.attempt),
        )

    def _run_attempt(self, spec: AttemptSpec) -> None:
        try:
            result = execute_attempt(spec, self.stop)
        except Exception as exc:  # an attempt must always report back
            result = AttemptResult(
                spec.task_id, spec.attempt, ev.FAILED, None, f"vigil error: {exc}", 0.0
            )
        self.results.put(result)

    def _run_checks(self, phase_id: str) -> None:
        phase = next(p for p in self.plan.phases if p.id == phase_id)
        spec = AttemptSpec(
            run_id=self.run_id,
            task_id=f"_phase.{phase_id}",
            attempt=0,
            command="validate",
            script="true",
            env=step_environment(
                self._base_env,
                self.plan.env,
                run_id=self.run_id,
                task_id=f"_phase.{phase_id}",
                attempt=0,
            ),
            cwd=self.workspace,
            timeout=None,
            checks=tuple(Check.model_validate(c.model_dump()) for c in phase.checks),
            log_path=phase_log(self.state_dir, self.run_id, phase_id),
        )
        try:
            result = execute_attempt(spec, self.stop)
        except Exception as exc:
            self.results.put(PhaseCheckResult(phase_id, False, f"vigil error: {exc}", False))
            return
        stopped = result.outcome in (ev.INTERRUPTED, ev.CANCELLED)
        reason = "" if result.outcome == ev.SUCCEEDED else f"phase {result.reason}"
        self.results.put(
            PhaseCheckResult(phase_id, result.outcome == ev.SUCCEEDED, reason, stopped)
        )


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
