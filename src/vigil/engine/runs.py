"""Runs as a library: start, resume, cancel and inspect them. The CLI is a thin layer on this."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vigil.config import Config, whoami
from vigil.engine import events as ev
from vigil.engine.driver import STOP_GRACE, Driver, FaultHook, Observer, graceful_interrupts
from vigil.engine.state import RunState
from vigil.errors import PlanChanged, RunLocked, RunNotFound, UsageError
from vigil.executors.process import end_tagged
from vigil.layout import run_tag
from vigil.plan.models import Plan


@dataclass(frozen=True)
class RunOutcome:
    """Where a run stands after this process stopped driving it."""

    run_id: str
    state: str
    resumed: bool


def new_run_id(now: float | None = None) -> str:
    """A fresh run id: sortable by time, unique by a random suffix."""
    stamp = datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def default_parallelism() -> int:
    """How many attempts run at once unless told otherwise: the number of CPUs."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def recorded_plan(record: Any) -> Plan:
    """The plan exactly as it was when the run started."""
    return Plan.from_record(record.plan_json)


def start_run(
    config: Config,
    store: Any,
    plan: Plan,
    plan_path: str,
    *,
    run_id: str | None = None,
    max_parallel: int | None = None,
    observer: Observer | None = None,
    dry_run: bool = False,
    review: bool = False,
    grant: str | None = None,
    prefetch_prompts: int = 0,
    allow_stale_prompts: bool = False,
    faults: FaultHook | None = None,
    stop_grace: float = STOP_GRACE,
) -> RunOutcome:
    """Start a new run of ``plan``; with an existing ``run_id``, resume that run instead.

    ``dry_run`` executes every command in throwaway sandboxes with the network off and
    commits nothing; ``review`` holds every task's changes for a person to approve.
    """
    from vigil.store import NewRun

    run_id = run_id or new_run_id()
    parallel = max_parallel or default_parallelism()
    existing = store.get_run(run_id)
    if existing is not None:
        if existing.plan_hash != plan.content_hash():
            raise PlanChanged(
                f"run {run_id} was started from a different version of {plan_path}",
            )
        return resume_run(
            config,
            store,
            run_id,
            max_parallel=max_parallel,
            observer=observer,
            faults=faults,
            stop_grace=stop_grace,
        )
    from vigil.engine.authority import declared_secrets
    from vigil.safety.secrets import check_secret_names

    # Refuse before anything exists: a task names a secret vigil.toml does not declare.
    check_secret_names(plan, declared_secrets(config))
    if not dry_run:
        # Refuse before anything exists: halted, or the grant does not cover the plan.
        from vigil.engine.audit import Auditor
        from vigil.engine.authority import Authority

        auditor = Auditor(config, store=store)
        Authority(config, store, plan, run_id, grant_id=grant, auditor=auditor).preflight(plan_path)
    created = store.create_run(
        NewRun(
            id=run_id,
            plan_name=plan.name,
            project=plan.project,
            plan_hash=plan.content_hash(),
            plan_json=plan.canonical_json(),
            plan_path=plan_path,
            workspace=str(config.workspace),
            created_at=time.time(),
            options={
                "max_parallel": parallel,
                "dry_run": dry_run,
                "review": review,
                "grant": grant,
                "prefetch_prompts": prefetch_prompts,
                "allow_stale_prompts": allow_stale_prompts,
            },
        )
    )
    if not created:  # lost a race with another process starting the same id
        return resume_run(
            config,
            store,
            run_id,
            max_parallel=max_parallel,
            observer=observer,
            faults=faults,
            stop_grace=stop_grace,
        )
    store.append(
        run_id,
        [(ev.RUN_CREATED, {"plan_hash": plan.content_hash(), "max_parallel": parallel})],
        at=time.time(),
        state="running",
    )
    return _drive(
        config,
        store,
        run_id,
        plan,
        parallel,
        observer,
        resumed=False,
        options=record_options(store, run_id),
        faults=faults,
        stop_grace=stop_grace,
    )


def resume_run(
    config: Config,
    store: Any,
    run_id: str,
    *,
    max_parallel: int | None = None,
    observer: Observer | None = None,
    faults: FaultHook | None = None,
    stop_grace: float = STOP_GRACE,
) -> RunOutcome:
    """Continue ``run_id`` from its journal. ``faults`` is for tests (see FAULT_POINTS)."""
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    parallel = max_parallel or int(record.options.get("max_parallel") or default_parallelism())
    return _drive(
        config,
        store,
        run_id,
        recorded_plan(record),
        parallel,
        observer,
        resumed=True,
        options=dict(record.options),
        faults=faults,
        stop_grace=stop_grace,
    )


def record_options(store: Any, run_id: str) -> dict[str, Any]:
    """The options a run was started with."""
    record = store.get_run(run_id)
    return dict(record.options) if record is not None else {}


def resumable_runs(store: Any) -> list[str]:
    """Ids of runs that have not ended."""
    return [r.id for r in store.list_runs(states=["running", "pending", "waiting"], limit=10_000)]


def _drive(
    config: Config,
    store: Any,
    run_id: str,
    plan: Plan,
    parallel: int,
    observer: Observer | None,
    *,
    resumed: bool,
    options: dict[str, Any],
    faults: FaultHook | None = None,
    stop_grace: float = STOP_GRACE,
) -> RunOutcome:
    from vigil.notify import Notifier

    with Notifier.from_config(config) as notifier:

        def observe(events: list[ev.Event], state: RunState) -> None:
            if observer is not None:
                observer(events, state)
            notifier.observe(events, state)

        driver = Driver(
            config,
            store,
            run_id,
            plan,
            max_parallel=parallel,
            observer=observe,
            options=options,
            faults=faults,
            stop_grace=stop_grace,
        )
        with graceful_interrupts(driver):
            state = driver.drive()
        if state in ("succeeded", "failed", "cancelled"):
            from vigil.report import write_report

            write_report(config, store, run_id)
    return RunOutcome(run_id, state, resumed)


def cancel_run(
    config: Config, store: Any, run_id: str, *, reason: str = "", wait: float = 30.0
) -> str:
    """Cancel ``run_id``: its driver (if any) stops every process; returns the final state."""
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    if record.state in ("succeeded", "failed", "cancelled"):
        return str(record.state)
    who = whoami()
    store.append(
        run_id,
        [(ev.CANCEL_REQUESTED, {"reason": reason or f"cancelled by {who}", "by": who})],
        at=time.time(),
    )
    try:
        lock = store.lock_run(run_id)
        lock.__enter__()
    except RunLocked:
        # A driver is alive: it sees the request within a poll interval and stops.
        deadline = time.time() + wait
        while time.time() < deadline:
            current = store.get_run(run_id)
            if current is not None and current.state == "cancelled":
                return "cancelled"
            time.sleep(0.1)
        raise UsageError(
            f"run {run_id} did not stop within {wait:g}s",
            "Its driver may be stuck; run `vigil cancel` again or stop that process.",
        ) from None
    try:
        # Nobody drives the run: end what a crashed driver left behind and close the run.
        end_tagged(run_tag(config.workspace, run_id))
        stored = store.events(run_id)
        state = RunState.replay(
            run_id, recorded_plan(record), [ev.Event(s.kind, s.data, s.at, s.seq) for s in stored]
        )
        batch: list[tuple[str, dict[str, Any]]] = []
        for ts in state.tasks.values():
            running = ts.running
            if running is not None:
                batch.append(
                    ev.attempt_finished(
                        ts.task.id, running.number, ev.CANCELLED, reason="cancelled"
                    )
                )
    finally:
        lock.__exit__(None, None, None)
    if batch:
        store.append(run_id, batch, at=time.time())
    # Settle the rest through the normal path so the journal tells one consistent story.
    outcome = resume_run(config, store, run_id)
    return outcome.state
