"""``vigil runs``, ``vigil status``, ``vigil logs``, ``vigil report``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vigil.cli.common import (
    Format,
    FormatOpt,
    RunArg,
    WorkspaceOpt,
    config_for,
    console,
    emit_json,
    opened_store,
    print_table,
    run_named,
)
from vigil.cli.terminal import escape, for_terminal, printable
from vigil.errors import UsageError

if TYPE_CHECKING:
    from vigil.store import RunStore

# Each command imports what it needs: `vigil runs` should not load the engine.


def runs(
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many runs to list.")] = 20,
    project: Annotated[str | None, typer.Option("--project", help="Only this project.")] = None,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """List runs, newest first."""
    from vigil.cli.progress import STYLE
    from vigil.engine.runref import short_id
    from vigil.plan.duration import format_duration
    from vigil.report.view import run_row

    config = config_for(workspace)
    with opened_store(config) as store:
        records = store.list_runs(project=project, limit=limit)
        rows = [run_row(store, r) for r in records]
        # Whole ids for pipes and files (a script may use them); on a terminal, the
        # shortest prefix that still names the run (every command takes one).
        shown = {
            r.id: short_id(store, r.id) if fmt is Format.text and console.is_terminal else r.id
            for r in records
        }
    if fmt is Format.json:
        emit_json(rows)
        return
    if not rows:
        console.print("no runs yet; start one with `vigil run PLAN`")
        return
    lines = []
    for row in rows:
        dur = format_duration(row["duration"]) if row["duration"] is not None else ""
        started = (row["started_at"] or "")[:19].replace("T", " ")
        lines.append((shown[row["id"]], row["plan"], row["state"], started, dur))
    print_table(
        ("run", "plan", "state", "started", "duration"),
        lines,
        [STYLE.get(row["state"], "") for row in rows],
    )
    for row in rows:
        if row["resume"]:
            console.print(
                f"{printable(row['id'])}: its driver is gone; continue it with `{row['resume']}`"
            )


STATUS_LIST_ALL = 50
"""Runs with at most this many tasks list every task in ``vigil status``."""


def status(
    run_id: RunArg,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
    all_tasks: Annotated[
        bool, typer.Option("--all", "-a", help="List every task, also in a large run.")
    ] = False,
) -> None:
    """Show a run and its tasks with their attempts.

    A run of more than 50 tasks lists only the tasks that did not succeed, after a count
    of every state; ``--all`` lists them all, and ``--format json`` always has them all.
    """
    from vigil.cli.progress import STYLE, task_label
    from vigil.report.view import load_state, run_view

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        record, state = load_state(store, run_id)
    view = run_view(record, state)
    if fmt is Format.json:
        emit_json(view)
        return
    console.print(
        f"run [bold]{escape(view['id'])}[/] ({escape(view['plan'])}): "
        f"[{STYLE.get(view['state'], '')}]{escape(view['state'])}[/]",
        markup=True,
    )
    if view["resume"]:
        console.print(f"its driver is gone; continue it with `{view['resume']}`")
    if view["inputs"]:
        given = ", ".join(
            f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in view["inputs"].items()
        )
        console.print(f"inputs: {escape(printable(given))}", markup=True)
    tasks = view["tasks"]
    hidden = 0
    if len(tasks) > STATUS_LIST_ALL and not all_tasks:
        counts: dict[str, int] = {}
        for t in tasks:
            counts[t["state"]] = counts.get(t["state"], 0) + 1
        console.print(
            f"{len(tasks):,} tasks: "
            + ", ".join(f"{n:,} {printable(state)}" for state, n in sorted(counts.items()))
        )
        shown = [t for t in tasks if t["state"] != "succeeded" or t["degraded"]]
        hidden = len(tasks) - len(shown)
        tasks = shown
    lines = []
    styles: list[str] = []
    for t in tasks:
        last = t["attempts"][-1] if t["attempts"] else None
        note = t["reason"] or (last["reason"] if last and last["reason"] else "") or ""
        label, style = task_label(
            t["state"], critical=t.get("critical", True), degraded=t["degraded"]
        )
        styles.append(style)
        lines.append((t["phase"], t["id"], label, str(len(t["attempts"])), note))
    if lines:
        print_table(
            ("phase", "task", "state", "attempts", "last"),
            lines,
            styles,
        )
    if hidden:
        console.print(
            f"{hidden:,} succeeded {'task is' if hidden == 1 else 'tasks are'} not listed;"
            f" `vigil status {printable(view['id'])} --all` lists every task"
        )


def logs(
    run_id: RunArg,
    task: Annotated[str | None, typer.Argument(help="One task (default: all, in order).")] = None,
    attempt: Annotated[int | None, typer.Option("--attempt", "-a", help="Attempt number.")] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing output as it is written until the task (without TASK, the "
            "run) ends or stops.",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Print captured output of a run, a task, or one attempt (secrets already masked)."""
    from vigil.layout import attempt_log, logs_dir
    from vigil.report.view import load_state

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        _record, state = load_state(store, run_id)
        if task is not None and task not in state.tasks:
            raise UsageError(
                f"run {run_id} has no task {task!r}", "See the tasks with `vigil status RUN_ID`."
            )
        if follow:
            _follow_logs(store, config.state_dir, run_id, task, attempt)
            return
    out = sys.stdout
    for ts in state.tasks.values():
        if task is not None and ts.task.id != task:
            continue
        for a in ts.attempts:
            if attempt is not None and a.number != attempt:
                continue
            path = attempt_log(config.state_dir, run_id, ts.task.id, a.number)
            out.write(for_terminal(f"==> {ts.task.id} attempt {a.number} ({a.state}) <==\n"))
            if path.exists():
                out.write(for_terminal(path.read_text(encoding="utf-8", errors="replace")))
            out.flush()
    if task is None:
        for path in sorted(logs_dir(config.state_dir, run_id).glob("_phase.*.log")):
            out.write(for_terminal(f"==> {path.stem} <==\n"))
            out.write(for_terminal(path.read_text(encoding="utf-8", errors="replace")))


FOLLOW_POLL = 0.2
"""Seconds between two looks at a followed run."""


def _follow_logs(
    store: RunStore, state_dir: Path, run_id: str, task: str | None, attempt: int | None
) -> None:
    """Print the logs of ``run_id`` (or of one task) as they grow, attempt after attempt,
    until the task or the run has ended, waits for a person, or lost its driver."""
    import time

    from vigil.cli.stream import LogTail
    from vigil.layout import attempt_log
    from vigil.report.view import load_state

    out = sys.stdout
    tails: dict[tuple[str, int], LogTail] = {}
    done: set[tuple[str, int]] = set()
    while True:
        record, state = load_state(store, run_id)
        driven = store.run_lock_held(run_id)
        # A run not driven (its driver ended or died) gets no more output; a pending one
        # may be about to start.
        over = record.state not in ("pending", "running") or (
            driven is False and record.state != "pending"
        )
        for ts in state.tasks.values():
            if task is not None and ts.task.id != task:
                continue
            for a in ts.attempts:
                key = (ts.task.id, a.number)
                if key in done or (attempt is not None and a.number != attempt):
                    continue
                if key not in tails:
                    shown = a.state if a.ended_at is not None else "running"
                    out.write(for_terminal(f"==> {ts.task.id} attempt {a.number} ({shown}) <==\n"))
                    path = attempt_log(state_dir, run_id, ts.task.id, a.number)
                    tails[key] = LogTail(path)
                ended = a.ended_at is not None or over
                for line in tails[key].rest() if ended else tails[key].lines():
                    out.write(for_terminal(line + "\n"))
                if ended:
                    done.add(key)
        out.flush()
        if task is not None:
            ts = state.tasks[task]
            over = over or (ts.state not in ("pending", "running") and ts.running is None)
        if over:
            return
        time.sleep(FOLLOW_POLL)


def report(
    run_id: RunArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-o",
            help="md, json, or html: one self-contained page with a Gantt chart of attempts.",
        ),
    ] = "md",
    workspace: WorkspaceOpt = None,
) -> None:
    """Print a run's completion report (Markdown, JSON, or an HTML page)."""
    if fmt not in ("md", "json", "text", "html"):
        raise UsageError(
            f"unknown report format {fmt!r}", "Use --format md, --format json or --format html."
        )
    from vigil.report import build_report, load_state, render_markdown, run_view

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        record, state = load_state(store, run_id)
    view = run_view(record, state)
    data = build_report(view)
    if fmt == "json":
        emit_json(data)
    elif fmt == "html":
        from vigil.report.gantt import gantt_svg
        from vigil.report.html import render_html

        # Escaped for HTML inside; printable() also shows control characters as escapes.
        tails = _failed_log_tails(config.state_dir, run_id, view)
        sys.stdout.write(printable(render_html(view, data, gantt_svg(state), tails)))
    else:
        # vigil's own document: escaped wherever it goes, a file included.
        sys.stdout.write(printable(render_markdown(data)))


HTML_LOG_LINES = 30
"""How many of a failed attempt's last log lines the HTML report shows."""


def _failed_log_tails(
    state_dir: Path, run_id: str, view: dict[str, object]
) -> dict[tuple[str, int], str]:
    """The last lines of each failed attempt's log (masked as written)."""
    from vigil.cli.stream import read_tail
    from vigil.layout import attempt_log

    tails: dict[tuple[str, int], str] = {}
    tasks = view["tasks"]
    assert isinstance(tasks, list)
    for t in tasks:
        for a in t["attempts"]:
            if a["state"] in ("failed", "timed_out"):
                path = attempt_log(state_dir, run_id, t["id"], a["number"])
                lines = read_tail(path, HTML_LOG_LINES)
                if lines:
                    tails[(t["id"], a["number"])] = "\n".join(lines)
    return tails


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command()(runs)
    app.command()(status)
    app.command()(logs)
    app.command()(report)
