"""The task graph of a run as inline SVG, laid out on the server.

Phases are boxes from left to right; inside a phase each wave of
:func:`vigil.plan.graph.execution_order` is a column, so every ``needs`` edge points
right. Pure: a plan and the tasks' states in, SVG text out. Drawing it here rather than
with a JavaScript library keeps the dashboard free of a front-end build and readable
without scripts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from markupsafe import escape

from vigil.plan.graph import execution_order
from vigil.plan.models import Plan

NODE_W = 156
NODE_H = 34
COL_GAP = 44
ROW_GAP = 14
PHASE_PAD = 14
PHASE_HEAD = 26
PHASE_GAP = 30
MARGIN = 8
LABEL_CHARS = 20

# Fill colours by task state; the page's CSS uses the same palette.
FILL = {
    "pending": "#e5e7eb",
    "running": "#bfdbfe",
    "succeeded": "#bbf7d0",
    "failed": "#fecaca",
    "skipped": "#f3f4f6",
    "cancelled": "#fde68a",
    "waiting": "#e9d5ff",
}
STROKE = {
    "pending": "#9ca3af",
    "running": "#2563eb",
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "skipped": "#d1d5db",
    "cancelled": "#d97706",
    "waiting": "#9333ea",
}


@dataclass(frozen=True)
class Box:
    """A rectangle in SVG user units."""

    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        """The x of the right edge."""
        return self.x + self.w

    @property
    def bottom(self) -> float:
        """The y of the bottom edge."""
        return self.y + self.h

    def overlaps(self, other: Box) -> bool:
        """Whether the two rectangles share any area."""
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )


@dataclass(frozen=True)
class Layout:
    """Where every phase and task goes, and the edges between tasks."""

    phases: dict[str, Box]
    nodes: dict[str, Box]
    edges: list[tuple[str, str]]
    width: float
    height: float


def layout(plan: Plan) -> Layout:
    """Place phases left to right and each phase's waves as columns inside it."""
    phases: dict[str, Box] = {}
    nodes: dict[str, Box] = {}
    x = float(MARGIN)
    tallest = 0
    orders = execution_order(plan)
    for order in orders:
        rows = max(len(wave) for wave in order.waves)
        tallest = max(tallest, rows)
        inner_w = len(order.waves) * NODE_W + (len(order.waves) - 1) * COL_GAP
        for col, wave in enumerate(order.waves):
            for row, task_id in enumerate(wave):
                nodes[task_id] = Box(
                    x + PHASE_PAD + col * (NODE_W + COL_GAP),
                    MARGIN + PHASE_HEAD + row * (NODE_H + ROW_GAP),
                    NODE_W,
                    NODE_H,
                )
        phases[order.phase] = Box(x, MARGIN, inner_w + 2 * PHASE_PAD, 0)
        x += inner_w + 2 * PHASE_PAD + PHASE_GAP
    inner_h = tallest * NODE_H + (tallest - 1) * ROW_GAP
    height = PHASE_HEAD + inner_h + PHASE_PAD
    phases = {pid: Box(b.x, b.y, b.w, height) for pid, b in phases.items()}
    edges = [(need, task.id) for _, task in plan.tasks() for need in task.needs if need in nodes]
    return Layout(phases, nodes, edges, x - PHASE_GAP + MARGIN, height + 2 * MARGIN)


def _clean(text: str) -> str:
    # Control characters are not allowed in XML (and mean nothing in a label).
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def _label(text: str) -> str:
    text = _clean(text)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def task_graph_svg(
    plan: Plan,
    states: Mapping[str, str],
    *,
    href: Callable[[str], str] | None = None,
) -> str:
    """The plan's task graph as an ``<svg>`` element, each task filled by its state."""
    lay = layout(plan)
    titles = {task.id: task.title for _, task in plan.tasks()}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="task-graph" role="img" '
        f'aria-label="task graph" width="{lay.width:.0f}" height="{lay.height:.0f}" '
        f'viewBox="0 0 {lay.width:.0f} {lay.height:.0f}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#6b7280"/></marker></defs>',
    ]
    for phase in plan.phases:
        box = lay.phases[phase.id]
        out.append(
            f'<g class="phase" data-phase="{escape(phase.id)}">'
            f'<rect x="{box.x:.0f}" y="{box.y:.0f}" width="{box.w:.0f}" height="{box.h:.0f}" '
            f'rx="8" fill="#fafafa" stroke="#d1d5db"/>'
            f'<text x="{box.x + PHASE_PAD:.0f}" y="{box.y + 18:.0f}" class="phase-label" '
            f'font-size="12" font-weight="600" fill="#374151">{escape(_label(phase.title))}'
            "</text></g>"
        )
    for need, task_id in lay.edges:
        a, b = lay.nodes[need], lay.nodes[task_id]
        x1, y1 = a.right, a.y + a.h / 2
        x2, y2 = b.x, b.y + b.h / 2
        bend = max(20.0, (x2 - x1) / 2)
        out.append(
            f'<path class="edge" data-from="{escape(need)}" data-to="{escape(task_id)}" '
            f'd="M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} '
            f'{x2:.1f},{y2:.1f}" fill="none" stroke="#6b7280" stroke-width="1.3" '
            f'marker-end="url(#arrow)"/>'
        )
    for task_id, box in lay.nodes.items():
        state = states.get(task_id, "pending")
        title = titles[task_id]
        node = (
            f'<g class="task state-{escape(state)}" data-task="{escape(task_id)}" '
            f'data-state="{escape(state)}"><title>{escape(_clean(title))}: {escape(state)}</title>'
            f'<rect x="{box.x:.0f}" y="{box.y:.0f}" width="{box.w:.0f}" height="{box.h:.0f}" '
            f'rx="6" fill="{FILL.get(state, "#ffffff")}" '
            f'stroke="{STROKE.get(state, "#6b7280")}" stroke-width="1.5"/>'
            f'<text x="{box.x + 10:.0f}" y="{box.y + 22:.0f}" font-size="13" '
            f'fill="#111827">{escape(_label(title))}</text></g>'
        )
        if href is not None:
            node = f'<a href="{escape(href(task_id))}">{node}</a>'
        out.append(node)
    out.append("</svg>")
    return "".join(out)
