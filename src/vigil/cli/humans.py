"""Commands for the people around a run: ``vigil monitor``, ``vigil slo``, ``vigil postmortem``.

Each imports its machinery only when it runs, so the TUI library costs nothing to the
other commands' start-up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from vigil.cli.common import (
    Format,
    FormatOpt,
    RunArg,
    WorkspaceOpt,
    config_for,
    console,
    emit_json,
    opened_store,
    run_named,
)
from vigil.errors import UsageError
from vigil.plan.duration import DurationSyntaxError, format_duration, parse_duration
from vigil.words import plural

_STATUS_STYLE = {"met": "green", "missed": "bold red", "n/a": "dim"}


def _show(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return format_duration(value) if unit == "seconds" else f"{value:.1%}"


def monitor(
    run_id: Annotated[
        str | None, typer.Argument(help="The run to watch (default: the newest one in progress).")
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, max=60, help="Seconds between polls.")
    ] = 0.5,
    workspace: WorkspaceOpt = None,
) -> None:
    """Watch a run live: tasks, attempts, times, the running step's log, escalations (q quits)."""
    if not sys.stdout.isatty():
        raise UsageError(
            "vigil monitor needs a terminal",
            "For scripts use `vigil status RUN_ID --format json` or `vigil logs RUN_ID`.",
        )
    from vigil.cli.monitor import run_monitor

    config = config_for(workspace)
    with opened_store(config) as store:
        chosen = run_named(store, config, run_id) if run_id is not None else None
        run_monitor(store, chosen, config.state_dir, interval)


def slo(
    window: Annotated[
        str | None,
        typer.Option(
            "--window", help="How far back to look, e.g. 24h, 7d (default: [slo] window)."
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Service levels over a window: run success, first-attempt pass, enforcement, recovery."""
    from vigil.report.slo import slo_report

    span: float | None = None
    if window is not None:
        try:
            span = parse_duration(window)
        except DurationSyntaxError as exc:
            raise UsageError(f"--window: {exc}", "Write a duration such as 24h or 7d.") from None
        if span <= 0:
            raise UsageError("--window must be longer than zero", "Write e.g. --window 7d.")
    config = config_for(workspace)
    with opened_store(config) as store:
        data = slo_report(config, store, now=time.time(), window=span)
    if fmt is Format.json:
        emit_json(data)
    else:
        _print_slo(data)
    raise typer.Exit(0 if data["met"] else 1)


def _print_slo(data: dict[str, Any]) -> None:
    console.print(
        f"service levels, {format_duration(data['window'])} window "
        f"({data['from'][:16].replace('T', ' ')} → {data['to'][:16].replace('T', ' ')} UTC)"
    )
    table = Table(box=None, header_style="bold")
    for col in ("indicator", "value", "target", "status", "from"):
        table.add_column(col)
    for i in data["indicators"]:
        target = _show(i["target"], i["unit"])
        target = ("≤ " if i["unit"] == "seconds" else "≥ ") + target
        if i["unit"] == "seconds":
            basis = f"{plural(i['failures'], 'failed run')}, {i['unrecovered']} not recovered"
        else:
            basis = f"{i['numerator']}/{i['denominator']}"
        table.add_row(
            i["title"],
            _show(i["value"], i["unit"]),
            target,
            Text(i["status"], style=_STATUS_STYLE[i["status"]]),
            basis,
        )
    console.print(table)


def postmortem(
    run_id: RunArg,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the Markdown here instead of stdout.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Write one even for a run that did not fail.")
    ] = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Write a postmortem of a failed run: timeline, first failure, what to change."""
    from vigil.cli.terminal import printable
    from vigil.report.postmortem import postmortem_for, render_markdown

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        data = postmortem_for(config, store, run_id, force=force)
    text = json.dumps(data, indent=2) + "\n" if fmt is Format.json else render_markdown(data)
    if output is None:
        sys.stdout.write(printable(text))
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot write {output}: {exc.strerror}", "Choose a writable --output path."
        ) from None
    console.print(f"postmortem of {run_id}: {output}")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command()(monitor)
    app.command()(slo)
    app.command()(postmortem)
