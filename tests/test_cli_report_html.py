"""`vigil report RUN --format html`: one self-contained page with a Gantt chart of the
attempts (parallel tasks, retries, waits), where nothing from the run can run as code."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow

OFF = {"VIGIL_ISOLATION": "off"}
HOSTILE = "<script>alert(1)</script>"

BAR = re.compile(
    r'<rect class="gantt-(attempt|wait)" data-state="([a-z_]+)" x="([0-9.]+)" y="[0-9.]+" '
    r'width="([0-9.]+)"[^>]*><title>([^<]*)</title></rect>'
)


class Elements(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def plan_of(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "gantt", "project": "g", "phases": [{"id": "p", "tasks": list(tasks)}]}


def bars_of(page: str) -> list[tuple[str, str, str, float, float]]:
    """(kind, task, state, start x, end x) of every bar of the chart."""
    found = []
    for kind, state, x, width, title in BAR.findall(page):
        task = title.split(":", 1)[0]
        found.append((kind, task, state, float(x), float(x) + float(width)))
    return found


def test_the_page_charts_parallel_tasks_retries_and_waits(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        ws / "p.yaml",
        plan_of(
            {"id": "left", "run": "sleep 0.5"},
            {"id": "right", "run": "sleep 0.5"},
            {
                "id": "flaky",
                "run": 'test "$VIGIL_ATTEMPT" -ge 2',
                "retry": {"attempts": 2, "initial": "300ms"},
            },
            {"id": "ask", "needs": ["left"], "approval": {"question": "Go on?"}},
        ),
    )
    waiting = vigil("run", "p.yaml", "--run-id", "g1", "-j", "4", cwd=ws, env=OFF)
    assert waiting.returncode == ExitCode.WAITING, waiting.stdout + waiting.stderr
    [command] = re.findall(r"answer: vigil (escalations answer \S+ --approve)", waiting.stdout)
    assert vigil(*command.split(), cwd=ws, env=OFF).returncode == 0
    assert status("g1", ws)["state"] == "succeeded"
    out = vigil("report", "g1", "--format", "html", cwd=ws)
    assert out.returncode == 0, out.stderr
    page = out.stdout
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    # Self-contained: nothing is fetched from anywhere, nothing runs.
    parser = Elements()
    parser.feed(page)
    for tag, attrs in parser.tags:
        assert tag not in ("script", "link", "img", "iframe", "object", "embed"), tag
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
        assert "src" not in attrs, (tag, attrs)
        assert not (attrs.get("href") or "#").startswith(("http", "//")), (tag, attrs)
    bars = bars_of(page)
    attempts = {(t, s): (x0, x1) for kind, t, s, x0, x1 in bars if kind == "attempt"}
    # left and right ran at the same time: their bars overlap.
    (l0, l1), (r0, r1) = attempts[("left", "succeeded")], attempts[("right", "succeeded")]
    assert l0 < r1 and r0 < l1
    # flaky failed, waited, then passed: two bars, the second after the first, and the
    # wait between them drawn as a line.
    (_, f1), (s0, _) = attempts[("flaky", "failed")], attempts[("flaky", "succeeded")]
    assert f1 <= s0
    assert 'class="gantt-backoff"' in page and "flaky: waited to retry" in page
    # ask waited for a person after left, then ran.
    waits = [(t, x0, x1) for kind, t, _, x0, x1 in bars if kind == "wait"]
    assert [t for t, _, _ in waits] == ["ask"]
    assert waits[0][1] >= l1 - 0.2 and "waited for a person: Go on?" in page


def test_task_names_and_output_holding_markup_are_shown_not_run(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        ws / "p.yaml",
        plan_of(
            {
                "id": "shout",
                "name": HOSTILE,
                "run": f"echo '{HOSTILE}'; echo '<img src=x onerror=alert(2)>'; exit 3",
            }
        ),
    )
    failed = vigil("run", "p.yaml", "--run-id", "h1", cwd=ws, env=OFF)
    assert failed.returncode == ExitCode.RUN_FAILED
    page = vigil("report", "h1", "--format", "html", cwd=ws).stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the name, and the output
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    parser = Elements()
    parser.feed(page)
    assert [t for t, _ in parser.tags if t in ("script", "img")] == []
    assert "<script" not in page.lower()
