"""A run's attempts over time as a Gantt chart: inline SVG, drawn on the server.

One row per task; a bar per attempt from its start to its end (or to now while it runs),
coloured by how it ended; a thin line where the task waited between attempts (a retry's
backoff) and a hatched bar where it waited for a person (an approval, a question, held
changes). Tasks that ran at the same time have overlapping bars. Pure: a run's state in,
SVG text out; every text from the plan or the run is escaped, and the SVG has no script,
no style element and no link outside the page, so it works under the dashboard's
Content-Security-Policy and in a self-contained file alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from vigil.plan.duration import format_duration

if TYPE_CHECKING:
    from vigil.engine.state import RunState

LABEL_W = 190
CHART_W = 720
ROW_H = 22
BAR_H = 14
AXIS_H = 24
MARGIN = 8
LABEL_CHARS = 26
TICKS = 6
STEPS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
"""Round distances between two ticks of the time axis, in seconds."""

FILL = {
    "succeeded": "#22c55e",
    "failed": "#ef4444",
    "timed_out": "#b91c1c",
    "cancelled": "#f59e0b",
    "interrupted": "#eab308",
    "running": "#3b82f6",
    "wait": "#c084fc",
}


@dataclass(frozen=True)
class Bar:
    """One span of a task's row."""

    kind: str
    """``attempt``, ``backoff`` (between two attempts) or ``wait`` (for a person)."""
    start: float
    end: float
    state: str
    label: str


@dataclass(frozen=True)
class Row:
    """One task and its spans, in time order."""

    task: str
    bars: tuple[Bar, ...]


def gantt_rows(state: RunState, now: float | None = None) -> list[Row]:
    """Every task that did something, with its attempts, retry waits and waits for people."""
    now = state.ended_at or (time.time() if now is None else now)
    rows: list[Row] = []
    for ts in state.tasks.values():
        bars: list[Bar] = []
        previous_end: float | None = None
        for a in ts.attempts:
            if previous_end is not None and a.started_at > previous_end:
                bars.append(
                    Bar("backoff", previous_end, a.started_at, "backoff", "waited to retry")
                )
            end = a.ended_at if a.ended_at is not None else now
            what = "fallback" if a.command == "fallback" else f"attempt {a.number}"
            why = f": {a.reason}" if a.reason else ""
            label = f"{what} {a.state.replace('_', ' ')} in {format_duration(end - a.started_at)}"
            bars.append(Bar("attempt", a.started_at, end, a.state, label + why))
            previous_end = end
        for q in ts.escalations:
            opened = float(q["opened_at"])
            answer = q.get("answer") or {}
            closed = float(answer.get("answered_at") or now)
            question = " ".join(str(q.get("question", "")).split())
            bars.append(Bar("wait", opened, closed, "wait", f"waited for a person: {question}"))
        if ts.state == "waiting" and ts.escalation is None and ts.attempts:
            held_from = ts.attempts[-1].ended_at or now
            bars.append(Bar("wait", held_from, now, "wait", "changes held for review"))
        if bars:
            rows.append(Row(ts.task.id, tuple(sorted(bars, key=lambda b: b.start))))
    return rows


def _tick_step(span: float) -> float:
    """A round step that puts about TICKS ticks on ``span`` seconds."""
    for step in STEPS:
        if span / step <= TICKS:
            return step
    return 3600 * max(1, round(span / TICKS / 3600))


def gantt_svg(
    state: RunState,
    *,
    now: float | None = None,
    href: Callable[[str], str] | None = None,
) -> str:
    """The chart as an ``<svg>`` element; ``href`` links each task's label to its page."""
    rows = gantt_rows(state, now)
    if not rows:
        return '<p class="gantt-empty">No attempt has started yet.</p>'
    t0 = min(b.start for r in rows for b in r.bars)
    t1 = max(b.end for r in rows for b in r.bars)
    span = max(t1 - t0, 0.001)

    def x(at: float) -> float:
        return LABEL_W + (at - t0) / span * CHART_W

    height = AXIS_H + len(rows) * ROW_H + MARGIN
    width = LABEL_W + CHART_W + MARGIN * 3
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gantt" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="sans-serif" font-size="11">',
        "<title>Attempts over time</title>",
        '<defs><pattern id="gantt-wait" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f3e8ff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{FILL["wait"]}" stroke-width="3"/>'
        "</pattern></defs>",
    ]
    step = _tick_step(span)
    tick = 0.0
    while tick <= span + 1e-9:
        tx = x(t0 + tick)
        out.append(
            f'<line x1="{tx:.1f}" y1="{AXIS_H - 4}" x2="{tx:.1f}" y2="{height - MARGIN}" '
            'stroke="#e5e7eb"/>'
            f'<text x="{tx:.1f}" y="{AXIS_H - 8}" text-anchor="middle" fill="#6b7280">'
            f"{escape(format_duration(tick) if tick else '0s')}</text>"
        )
        tick += step
    for i, row in enumerate(rows):
        y = AXIS_H + i * ROW_H
        name = row.task if len(row.task) <= LABEL_CHARS else row.task[: LABEL_CHARS - 1] + "…"
        label = (
            f'<text x="{MARGIN}" y="{y + ROW_H / 2 + 4:.1f}" fill="#111827">'
            f"<title>{escape(row.task)}</title>{escape(name)}</text>"
        )
        if href is not None:
            label = f'<a href="{escape(href(row.task))}">{label}</a>'
        out.append(label)
        for bar in row.bars:
            bx, bw = x(bar.start), max(x(bar.end) - x(bar.start), 1.5)
            tip = f"<title>{escape(row.task)}: {escape(bar.label)}</title>"
            if bar.kind == "backoff":
                mid = y + ROW_H / 2
                out.append(
                    f'<line class="gantt-backoff" x1="{bx:.1f}" y1="{mid:.1f}" '
                    f'x2="{bx + bw:.1f}" y2="{mid:.1f}" stroke="#9ca3af" stroke-width="2" '
                    f'stroke-dasharray="3 2">{tip}</line>'
                )
                continue
            fill = "url(#gantt-wait)" if bar.kind == "wait" else FILL.get(bar.state, "#9ca3af")
            top = y + (ROW_H - BAR_H) / 2
            out.append(
                f'<rect class="gantt-{bar.kind}" data-state="{escape(bar.state)}" '
                f'x="{bx:.1f}" y="{top:.1f}" width="{bw:.1f}" height="{BAR_H}" rx="2" '
                f'fill="{fill}">{tip}</rect>'
            )
    out.append("</svg>")
    return "".join(out)
