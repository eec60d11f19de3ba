"""Partial runs: which tasks ``--only``, ``--with-needs``, ``--skip``, ``--tags`` and
``--skip-tags`` leave out, as make targets and Ansible tags do.

The selection is decided once, when the run starts, and recorded (and sealed) with the
run as the tasks left out and why; a resumed run leaves out the same. A task left out is
shown as such, never as failed, and what needs it runs as if it had succeeded (as with
Ansible's tags): ``--with-needs`` includes the needs instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vigil.errors import ExitCode, VigilError
from vigil.plan.models import Plan


class SelectionInvalid(VigilError):
    """``--only``/``--skip``/``--tags``/``--skip-tags`` name something the plan lacks."""

    code = "VIGIL-SELECTION-INVALID"
    title = "the tasks to run do not fit the plan"
    remedy = "Name task ids and tags the plan has; `vigil plan check PLAN` lists the tasks."
    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Selection:
    """What a person asked to run (empty: everything)."""

    only: tuple[str, ...] = ()
    with_needs: bool = False
    skip: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    skip_tags: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether nothing is selected or left out: the whole plan runs."""
        return not (self.only or self.skip or self.tags or self.skip_tags)


def names(values: Iterable[str]) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: options may repeat or list with commas."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _unknown(given: Sequence[str], known: Sequence[str], what: str) -> list[str]:
    problems = []
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"the plan has no {what} '{name}'{hint}")
    return problems


def left_out(plan: Plan, selection: Selection) -> dict[str, str]:
    """Task id -> why it is left out, in plan order; SelectionInvalid for a name the plan
    lacks or a selection that leaves nothing to run."""
    ids = [task.id for _, task in plan.tasks()]
    tags = sorted({tag for _, task in plan.tasks() for tag in task.tags})
    # A matrix's id names all its expansions, as it does in ``needs``.
    names_of = {**{tid: (tid,) for tid in ids}, **plan.groups}
    problems = _unknown(selection.only, list(names_of), "task")
    problems += _unknown(selection.skip, list(names_of), "task")
    problems += _unknown(selection.tags, tags, "tag")
    problems += _unknown(selection.skip_tags, tags, "tag")
    if problems:
        raise SelectionInvalid(problems[0], details=problems)
    reasons: dict[str, str] = {}
    if selection.only or selection.tags:
        chosen = {tid for name in selection.only for tid in names_of[name]}
        chosen |= {t.id for _, t in plan.tasks() if set(t.tags) & set(selection.tags)}
        if selection.with_needs:
            stack = list(chosen)
            while stack:
                for need in plan.task(stack.pop()).needs:
                    if need not in chosen:
                        chosen.add(need)
                        stack.append(need)
        asked = []
        if selection.only:
            asked.append(f"--only {','.join(selection.only)}")
        if selection.tags:
            asked.append(f"--tags {','.join(selection.tags)}")
        for tid in ids:
            if tid not in chosen:
                reasons[tid] = f"left out: not selected by {' '.join(asked)}"
    skipped = {tid for name in selection.skip for tid in names_of[name]}
    for _, task in plan.tasks():
        if task.id in skipped:
            reasons[task.id] = "left out by --skip"
        elif set(task.tags) & set(selection.skip_tags):
            hit = ",".join(sorted(set(task.tags) & set(selection.skip_tags)))
            reasons[task.id] = f"left out by --skip-tags (tagged {hit})"
    if len(reasons) == len(ids):
        raise SelectionInvalid(
            "the selection leaves every task out: nothing would run",
            "Check --only, --tags, --skip and --skip-tags against the plan's task ids and tags.",
        )
    return {tid: reasons[tid] for tid in ids if tid in reasons}


__all__ = ["Selection", "SelectionInvalid", "left_out", "names"]
