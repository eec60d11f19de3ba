"""The live view behind ``vigil monitor``: a run that another process drives, in the terminal.

The monitor only reads: it polls the store for new journal events (folding them into
the same :class:`RunState` the driver uses) and reads log files; it never takes the
run's lock, so watching can neither block nor disturb the run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Log, Static

from vigil.cli.progress import STYLE, task_label
from vigil.cli.stream import read_tail
from vigil.cli.terminal import literal, printable
from vigil.engine import events as ev
from vigil.engine.options import RunOptions
from vigil.engine.state import RunState, TaskState
from vigil.errors import RunNotFound, UsageError
from vigil.layout import attempt_log
from vigil.plan.duration import format_duration
from vigil.plan.models import Plan
from vigil.words import plural

if TYPE_CHECKING:
    from vigil.store import RunStore

TAIL_LINES = 200
COLUMNS = ("phase", "task", "state", "attempt", "time", "note")


def newest_active_run(store: RunStore) -> str:
    """The id of the newest run that has not ended."""
    active = store.list_runs(states=["running", "waiting"], limit=1)
    if not active:
        raise UsageError(
            "no run is in progress", "Name the run to watch: `vigil monitor RUN_ID` (`vigil runs`)."
        )
    return str(active[0].id)


class RunWatch:
    """A run followed from its journal, read-only: call :meth:`poll` to catch up."""

    def __init__(self, store: RunStore, run_id: str, state_dir: Path) -> None:
        record = store.get_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r} in {store.display_url}")
        self.store = store
        self.record = record
        self.state_dir = state_dir
        plan = Plan.from_record(record.plan_json)
        self.state = RunState(run_id, plan, RunOptions.from_dict(record.options))
        self.escalations: dict[str, dict[str, Any]] = {}
        self._cursor = 0

    @property
    def run_id(self) -> str:
        """The run being watched."""
        return self.state.run_id

    @property
    def run_state(self) -> str:
        """The run's state as the journal (or, before it says, the run row) has it."""
        return self.state.finished or str(self.record.state)

    def poll(self) -> bool:
        """Apply events appended since the last poll; True if there were any."""
        stored = self.store.events(self.run_id, after=self._cursor)
        for s in stored:
            event = ev.Event(s.kind, s.data, s.at, s.seq)
            self.state.apply(event)
            self._track_escalation(event)
            self._cursor = s.seq
        if stored:
            self.record = self.store.get_run(self.run_id) or self.record
        return bool(stored)

    def _track_escalation(self, event: ev.Event) -> None:
        key = str(event.data.get("id"))
        if event.kind == ev.ESCALATION_OPENED:
            self.escalations[key] = dict(event.data)
        elif event.kind == ev.ESCALATION_ANSWERED:
            self.escalations.pop(key, None)

    def log_lines(self, task_id: str, attempt: int) -> list[str]:
        """The tail of one attempt's log."""
        return read_tail(attempt_log(self.state_dir, self.run_id, task_id, attempt), TAIL_LINES)


def _elapsed(ts: TaskState, now: float) -> str:
    total = sum((a.ended_at or now) - a.started_at for a in ts.attempts)
    return format_duration(max(0.0, total)) if ts.attempts else ""


def _row(ts: TaskState, now: float) -> list[Any]:
    last = ts.attempts[-1] if ts.attempts else None
    label, style = task_label(ts.state, critical=ts.task.on_failure == "stop", degraded=ts.degraded)
    note = ts.reason or (last.reason if last else "") or ""
    if ts.blocked_by:
        note = f"blocked by {ts.blocked_by}"
    return [
        literal(ts.phase),
        literal(ts.task.id),
        Text(label, style=style),
        literal(last.number if last else ""),
        literal(_elapsed(ts, now)),
        literal(note),
    ]


class MonitorApp(App[None]):
    """The live view of one run."""

    TITLE = "vigil monitor"
    CSS = """
    #summary { height: auto; padding: 0 1; }
    #escalations { height: auto; padding: 0 1; color: $warning; }
    #tasks { height: 1fr; min-height: 5; }
    #log-title { height: 1; padding: 0 1; background: $boost; }
    #log { height: 1fr; min-height: 5; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("f", "follow", "Running task"),
        Binding("left_square_bracket", "attempt(-1)", "Prev attempt"),
        Binding("right_square_bracket", "attempt(1)", "Next attempt"),
        Binding("l", "focus_log", "Read log"),
        Binding("t", "focus_tasks", "Tasks"),
    ]

    def __init__(self, watch: RunWatch, *, interval: float = 0.5) -> None:
        super().__init__()
        self.watch_run = watch
        self.interval = interval
        self.selected: str | None = None
        self.attempt: int | None = None  # None: the newest attempt of the selected task
        self._shown: tuple[str | None, int | None, int] | None = None

    def compose(self) -> ComposeResult:
        """The widgets: summary, open escalations, tasks, the selected task's log."""
        with Vertical():
            yield Static(id="summary")
            yield Static(id="escalations")
            yield DataTable(id="tasks", cursor_type="row", zebra_stripes=True)
            yield Static(id="log-title")
            yield Log(id="log", highlight=False, auto_scroll=True)
        yield Footer()

    def on_mount(self) -> None:
        """Lay out the task table and start polling."""
        table = self.query_one("#tasks", DataTable)
        for name in COLUMNS:
            table.add_column(name, key=name)
        now = time.time()
        for tid, ts in self.watch_run.state.tasks.items():
            table.add_row(*_row(ts, now), key=tid)
        self.refresh_view()
        self.action_follow()
        self.set_interval(self.interval, self.refresh_view)
        table.focus()

    # ------------------------------------------------------------------ refresh

    def refresh_view(self) -> None:
        """Catch up with the journal and redraw what changed."""
        watch = self.watch_run
        watch.poll()
        now = time.time()
        table = self.query_one("#tasks", DataTable)
        for tid, ts in watch.state.tasks.items():
            for name, value in zip(COLUMNS, _row(ts, now), strict=True):
                table.update_cell(tid, name, value)
        self.query_one("#summary", Static).update(self._summary(now))
        esc = self.query_one("#escalations", Static)
        esc.update(self._escalations())
        esc.display = bool(watch.escalations)
        self._show_log()

    def _summary(self, now: float) -> Text:
        watch = self.watch_run
        state = watch.state
        run_state = watch.run_state
        end = state.ended_at or now
        elapsed = format_duration(max(0.0, end - state.started_at)) if state.started_at else "—"
        done = sum(1 for ts in state.tasks.values() if ts.state in ("succeeded", "failed"))
        text = Text.assemble(
            ("run ", "bold"),
            (printable(watch.run_id, multiline=False), "bold cyan"),
            printable(f"  {state.plan.name} ({state.plan.project})  ", multiline=False),
            (run_state, f"bold {STYLE.get(run_state, '')}"),
            f"  {elapsed}  {done} of {plural(len(state.tasks), 'task')} done",
        )
        phases = Text("phases: ")
        for i, phase in enumerate(state.phases):
            if i:
                phases.append(" → ")
            phases.append(
                printable(f"{phase.id} {phase.state}", multiline=False),
                style=STYLE.get(phase.state, ""),
            )
        running = printable(", ".join(sorted(state.running)) or "nothing", multiline=False)
        return Text("\n").join([text, phases, Text(f"running: {running}")])

    def _escalations(self) -> Text:
        lines = [
            printable(
                f"⚠ escalation {key} on {e.get('task')}: {e.get('question', '')}"
                + (f" [{' / '.join(map(str, e['choices']))}]" if e.get("choices") else ""),
                multiline=False,
            )
            for key, e in self.watch_run.escalations.items()
        ]
        return Text("\n".join(lines))

    def _show_log(self) -> None:
        title = self.query_one("#log-title", Static)
        log = self.query_one("#log", Log)
        ts = self.watch_run.state.tasks.get(self.selected or "")
        if ts is None or not ts.attempts:
            title.update(literal(f"log: {self.selected or '—'} (no attempt yet)"))
            if self._shown != (self.selected, None, 0):
                log.clear()
                self._shown = (self.selected, None, 0)
            return
        numbers = [a.number for a in ts.attempts]
        number = self.attempt if self.attempt in numbers else numbers[-1]
        attempt = ts.attempts[numbers.index(number)]
        path = attempt_log(self.watch_run.state_dir, self.watch_run.run_id, ts.task.id, number)
        size = path.stat().st_size if path.exists() else 0
        title.update(
            literal(
                f"log: {ts.task.id} attempt {number}/{numbers[-1]} ({attempt.state})"
                "   [ ] other attempts · l read · t tasks"
            )
        )
        if self._shown == (ts.task.id, number, size):
            return
        self._shown = (ts.task.id, number, size)
        log.clear()
        log.write_lines(
            printable(line, multiline=False)
            for line in self.watch_run.log_lines(ts.task.id, number)
        )

    # ------------------------------------------------------------------ actions

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        """Moving the cursor selects a task and shows its newest attempt's log."""
        key = message.row_key.value
        if key != self.selected:
            self.selected = key
            self.attempt = None
            self._show_log()

    def action_follow(self) -> None:
        """Select a running task (or the first unfinished one)."""
        state = self.watch_run.state
        target = next(iter(sorted(state.running)), None) or next(
            (tid for tid, ts in state.tasks.items() if ts.state != "succeeded"), None
        )
        if target is None:
            target = next(iter(state.tasks), None)
        if target is not None:
            table = self.query_one("#tasks", DataTable)
            table.move_cursor(row=table.get_row_index(target))
            self.selected = target
            self.attempt = None
            self._show_log()

    def action_attempt(self, step: int) -> None:
        """Show the previous or next attempt of the selected task."""
        ts = self.watch_run.state.tasks.get(self.selected or "")
        if ts is None or not ts.attempts:
            return
        numbers = [a.number for a in ts.attempts]
        current = numbers.index(self.attempt) if self.attempt in numbers else len(numbers) - 1
        self.attempt = numbers[max(0, min(len(numbers) - 1, current + step))]
        self._show_log()

    def action_focus_log(self) -> None:
        """Move the keyboard to the log, to scroll it."""
        self.query_one("#log", Log).focus()

    def action_focus_tasks(self) -> None:
        """Move the keyboard back to the task list."""
        self.query_one("#tasks", DataTable).focus()


def run_monitor(store: RunStore, run_id: str | None, state_dir: Path, interval: float) -> None:
    """Watch ``run_id`` (default: the newest run in progress) until the user quits."""
    watch = RunWatch(store, run_id or newest_active_run(store), state_dir)
    MonitorApp(watch, interval=interval).run()
