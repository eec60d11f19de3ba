"""The list of command groups. A new group is one module with a ``register(app)``."""

from __future__ import annotations

import importlib

import typer

GROUPS = [
    "vigil.cli.run",
    "vigil.cli.inspect",
    "vigil.cli.plan",
    "vigil.cli.changes",
    "vigil.cli.escalations",
    "vigil.cli.safety",
    "vigil.cli.humans",
    "vigil.cli.serve",
    "vigil.cli.store",
]


def register(app: typer.Typer) -> None:
    """Add every command group to ``app``."""
    for name in GROUPS:
        importlib.import_module(name).register(app)
