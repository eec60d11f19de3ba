"""The task graph drawing, for any plan: readable (no overlaps, edges point right) and safe."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from vigil.plan.models import Plan
from vigil.web.auth import is_loopback
from vigil.web.graph import layout, task_graph_svg

SVG = "{http://www.w3.org/2000/svg}"
STATES = ["pending", "running", "succeeded", "failed", "skipped", "cancelled", "waiting", "odd"]


@hs.composite
def plans(draw: Any) -> Plan:
    phases = []
    earlier: list[str] = []
    counter = 0
    for p in range(draw(hs.integers(1, 4))):
        tasks = []
        in_phase: list[str] = []
        for _ in range(draw(hs.integers(1, 7))):
            counter += 1
            tid = f"t{counter}"
            pool = earlier + in_phase
            needs = draw(hs.lists(hs.sampled_from(pool), max_size=3, unique=True)) if pool else []
            name = draw(hs.one_of(hs.none(), hs.text(max_size=40)))
            tasks.append({"id": tid, "run": "true", "needs": needs, "name": name})
            in_phase.append(tid)
        phases.append({"id": f"p{p}", "name": draw(hs.text(max_size=30)) or None, "tasks": tasks})
        earlier += in_phase
    return Plan.model_validate({"name": "g", "project": "g", "phases": phases})


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(plans())
def test_layout_is_readable(plan: Plan) -> None:
    lay = layout(plan)
    ids = [t.id for _, t in plan.tasks()]
    assert sorted(lay.nodes) == sorted(ids)
    boxes = list(lay.nodes.values())
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    for need, task in lay.edges:
        assert lay.nodes[need].right < lay.nodes[task].x, (need, task)
    for phase in plan.phases:
        box = lay.phases[phase.id]
        for task in phase.tasks:
            node = lay.nodes[task.id]
            assert box.x < node.x and node.right < box.right
            assert box.y < node.y and node.bottom < box.bottom
            assert node.right <= lay.width and node.bottom <= lay.height
    assert len(lay.edges) == sum(len(t.needs) for _, t in plan.tasks())


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(plans(), hs.data())
def test_svg_shows_each_task_once_in_its_state_and_escapes_names(plan: Plan, data: Any) -> None:
    states = {t.id: data.draw(hs.sampled_from(STATES)) for _, t in plan.tasks()}
    svg = task_graph_svg(plan, states, href=lambda t: f"/runs/r?x=1&t={t}")
    root = ET.fromstring(svg)  # well-formed whatever the names hold
    drawn = {
        g.get("data-task"): g.get("data-state")
        for g in root.iter(f"{SVG}g")
        if (g.get("class") or "").startswith("task ")
    }
    assert drawn == states
    edges = [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    assert len(edges) == sum(len(t.needs) for _, t in plan.tasks())
    links = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert sorted(links) == sorted(f"/runs/r?x=1&t={t}" for t in states)


def test_hostile_names_stay_text() -> None:
    plan = Plan.model_validate(
        {
            "name": "x",
            "project": "x",
            "phases": [
                {
                    "id": "p",
                    "name": "</text><script>alert(1)</script>",
                    "tasks": [{"id": "a", "run": "true", "name": '"><img src=x onerror=alert(1)>'}],
                }
            ],
        }
    )
    svg = task_graph_svg(plan, {"a": '"><script>'})
    assert "<script>" not in svg and "<img" not in svg
    ET.fromstring(svg)


def test_loopback_names() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "LOCALHOST", "a.localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", "localhost.example.com", "", "[::"):
        assert not is_loopback(host), host
