"""Showing a run while it happens: a live view on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from rich.text import Text

from vigil.cli.common import console
from vigil.cli.terminal import printable
from vigil.engine import events as ev
from vigil.plan.duration import format_duration

if TYPE_CHECKING:
    # Only annotations: `vigil runs` imports STYLE from here and needs no engine state.
    from pathlib import Path

    from rich.console import Group

    from vigil.cli.stream import OutputStream
    from vigil.engine.state import RunState

STYLE = {
    "succeeded": "green",
    "failed": "red",
    "skipped": "yellow",
    "cancelled": "magenta",
    "running": "cyan",
    "pending": "dim",
    "timed_out": "red",
    "interrupted": "yellow",
    "passed": "green",
    "open": "cyan",
    "checking": "cyan",
    "waiting": "dim",
}


def task_label(state: str, *, critical: bool = True, degraded: bool = False) -> tuple[str, str]:
    """How a task's state is shown and its style: a failure of a task with
    ``on_failure: continue`` does not fail the run, so it is not shown as a plain red one."""
    if state == "failed" and not critical:
        return "failed (non-critical)", "yellow"
    return state + (" (degraded)" if degraded else ""), STYLE.get(state, "")


def _stamp(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


class PlainProgress:
    """One line per event on stderr, for logs and pipes; with ``state_dir``, the steps'
    output too, line by line on stdout with the task in front (see vigil.cli.stream)."""

    def __init__(self, stream: Any = None, *, state_dir: Path | None = None) -> None:
        self.stream = stream or sys.stderr
        self.state_dir = state_dir
        self.output: OutputStream | None = None

    def __call__(self, events: list[ev.Event], state: RunState) -> None:
        for e in events:
            self._follow(e, state)
            line = describe(e)
            if e.kind == ev.DRIVER_STOPPED:
                line = f"stopped; resume with `vigil resume {state.run_id}`"
            if line:
                shown = printable(f"{state.run_id} {line}", multiline=False)
                self.stream.write(f"{_stamp(e.at)} {shown}\n")
        self.stream.flush()

    def _follow(self, e: ev.Event, state: RunState) -> None:
        if self.state_dir is None or e.kind not in (ev.ATTEMPT_STARTED, ev.ATTEMPT_FINISHED):
            return
        from vigil.cli.stream import OutputStream
        from vigil.layout import attempt_log

        if self.output is None:
            self.output = OutputStream(width=min(24, max(len(t) for t in state.tasks)))
        task, number = str(e.data["task"]), int(e.data["attempt"])
        if e.kind == ev.ATTEMPT_STARTED:
            path = attempt_log(self.state_dir, state.run_id, task, number)
            self.output.follow(task, number, path)
        else:
            self.output.ended(task, number)

    def close(self) -> None:
        """Print the output not shown yet and stop following it."""
        if self.output is not None:
            self.output.close()


def describe(e: ev.Event) -> str | None:
    """A one-line account of an event, or None for bookkeeping events."""
    d = e.data
    if e.kind == ev.ATTEMPT_STARTED:
        extra = " (fallback)" if d["command"] == "fallback" else ""
        return f"{d['task']}: attempt {d['attempt']} started{extra}"
    if e.kind == ev.ATTEMPT_FINISHED:
        dur = f" in {format_duration(d['duration'])}" if d.get("duration") is not None else ""
        why = f": {d['reason']}" if d.get("reason") else ""
        return f"{d['task']}: attempt {d['attempt']} {d['outcome'].replace('_', ' ')}{dur}{why}"
    if e.kind == ev.TASK_FINISHED:
        deg = " (degraded)" if d.get("degraded") else ""
        return f"{d['task']}: {d['state']}{deg}"
    if e.kind == ev.TASK_SKIPPED:
        return f"{d['task']}: {d.get('state', 'skipped')} ({d.get('reason', '')})"
    if e.kind == ev.PHASE_CHECK_STARTED:
        return f"phase {d['phase']}: validating"
    if e.kind == ev.PHASE_FINISHED:
        verdict = "complete" if d["passed"] else f"failed ({d.get('reason', '')})"
        return f"phase {d['phase']}: {verdict}"
    if e.kind == ev.RUN_FINISHED:
        return f"run {d['state']}"
    if e.kind == ev.DRIVER_STARTED:
        return "driving"
    if e.kind == ev.CANCEL_REQUESTED:
        return f"cancel requested: {d.get('reason', '')}"
    if e.kind == ev.DRIVER_STOPPED:
        return "stopped; resume with `vigil resume RUN`"
    return None


class LiveProgress:
    """A live table of phases and tasks, redrawn at most a few times a second."""

    def __init__(self) -> None:
        from rich.live import Live

        self._live = Live(console=console, auto_refresh=False, transient=False)
        self._live.start()
        self._last = 0.0
        self._started = time.time()

    def __call__(self, events: list[ev.Event], state: RunState) -> None:
        now = time.time()
        final = any(e.kind == ev.RUN_FINISHED for e in events)
        if not final and now - self._last < 0.25:
            return
        self._last = now
        self._live.update(self._render(state, now), refresh=True)

    def _render(self, state: RunState, now: float) -> Group:
        from rich.console import Group
        from rich.table import Table

        counts = Counter(
            task_label(ts.state, critical=ts.task.on_failure == "stop")[0]
            for ts in state.tasks.values()
        )
        head = Text.assemble(
            ("vigil ", "bold"),
            (state.run_id, "bold cyan"),
            f"  {state.plan.name}  ",
            (f"{format_duration(now - (state.started_at or self._started))}", "dim"),
        )
        summary = Text("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("phase")
        table.add_column("task")
        table.add_column("state")
        table.add_column("attempt", justify="right")
        table.add_column("elapsed", justify="right")
        rows = 0
        limit = max(5, console.size.height - 6)
        for ts in state.tasks.values():
            if len(state.tasks) > limit and ts.state in ("pending", "succeeded"):
                continue
            if rows >= limit:
                break
            last = ts.attempts[-1] if ts.attempts else None
            elapsed = ""
            if last is not None:
                end = last.ended_at or now
                elapsed = format_duration(max(0.0, end - last.started_at))
            label, style = task_label(
                ts.state, critical=ts.task.on_failure == "stop", degraded=ts.degraded
            )
            table.add_row(
                ts.phase,
                ts.task.id,
                Text(label, style=style),
                str(last.number) if last else "",
                elapsed,
            )
            rows += 1
        return Group(head, summary, table)

    def close(self) -> None:
        """Leave the last frame on screen."""
        self._live.stop()


def progress_for(
    fmt_json: bool, *, state_dir: Path | None = None, quiet: bool = False
) -> PlainProgress | LiveProgress | None:
    """The right progress display for where output goes: a live view on a terminal;
    otherwise a line per event and, given the ``state_dir`` and unless ``quiet``, the
    steps' output as it is written."""
    if fmt_json:
        return None
    if console.is_terminal:
        return LiveProgress()
    return PlainProgress(state_dir=None if quiet else state_dir)
