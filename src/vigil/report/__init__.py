"""Reports: the run as data, the completion report.

Names are imported on first use, so a command that only formats a time (``vigil runs``)
does not load the engine's state and the plan models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vigil.lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
