"""What every command shares: options, output, opening the project's store."""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vigil.cli.terminal import SafeConsole
from vigil.config import Config, load_config

if TYPE_CHECKING:
    from vigil.store import RunStore, Store

# Markup is parsed only where a call passes markup=True (values in it go through
# vigil.cli.terminal.escape); control characters are escaped in everything printed.
console = SafeConsole(highlight=False, soft_wrap=False)
# soft_wrap: a remedy line (often a command to copy) is never broken at 80 columns.
err_console = SafeConsole(stderr=True, highlight=False, soft_wrap=True)


class Format(enum.StrEnum):
    """Output format of commands a person or a program reads."""

    text = "text"
    json = "json"


FormatOpt = Annotated[
    Format, typer.Option("--format", "-o", help="Output format: text for people, json for tools.")
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Do not stream the steps' output (shown, without a terminal, line by line "
        "with the task in front); `vigil logs` has it.",
    ),
]
WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Project directory (default: current directory, or VIGIL_WORKSPACE).",
        show_default=False,
    ),
]


def workspace_path(workspace: Path | None) -> Path:
    """The workspace a command acts on."""
    if workspace is not None:
        return workspace.expanduser().resolve()
    env = os.environ.get("VIGIL_WORKSPACE")
    return Path(env).resolve() if env else Path.cwd().resolve()


def config_for(workspace: Path | None, *, create: bool = False) -> Config:
    """Configuration of the workspace a command acts on; a missing one is refused unless
    ``create`` (``vigil run --create``)."""
    return load_config(workspace_path(workspace), create=create)


@contextmanager
def opened_store(config: Config) -> Iterator[Store]:
    """The project's run store, closed afterwards."""
    from vigil.store import open_store

    store = open_store(config.database_url, history=config.state_dir)
    try:
        yield store
    finally:
        store.close()


def run_named(store: RunStore, config: Config, text: str) -> str:
    """The full id of the run ``text`` names (id, unique prefix or ``last``); every command
    taking a run calls this before it reads, verifies or changes the run."""
    from vigil.engine.runref import resolve_run_id

    return resolve_run_id(store, text, workspace=str(config.workspace))


RunArg = Annotated[
    str,
    typer.Argument(
        metavar="RUN",
        help="The run: its id, a unique prefix of it, or `last` (the newest of this workspace).",
        show_default=False,
    ),
]


def print_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], styles: Sequence[str] | None = None
) -> None:
    """Rows under a bold header in aligned columns, as a borderless rich ``Table`` looks.

    Linear in the number of rows: a rich ``Table`` measures and wraps every cell, which
    took seconds for the 10,000 tasks of a large run. ``styles`` gives one style per row
    for its third column (the state); plain text when stdout is not a terminal. Cells
    come from plans and runs, so control and bidi characters are shown escaped either way.
    """
    from rich.cells import cell_len

    from vigil.cli.terminal import printable

    rows = [[printable(cell, multiline=False) for cell in row] for row in rows]
    widths = [cell_len(c) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], cell_len(cell))
    last = len(columns) - 1

    def pad(i: int, cell: str) -> str:
        return cell if i == last else cell + " " * (widths[i] - cell_len(cell))

    if not console.is_terminal:
        out = [" " + "  ".join(pad(i, c) for i, c in enumerate(columns)).rstrip()]
        out.extend(" " + "  ".join(pad(i, c) for i, c in enumerate(row)).rstrip() for row in rows)
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()
        return
    from rich.text import Text

    text = Text(" " + "  ".join(pad(i, c) for i, c in enumerate(columns)).rstrip(), style="bold")
    for n, row in enumerate(rows):
        text.append("\n ")
        for i, cell in enumerate(row):
            if i:
                text.append("  ")
            style = styles[n] if styles is not None and i == 2 else ""
            text.append(pad(i, cell) if i < last else cell.rstrip(), style=style)
    console.print(text, soft_wrap=True)


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (one document, newline-terminated)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
