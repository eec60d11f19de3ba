"""Driving runs through the library in tests, on a given store."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from vigil.config import load_config
from vigil.engine import events as ev
from vigil.engine.runs import RunOutcome, start_run
from vigil.plan.models import Plan
from vigil.report import load_state, run_view
from vigil.store import open_store


def make_plan(phases: list[dict[str, Any]], **extra: Any) -> Plan:
    return Plan.model_validate({"name": "test", "project": "test", "phases": phases, **extra})


def one_phase(*tasks: dict[str, Any], **phase: Any) -> Plan:
    return make_plan([{"id": "main", "tasks": list(tasks), **phase}])


class Harness:
    """A workspace and an open store; runs go through the same library calls as the CLI."""

    def __init__(self, workspace: Path, url: str) -> None:
        self.workspace = workspace
        self.url = url
        workspace.mkdir(parents=True, exist_ok=True)
        os.environ["VIGIL_DATABASE_URL"] = url
        self.config = load_config(workspace)
        self.store = open_store(url)

    def run(self, plan: Plan, **kw: Any) -> RunOutcome:
        return start_run(self.config, self.store, plan, "plan.yaml", **kw)

    def view(self, run_id: str) -> dict[str, Any]:
        record, state = load_state(self.store, run_id)
        return run_view(record, state)

    def task(self, run_id: str, task_id: str) -> dict[str, Any]:
        return next(t for t in self.view(run_id)["tasks"] if t["id"] == task_id)

    def journal(self, run_id: str) -> list[ev.Event]:
        return [ev.Event(s.kind, s.data, s.at, s.seq) for s in self.store.events(run_id)]


HANG = 120.0
"""Seconds after which a test calls something hung: a hang detector, never a speed bound."""


def wait_for_event(url: str, run_id: str, kind: str, *, count: int = 1) -> list[ev.Event]:
    """Block until the run's journal holds ``count`` events of ``kind``: a kill point
    defined by the journal, not by the clock."""
    store = open_store(url)
    deadline = time.monotonic() + HANG
    try:
        while time.monotonic() < deadline:
            if store.get_run(run_id) is not None:
                found = [
                    ev.Event(s.kind, s.data, s.at, s.seq)
                    for s in store.events(run_id)
                    if s.kind == kind
                ]
                if len(found) >= count:
                    return found
            time.sleep(0.02)
        raise AssertionError(f"hung: {run_id} never journalled {count} x {kind}")
    finally:
        store.close()
