"""Naming a run on the command line: its id, a unique prefix of it, or ``last``.

Every command that takes a run resolves what the user typed here, before anything else
reads or checks the run, so what it verifies, locks or changes is always named by its full
id.
"""

from __future__ import annotations

from typing import Final

from vigil.errors import RunAmbiguous, RunNotFound
from vigil.store import RunStore

LAST: Final = "last"
"""Stands for the newest run of the workspace the command acts on."""

CANDIDATES_SHOWN: Final = 10
"""How many matching ids an ambiguous prefix lists."""


def resolve_run_id(store: RunStore, text: str, *, workspace: str) -> str:
    """The full id of the run ``text`` names: an id, ``last``, or a unique prefix.

    An exact id wins over everything (a run once named ``last`` is still reachable by
    that name); ``last`` is the newest run of ``workspace``; otherwise ``text`` must be
    the start of exactly one run's id (of any workspace of the store).
    """
    if store.get_run(text) is not None:
        return text
    if text == LAST:
        newest = store.run_ids(workspace=workspace, limit=1)
        if not newest:
            raise RunNotFound(
                f"no run of this workspace ({workspace}) in {store.display_url}",
                "Start one with `vigil run PLAN`; `vigil runs` lists the store's runs.",
            )
        return newest[0]
    if not text:
        raise RunNotFound("no run id given", "Give a run id, a prefix of one, or `last`.")
    found = store.run_ids(prefix=text, limit=CANDIDATES_SHOWN + 1)
    if not found:
        raise RunNotFound(f"no run {text!r} in {store.display_url}")
    if len(found) > 1:
        more = " (and more)" if len(found) > CANDIDATES_SHOWN else ""
        raise RunAmbiguous(
            f"{text!r} is the start of {len(found[:CANDIDATES_SHOWN])}{more} run ids",
            details=[f"candidate: {rid}" for rid in found[:CANDIDATES_SHOWN]],
        )
    return found[0]


SHORT_MIN: Final = 8
"""The fewest characters a short id shows."""


def short_id(store: RunStore, run_id: str, *, least: int = SHORT_MIN) -> str:
    """The shortest prefix of ``run_id`` (at least ``least`` characters) that names it and
    no other run of the store: what a table on a terminal shows, and what
    :func:`resolve_run_id` takes back."""
    if len(run_id) <= least:
        return run_id

    def unique(n: int) -> bool:
        return store.run_ids(prefix=run_id[:n], limit=2) == [run_id]

    # A longer prefix matches fewer runs, so the shortest unique one is found by bisection.
    low, high = least, len(run_id)
    while low < high:
        mid = (low + high) // 2
        if unique(mid):
            high = mid
        else:
            low = mid + 1
    return run_id[:low]
