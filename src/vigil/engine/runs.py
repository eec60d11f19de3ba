"""Runs as a library: start, resume, cancel and inspect them. The CLI is a thin layer on this."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vigil.config import Config, whoami
from vigil.engine import events as ev
from vigil.engine import hooks
from vigil.engine.driver import STOP_GRACE, Driver, FaultHook, Observer, graceful_interrupts
from vigil.engine.options import RunOptions
from vigil.engine.state import RunState
from vigil.errors import PlanChanged, RunLocked, RunNotFound, RunTampered, UsageError
from vigil.executors.process import end_tagged
from vigil.layout import run_tag
from vigil.plan.inputs import resolve_inputs
from vigil.plan.models import Plan
from vigil.plan.selection import Selection, left_out

if TYPE_CHECKING:
    from vigil.store import RunRecord, RunStore


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


def recorded_plan(record: RunRecord) -> Plan:
    """The plan exactly as it was when the run started (for display: see :func:`sealed_plan`
    before running anything of it)."""
    return Plan.from_record(record.plan_json)


SEAL = "seal"
"""The key of a run's options that holds its seal."""


def _sealed_facts(
    run_id: str, plan_hash: str, options: RunOptions, workspace: str
) -> dict[str, Any]:
    return {
        "run": run_id,
        "plan_hash": plan_hash,
        "options": options.to_dict(),
        "workspace": workspace,
    }


def seal_run(
    config: Config, run_id: str, plan: Plan, options: RunOptions, *, now: float | None = None
) -> dict[str, str]:
    """A statement, signed with the starting person's key, of what the run runs.

    The plan, the options and the workspace are kept in the store, and whoever can write
    the store (a step granted the network, a local user) could rewrite them, so that the
    next `vigil resume`, an approval from the dashboard or `rollback --all` runs commands
    nobody started. The seal binds the plan's hash, the options and the workspace to the
    run id under a key no step can reach; :func:`sealed_plan` checks it before anything of
    the recorded plan runs again.
    """
    from vigil.safety.decisions import RUN_START, decision_key, sign_statement

    facts = _sealed_facts(run_id, plan.content_hash(), options, str(config.workspace))
    return sign_statement(
        decision_key(),
        kind=RUN_START,
        project=plan.project,
        run=run_id,
        subject=plan.content_hash(),
        task=None,
        answer=facts,
        by=whoami(),
        now=now,
    )


def sealed_plan(config: Config, store: RunStore, record: RunRecord) -> Plan:
    """The recorded plan, once its seal shows that it, the options and the workspace are
    what the run was started with; else VIGIL-RUN-TAMPERED (audited)."""
    from vigil.safety.decisions import RUN_START, DecisionRefused, verify_statement
    from vigil.safety.keys import trusted_keys

    try:
        plan = recorded_plan(record)
        recomputed = plan.content_hash()
        if recomputed != record.plan_hash:
            raise DecisionRefused("the recorded plan does not have the recorded hash")
        options = RunOptions.from_dict(record.options)
        verify_statement(
            record.options.get(SEAL),
            trusted_keys(),
            kind=RUN_START,
            project=record.project,
            run=record.id,
            subject=recomputed,
            answer=_sealed_facts(record.id, recomputed, options, record.workspace),
            check_expiry=False,
        )
    except (DecisionRefused, ValueError) as exc:
        from vigil.engine.audit import Auditor

        reason = exc.cause if isinstance(exc, DecisionRefused) else "the recorded plan is damaged"
        Auditor(config, store=store).record(
            action="run.resume", decision="deny", actor=whoami(), run=record.id, reason=reason
        )
        raise RunTampered(f"run {record.id}: {reason}") from None
    return plan


def start_run(
    config: Config,
    store: RunStore,
    plan: Plan,
    plan_path: str,
    *,
    run_id: str | None = None,
    max_parallel: int | None = None,
    observer: Observer | None = None,
    dry_run: bool = False,
    review: bool = False,
    review_tasks: Sequence[str] = (),
    grant: str | None = None,
    prefetch_prompts: int = 0,
    allow_stale_prompts: bool = False,
    inputs: Mapping[str, Any] | None = None,
    selection: Selection | None = None,
    faults: FaultHook | None = None,
    stop_grace: float = STOP_GRACE,
) -> RunOutcome:
    """Start a new run of ``plan``; with an existing ``run_id``, resume that run instead.

    ``inputs`` are values for the plan's inputs; missing, mistyped or unknown ones are
    VIGIL-INPUT-INVALID before anything exists (see :mod:`vigil.plan.inputs`).
    ``selection`` makes a partial run (:mod:`vigil.plan.selection`).

    ``dry_run`` executes every command in throwaway sandboxes and commits nothing; a task
    needing a grant it does not hold is not run (see :meth:`Driver._dry_run_starts`);
    ``review`` holds every task's changes for a person to approve, ``review_tasks`` those
    of the tasks named (VIGIL-USAGE for a name the plan lacks).
    """
    from vigil.store import NewRun

    unknown = [t for t in review_tasks if t not in {task.id for _, task in plan.tasks()}]
    if unknown:
        raise UsageError(
            f"--review names no task of plan {plan.name!r}: {', '.join(unknown)}",
            "Name tasks by their ids (`vigil plan check` lists them), comma-separated.",
        )
    run_id = run_id or new_run_id()
    parallel = max_parallel or default_parallelism()
    options = RunOptions(
        max_parallel=parallel,
        dry_run=dry_run,
        review=review,
        review_tasks=tuple(dict.fromkeys(review_tasks)),
        grant=grant,
        prefetch_prompts=prefetch_prompts,
        allow_stale_prompts=allow_stale_prompts,
        inputs=resolve_inputs(plan, from_file=inputs) if plan.inputs or inputs else {},
        left_out=left_out(plan, selection) if selection is not None else {},
    )
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
    from vigil.engine.attest import head_file
    from vigil.engine.audit import Auditor
    from vigil.engine.authority import Authority, declared_secrets
    from vigil.safety.secrets import check_secret_names

    if head_file(config.state_dir, run_id).exists():
        # This machine wrote a journal under this id, and the store no longer has it: a
        # new run by that id could be grafted onto the old journal's signed events.
        raise RunTampered(
            f"run {run_id} was driven here before and is gone from {store.url}; "
            "start it under another id (or without --run-id)"
        )

    # Refuse before anything exists: a task names a secret vigil.toml does not declare;
    # halted; or (unless dry) the grant does not cover the plan.
    check_secret_names(plan, declared_secrets(config))
    auditor = Auditor(config, store=store)
    authority = Authority(config, store, plan, run_id, grant_id=grant, auditor=auditor)
    authority.preflight(plan_path, dry_run=dry_run)
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
            options={**options.to_dict(), SEAL: seal_run(config, run_id, plan, options)},
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
    from vigil.engine.attest import JournalSigner, head_file
    from vigil.safety.decisions import decision_key

    head = head_file(config.state_dir, run_id)
    JournalSigner(run_id, decision_key(), head=head).append(
        store, [ev.run_created(plan.content_hash(), parallel)], at=time.time(), state="running"
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
    store: RunStore,
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
    plan = sealed_plan(config, store, record)
    options = RunOptions.from_dict(record.options)
    parallel = max_parallel or options.max_parallel or default_parallelism()
    return _drive(
        config,
        store,
        run_id,
        plan,
        parallel,
        observer,
        resumed=True,
        options=options,
        faults=faults,
        stop_grace=stop_grace,
    )


def record_options(store: RunStore, run_id: str) -> RunOptions:
    """The options a run was started with."""
    record = store.get_run(run_id)
    return RunOptions.from_dict(record.options) if record is not None else RunOptions()


def resumable_runs(store: RunStore) -> list[str]:
    """Ids of runs that have not ended."""
    return [r.id for r in store.list_runs(states=["running", "pending", "waiting"], limit=10_000)]


def _drive(
    config: Config,
    store: RunStore,
    run_id: str,
    plan: Plan,
    parallel: int,
    observer: Observer | None,
    *,
    resumed: bool,
    options: RunOptions,
    faults: FaultHook | None = None,
    stop_grace: float = STOP_GRACE,
) -> RunOutcome:
    with hooks.opened(config, store) as told:

        def observe(events: list[ev.Event], state: RunState) -> None:
            if observer is not None:
                observer(events, state)
            told.observe(events, state)

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
            told.ended(run_id)
    return RunOutcome(run_id, state, resumed)


def _lock_once_free(store: RunStore, run_id: str, wait: float) -> Any:
    """The run's lock, taken as soon as its driver let it go (within ``wait`` seconds)."""
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            lock = store.lock_run(run_id)
            lock.__enter__()
            return lock
        except RunLocked:
            time.sleep(0.1)
    raise UsageError(
        f"run {run_id} did not stop within {wait:g}s",
        "Its driver may be stuck; run `vigil cancel` again or stop that process.",
    )


@dataclass(frozen=True)
class Cancelled:
    """How :func:`cancel_run` left a run: its final state, and whether it had ended before
    the request (then nothing was cancelled)."""

    state: str
    already_ended: bool = False


def cancel_run(
    config: Config, store: RunStore, run_id: str, *, reason: str = "", wait: float = 30.0
) -> Cancelled:
    """Cancel ``run_id``: its driver (if any) stops every process; returns the final state."""
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    who = whoami()
    why = reason or f"cancelled by {who}"
    # Whether the run ended is read from its signed journal, never from the summary row
    # (a writer of the store could mark a live run finished to make this a no-op).
    requested = False
    try:
        lock = store.lock_run(run_id)
        lock.__enter__()
    except RunLocked:
        requested = True
        # A driver is alive: it sees the request within a poll interval and stops; then
        # its journal (below) says how the run ended.
        store.append(run_id, [ev.cancel_requested(why, who)], at=time.time())
        lock = _lock_once_free(store, run_id, wait)
    try:
        # Nobody drives the run: end what a crashed driver left behind and close the run.
        end_tagged(run_tag(config.workspace, run_id))
        from vigil.engine.attest import JournalSigner, checked_journal, head_file
        from vigil.engine.audit import Auditor
        from vigil.safety.decisions import decision_key

        journal = [ev.Event(s.kind, s.data, s.at, s.seq) for s in store.events(run_id)]
        # Only a journal vigil wrote is settled; the resume below refuses the rest anyway.
        head = head_file(config.state_dir, run_id)
        signed = checked_journal(
            run_id,
            journal,
            auditor=Auditor(config, store=store),
            action="run.cancel",
            actor=who,
            head=head,
        )
        signer = JournalSigner(run_id, decision_key(), signed, head=head)
        state = RunState.replay(run_id, recorded_plan(record), journal)
        if state.finished is not None:
            # Ended by this request through its driver, or before it by itself.
            ours = requested and state.finished == "cancelled"
            return Cancelled(state.finished, already_ended=not ours)
        # The request goes in signed, with the attempts it ends: the resume below acts on
        # it, or, if the store dropped it, refuses the journal (its head is noted here).
        batch: list[ev.Entry] = [ev.cancel_requested(why, who)]
        for ts in state.tasks.values():
            running = ts.running
            if running is not None:
                batch.append(
                    ev.attempt_finished(
                        ts.task.id, running.number, ev.CANCELLED, reason="cancelled"
                    )
                )
        signer.append(store, batch, at=time.time())  # under the lock: no driver appends
    finally:
        lock.__exit__(None, None, None)
    # Settle the rest through the normal path so the journal tells one consistent story.
    outcome = resume_run(config, store, run_id)
    return Cancelled(outcome.state)
