"""What a person types next to move a waiting run on: one command per open question."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigil.engine.state import RunState


@dataclass(frozen=True)
class NextStep:
    """One open question of a run and the exact command that answers it."""

    task: str
    what: str
    """The question, in one line."""
    command: str
    """The command that says yes (or, for a choice, picks the first choice)."""
    alternative: str
    """How the same command says otherwise (e.g. ``--reject``)."""
    look: str | None = None
    """The command that shows what is decided on, when the answer needs a look first."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "task": self.task,
            "what": self.what,
            "command": self.command,
            "alternative": self.alternative,
            "look": self.look,
        }


def next_steps(state: RunState) -> list[NextStep]:
    """The commands that answer each open question of ``state``'s run: held changes
    (``vigil review``, pinned with ``--changes`` to exactly what is held) and open
    escalations (``vigil escalations answer``)."""
    from vigil.engine.changes import task_changes

    run = shlex.quote(state.run_id)
    steps: list[NextStep] = []
    for c in task_changes(state):
        if not c.held:
            continue
        task = shlex.quote(c.task)
        steps.append(
            NextStep(
                task=c.task,
                what=f"changes held for review ({c.changeset.stat().splitlines()[-1].strip()})",
                look=f"vigil review {run} --task {task}",
                command=(f"vigil review {run} --task {task} --changes {c.changeset.id} --approve"),
                alternative="--reject",
            )
        )
    for ts in state.tasks.values():
        q = ts.escalation
        if q is None or q.get("answer") is not None:
            continue
        esc = shlex.quote(str(q["id"]))
        choices = q.get("choices") or []
        if choices:
            command = f"vigil escalations answer {esc} --value {shlex.quote(str(choices[0]))}"
            alternative = "--value " + " | --value ".join(shlex.quote(str(c)) for c in choices)
        else:
            command = f"vigil escalations answer {esc} --approve"
            alternative = "--reject"
        question = " ".join(str(q.get("question", "")).split())
        steps.append(
            NextStep(task=ts.task.id, what=question, command=command, alternative=alternative)
        )
    return steps
