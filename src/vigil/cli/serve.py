"""``vigil serve``: the web dashboard."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from vigil.cli.common import WorkspaceOpt, config_for, console


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; loopback unless you mean it.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: any free one).")
    ] = 8470,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve the dashboard: runs, task graph, logs, reports, escalations, /metrics.

    Prints the URL and an access token; changes need it (off loopback, so does reading).
    """
    from vigil.web import new_token
    from vigil.web import serve as serve_dashboard
    from vigil.web.auth import is_loopback

    config = config_for(workspace)
    token = os.environ.get("VIGIL_SERVE_TOKEN") or new_token()

    def announce(url: str) -> None:
        console.print(f"vigil dashboard: {url}", markup=False)
        console.print(f"access token: {token}", markup=False)
        if not is_loopback(host):
            console.print("every page needs the token (the address is not loopback)")
        console.file.flush()

    serve_dashboard(config, host=host, port=port, token=token, announce=announce)


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command()(serve)
