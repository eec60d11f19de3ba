"""What the dashboard reads about runs: the runs list, attempt logs and changesets.

The same data the CLI prints (``vigil runs``, ``vigil logs``), shaped for pages and the
JSON API. Logs are read as written: secrets were redacted before they reached the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vigil.config import Config
from vigil.engine.state import RunState
from vigil.errors import UsageError
from vigil.layout import attempt_log
from vigil.report.view import run_row
from vigil.store import RUN_STATES

if TYPE_CHECKING:
    from vigil.store import RunStore

LOG_LIMIT = 2 * 1024 * 1024
"""Bytes of one attempt's log the dashboard shows (its end: where the failure is)."""


def run_rows(
    store: RunStore, *, state: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Runs newest first, optionally in one state: ``vigil runs --format json``."""
    if state is not None and state not in RUN_STATES:
        raise UsageError(
            f"unknown run state {state!r}", f"Use one of: {', '.join(sorted(RUN_STATES))}."
        )
    records = store.list_runs(states=None if state is None else [state], limit=limit)
    return [run_row(store, r) for r in records]


class TaskNotFound(UsageError):
    code = "VIGIL-TASK-NOT-FOUND"
    title = "the run has no task with that id"
    remedy = "See the run's tasks with `vigil status RUN_ID`."


def _check_task(state: RunState, task_id: str) -> None:
    if task_id not in state.tasks:
        raise TaskNotFound(f"run {state.run_id} has no task {task_id!r}")


def read_log(path: Any, limit: int = LOG_LIMIT) -> str:
    """The end of a log file (at most ``limit`` bytes), or "" if there is none yet."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text = f"[… {size - limit} earlier bytes not shown; see `vigil logs`]\n" + text
    return text


def attempt_text(config: Config, state: RunState, task_id: str, attempt: int) -> str:
    """One attempt's captured output."""
    _check_task(state, task_id)
    numbers = [a.number for a in state.tasks[task_id].attempts]
    if attempt not in numbers:
        raise UsageError(
            f"task {task_id} has no attempt {attempt}",
            f"It has attempts {numbers or 'none yet'}.",
        )
    return read_log(attempt_log(config.state_dir, state.run_id, task_id, attempt))


def task_logs(config: Config, state: RunState, task_id: str, attempt: int | None) -> str:
    """What ``vigil logs RUN TASK [--attempt N]`` prints: each attempt under a header."""
    _check_task(state, task_id)
    parts: list[str] = []
    for a in state.tasks[task_id].attempts:
        if attempt is not None and a.number != attempt:
            continue
        parts.append(f"==> {task_id} attempt {a.number} ({a.state}) <==\n")
        parts.append(attempt_text(config, state, task_id, a.number))
    if attempt is not None and not parts:
        attempt_text(config, state, task_id, attempt)  # raises the helpful error
    return "".join(parts)


@dataclass(frozen=True)
class ChangeView:
    """One attempt's file changes, ready to show."""

    attempt: int
    committed: bool
    stat: str
    diff: str | None


def attempt_changes(config: Config, state: RunState, task_id: str) -> list[ChangeView]:
    """The file changes of the task's attempts that the journal holds, rendered.

    The diff needs the changeset's stored pre- and post-images; where they are gone
    (pruned, or the workspace moved) only the summary is shown.
    """
    from vigil.workspace import Changeset, ObjectStore, stat_summary, unified_diff

    _check_task(state, task_id)
    objects = ObjectStore(config.state_dir / "objects")
    views: list[ChangeView] = []
    for attempt in state.tasks[task_id].attempts:
        raw = getattr(attempt, "changeset", None)
        if not isinstance(raw, dict):
            continue
        try:
            changeset = Changeset.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            continue
        if changeset.is_empty:
            continue
        diff: str | None
        try:
            diff = unified_diff(changeset, objects)
        except (OSError, KeyError, ValueError):
            diff = None
        committed = bool(getattr(attempt, "committed", False))
        views.append(ChangeView(attempt.number, committed, stat_summary(changeset, objects), diff))
    return views
