"""A stored run's state, folded from its journal, and the state people should see."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from vigil.engine import events as ev
from vigil.engine.options import RunOptions
from vigil.errors import RunNotFound

if TYPE_CHECKING:
    # Imported by load_state only: `vigil runs` shows states without the plan models.
    from vigil.engine.audit import Auditor
    from vigil.engine.state import RunState
    from vigil.store import RunRecord, RunStore

INTERRUPTED = "interrupted"
DRIVEN_STATES = frozenset({"pending", "running"})


def shown_state(store: RunStore, record: RunRecord) -> str:
    """The run's state as people should see it.

    A run recorded as ``running`` whose driver is gone (killed, or stopped by Ctrl-C: its
    lock is free) is ``interrupted``: nothing moves it on until ``vigil resume``.
    """
    if record.state in DRIVEN_STATES and store.run_lock_held(record.id) is False:
        return INTERRUPTED
    return str(record.state)


def resume_command(run_id: str) -> str:
    """The command that continues an interrupted run."""
    return f"vigil resume {run_id}"


def load_state(
    store: RunStore,
    run_id: str,
    *,
    verify: bool = False,
    auditor: Auditor | None = None,
    action: str = "run.read",
    actor: str = "vigil",
    state_dir: Path | None = None,
) -> tuple[RunRecord, RunState]:
    """The run's record (its state as :func:`shown_state` says) and its state folded
    from the journal.

    With ``verify`` (for whoever acts on the state: an approval, a rollback), the journal
    must be as vigil's processes signed it (:mod:`vigil.engine.attest`), else
    VIGIL-RUN-TAMPERED (audited as ``action`` when an ``auditor`` is given); with
    ``state_dir``, it must also hold every signed event this machine wrote. Display needs
    no check: what is shown is never acted on unchecked.
    """
    from vigil.plan.models import Plan

    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    shown = shown_state(store, record)
    if shown != record.state:
        record = dataclasses.replace(record, state=shown)
    plan = Plan.from_record(record.plan_json)
    journal = [ev.Event(s.kind, s.data, s.at, s.seq) for s in store.events(run_id)]
    if verify:
        from vigil.engine.attest import checked_journal, head_file

        head = None if state_dir is None else head_file(state_dir, run_id)
        checked_journal(run_id, journal, auditor=auditor, action=action, actor=actor, head=head)
    # Decisions whose signatures do not verify are left out, as the driver leaves them out.
    from vigil.engine.decisions import replay_verified

    return record, replay_verified(run_id, plan, journal, RunOptions.from_dict(record.options))
