"""``vigil store init``: create the run store, on purpose, where history says one existed."""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.cli.common import Format, FormatOpt, WorkspaceOpt, config_for, console, emit_json

store_app = typer.Typer(help="The run store (SQLite file or PostgreSQL database).")


@store_app.command("init")
def init(
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Create an empty store even though .vigil/ holds earlier runs whose store "
            "is missing or empty (their logs and objects stay; their journal is gone).",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Create the store (or bring its schema up to date) and say where it is."""
    from vigil.store import open_store

    config = config_for(workspace)
    with open_store(config.database_url, history=config.state_dir, new_store=force) as store:
        url = store.display_url
    if fmt is Format.json:
        emit_json({"store": url, "ready": True})
    else:
        console.print(f"store ready: {url}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``store`` group to ``app``."""
    app.add_typer(store_app, name="store")
