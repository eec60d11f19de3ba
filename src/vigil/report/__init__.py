"""Reports: the run as data, the completion report."""

from vigil.report.completion import build_report, render_markdown, write_report
from vigil.report.view import iso, load_state, run_view

__all__ = ["build_report", "iso", "load_state", "render_markdown", "run_view", "write_report"]
