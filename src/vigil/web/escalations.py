"""The dashboard's view of escalations: questions a run is waiting on a person to answer.

A thin layer over :mod:`vigil.engine.escalations`, so the web and the CLI answer the same
way. Decisions come from forms and JSON bodies, so they are checked here before they
reach the library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vigil.config import Config
from vigil.errors import UsageError

if TYPE_CHECKING:
    from vigil.store import RunStore

DECISIONS = ("approve", "reject", "value")


def _library() -> Any:
    return importlib.import_module("vigil.engine.escalations")


def list_open(
    store: RunStore, run_id: str | None = None, *, answered: bool = False
) -> list[dict[str, Any]]:
    """Open escalations (with ``answered``, all of them) of one run or all, oldest first."""
    found = _library().list_escalations(store, run_id=run_id, open_only=not answered)
    return [e.to_dict() for e in found]


def open_escalation_count(store: RunStore) -> int:
    """How many escalations wait for an answer (0 where escalations do not exist)."""
    try:
        library = _library()
    except ImportError:
        return 0
    return len(library.list_escalations(store, open_only=True))


def answer(
    config: Config,
    store: RunStore,
    esc_id: str,
    *,
    decision: str,
    value: str | None,
    comment: str,
    actor: str,
) -> dict[str, Any]:
    """Answer one escalation and let its run go on in the background."""
    if decision not in DECISIONS:
        raise UsageError(f"unknown decision {decision!r}", "Answer with approve, reject or value.")
    if decision == "value" and not value:
        raise UsageError("a 'value' answer needs a value", "Pick one of the offered choices.")
    library = _library()
    asked = library.answer_escalation(
        config,
        store,
        esc_id,
        decision=decision,
        value=value if decision == "value" else None,
        comment=comment,
        actor=actor,
        resume="background",
    )
    # The library hands back the question as it was asked; show it as it now stands.
    for esc in library.list_escalations(store, run_id=asked.run_id, open_only=False):
        if esc.id == asked.id and esc.answered:
            now: dict[str, Any] = esc.to_dict()
            return now
    before: dict[str, Any] = asked.to_dict()
    return before
