"""What a dry run found out about the real run: what it could not run, and what would clash.

Pure functions of a dry run's folded journal, shared by ``vigil run --dry-run`` (text and
JSON) and anything else that shows a dry run: the shape is built here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vigil.engine import events as ev
from vigil.engine.state import RunState
from vigil.workspace import ChangeEntry, Changeset, Conflict


@dataclass(frozen=True)
class NotRun:
    """A task the dry run did not run because it needs a grant the dry run does not hold."""

    task: str
    environment: str
    capabilities: tuple[str, ...]
    code: str
    reason: str
    unseen_by: tuple[str, ...]
    """Tasks that dry-ran on without this task's changes (its dependents, later phases)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "task": self.task,
            "environment": self.environment,
            "capabilities": list(self.capabilities),
            "code": self.code,
            "reason": self.reason,
            "ran_without_its_changes": list(self.unseen_by),
        }


@dataclass(frozen=True)
class PredictedConflict:
    """Two tasks no ``needs`` orders that change the same paths differently.

    Run at the same time in a real run, the one that commits second fails with
    VIGIL-CONFLICT; ``second`` needing ``first`` orders them (it is the later of the two
    in the plan, so the suggested ``needs`` never points forward).
    """

    first: str
    second: str
    paths: tuple[str, ...]
    needs: tuple[str, ...] = ()
    """What ``second`` already needs (the YAML line keeps it)."""

    @property
    def remedy(self) -> str:
        """The ``needs`` that would order the two tasks."""
        return f"add `needs: [{self.first}]` to task {self.second}"

    @property
    def yaml(self) -> str:
        """The line task ``second`` holds once ordered after ``first``."""
        return f"needs: [{', '.join([*self.needs, self.first])}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "tasks": [self.first, self.second],
            "paths": list(self.paths),
            "code": Conflict.code,
            "needs": {"task": self.second, "add": self.first},
            "remedy": self.remedy,
            "yaml": self.yaml,
        }


def not_run(state: RunState) -> list[NotRun]:
    """The tasks a dry run did not run for want of a grant, in plan order."""
    found = []
    for ts in state.tasks.values():
        grant = ts.needs_grant
        if grant is None:
            continue
        found.append(
            NotRun(
                task=ts.task.id,
                environment=str(grant.get("environment", "")),
                capabilities=tuple(str(c) for c in grant.get("capabilities", ())),
                code=str(grant.get("code", "")),
                reason=ts.reason,
                unseen_by=tuple(
                    tid
                    for tid, other in state.tasks.items()
                    if other.attempts and _stacks_on(state, tid, ts.task.id)
                ),
            )
        )
    return found


def predicted_conflicts(state: RunState) -> list[PredictedConflict]:
    """Pairs of tasks a real run could run at once whose dry-run changes clash.

    Two tasks of one phase run at the same time unless ``needs`` (directly or through
    other tasks) orders them; tasks of different phases never do. Their changes clash
    where both change a path to different contents, or where one removes (or turns into
    a file or link) a directory the other writes something below: what the commit of the
    second refuses with VIGIL-CONFLICT. Paths both leave in the same state converge, as
    they do in a real run.
    """
    changed: dict[str, Changeset] = {}
    for tid, ts in state.tasks.items():
        done = [a for a in ts.attempts if a.state == ev.SUCCEEDED and a.changeset]
        if done and done[-1].changeset is not None:
            changed[tid] = Changeset.from_dict(done[-1].changeset)
    order = list(state.tasks)
    found = []
    for i, first in enumerate(order):
        if first not in changed:
            continue
        for second in order[i + 1 :]:
            if second not in changed:
                continue
            if state.tasks[first].phase_index != state.tasks[second].phase_index:
                continue
            if _needs(state, second, first) or _needs(state, first, second):
                continue
            paths = clashes(changed[first], changed[second])
            if paths:
                needs = tuple(state.tasks[second].task.needs)
                found.append(PredictedConflict(first, second, tuple(paths), needs))
    return found


def commit_conflicts(state: RunState) -> list[PredictedConflict]:
    """Pairs of tasks of a real run where one's commit was refused with VIGIL-CONFLICT
    because the other, which no ``needs`` ordered before it, had committed a clashing
    change. The later of the two in the plan is told to need the earlier (as for a
    predicted conflict), whichever committed first.
    """
    committed: dict[str, Changeset] = {}
    refused: dict[str, Changeset] = {}
    for tid, ts in state.tasks.items():
        for a in ts.attempts:
            if a.changeset is None:
                continue
            if a.committed:
                committed[tid] = Changeset.from_dict(a.changeset)
            elif a.data.get("code") == Conflict.code:
                refused[tid] = Changeset.from_dict(a.changeset)
    order = list(state.tasks)
    found: list[PredictedConflict] = []
    for loser, theirs in refused.items():
        for winner, ours in committed.items():
            if winner == loser or state.tasks[winner].phase_index != state.tasks[loser].phase_index:
                continue
            if _needs(state, loser, winner) or _needs(state, winner, loser):
                continue
            paths = clashes(ours, theirs)
            if not paths:
                continue
            first, second = sorted((winner, loser), key=order.index)
            needs = tuple(state.tasks[second].task.needs)
            found.append(PredictedConflict(first, second, tuple(paths), needs))
    return found


def clashes(a: Changeset, b: Changeset) -> list[str]:
    """Paths where applying ``a`` and ``b`` one after the other is a conflict."""
    ours = {e.path: e for e in a.entries}
    theirs = {e.path: e for e in b.entries}
    found = {p for p in ours.keys() & theirs.keys() if ours[p].after != theirs[p].after}
    for one, other in ((ours, theirs), (theirs, ours)):
        for path, entry in one.items():
            if _removes_dir(entry):
                # The other writes below a directory this one removes (removing there
                # converges; a path both change is judged by its contents, above).
                below = path + "/"
                found.update(
                    p
                    for p, e in other.items()
                    if p.startswith(below) and e.after is not None and p not in one
                )
    return sorted(found)


def _removes_dir(entry: ChangeEntry) -> bool:
    return (
        entry.before is not None
        and entry.before.kind == "dir"
        and (entry.after is None or entry.after.kind != "dir")
    )


def _needs(state: RunState, task: str, other: str) -> bool:
    """Whether ``task`` needs ``other``, directly or through other tasks."""
    seen: set[str] = set()
    stack = list(state.tasks[task].task.needs)
    while stack:
        need = stack.pop()
        if need == other:
            return True
        if need not in seen:
            seen.add(need)
            stack.extend(state.tasks[need].task.needs)
    return False


def _stacks_on(state: RunState, task: str, other: str) -> bool:
    """Whether a dry run stacks ``task`` on ``other``'s changes: ``task`` needs it, or
    ``other`` is in an earlier phase (the driver's ``_base_layers``)."""
    return state.tasks[other].phase_index < state.tasks[task].phase_index or _needs(
        state, task, other
    )
