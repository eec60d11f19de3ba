"""The whole error catalogue: every ``VigilError`` subclass of every vigil module."""

from __future__ import annotations

import importlib
import pkgutil

import vigil
from vigil.errors import CATALOG, VigilError


def full_catalog() -> dict[str, type[VigilError]]:
    """Import every vigil module (so each registers its errors) and return the catalogue."""
    for info in pkgutil.walk_packages(vigil.__path__, "vigil."):
        if info.name.startswith(("vigil.cli.main", "vigil.store.migrations")):
            continue
        try:
            importlib.import_module(info.name)
        except Exception:  # an optional dependency missing must not hide the other codes
            continue
    return dict(sorted(CATALOG.items()))


def errors_markdown() -> str:
    """``docs/errors.md``: every code with its title, remedy and exit code."""
    lines = [
        "# Error codes",
        "",
        "Every error vigil reports carries one of these codes. The meaning of a code never",
        "changes once published. `vigil explain CODE` prints an entry. This page is generated",
        "by `python scripts/gen_errors_doc.py`; do not edit it by hand.",
        "",
        "Categories: `not_found`, `refused` (on purpose; a retry is refused again),",
        "`transient` (trying again later can work), `permanent` (the request cannot succeed",
        "as given), `internal` (vigil itself failed).",
        "",
        "| Code | What happened | What to do | Category | Exit |",
        "|---|---|---|---|---|",
    ]
    for code, cls in full_catalog().items():
        remedy = str(cls.remedy).replace("|", "\\|")
        lines.append(
            f"| `{code}` | {cls.title} | {remedy} | {cls.category} | {int(cls.exit_code)} |"
        )
    return "\n".join(lines) + "\n"
