"""Reports: the run as data, the completion report.

Names are imported on first use, so a command that only formats a time (``vigil runs``)
does not load the engine's state and the plan models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigil.report.completion import build_report, render_markdown, write_report
    from vigil.report.view import iso, load_state, run_view

_MODULE_OF = {
    "build_report": "completion",
    "render_markdown": "completion",
    "write_report": "completion",
    "iso": "view",
    "load_state": "view",
    "run_view": "view",
}

__all__ = ["build_report", "iso", "load_state", "render_markdown", "run_view", "write_report"]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
