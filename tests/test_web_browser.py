"""The dashboard in a real browser: Debian's chromium driven by Playwright, against
``vigil serve`` running as a real process over runs the real ``vigil run`` made.

These tests fail, not skip, when chromium is missing (``.ci/run`` installs it). Set
``VIGIL_SCREENSHOTS=DIR`` to keep the screenshots (the docs' images come from here).
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from clitools import spawn, status, vigil, write_plan
from enginetools import HANG

pytestmark = pytest.mark.slow

# Playwright's own bounds (5 s for an expectation, 30 s for an action) are speed bounds: on
# a loaded machine a correct page can take longer. Waits here end on what the page shows,
# with the suite's hang detector as the only limit.
expect.set_options(timeout=HANG * 1000)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-test-token-" + "z" * 20

NIGHTLY = {
    "name": "Nightly build",
    "project": "shop",
    "phases": [
        {
            "id": "build",
            "tasks": [
                {"id": "deps", "run": "echo resolving deps; echo 'deps ok'"},
                {
                    "id": "compile",
                    "needs": ["deps"],
                    "run": 'test "$VIGIL_ATTEMPT" -ge 2 || { echo "cc: flaky"; false; }\n'
                    "echo compiled 42 files\n",
                    "retry": {"attempts": 3, "initial": 0},
                },
                {"id": "docs", "needs": ["deps"], "run": "echo docs built"},
            ],
        },
        {
            "id": "check",
            "tasks": [
                {"id": "unit", "needs": ["compile"], "run": "echo 120 passed"},
                {
                    "id": "lint",
                    "run": "echo 'style: 3 warnings'; exit 1",
                    "on_failure": "continue",
                },
            ],
        },
    ],
}

RELEASE = {
    "name": "Release",
    "project": "shop",
    "phases": [
        {
            "id": "ship",
            "tasks": [
                {"id": "package", "run": "echo packaged"},
                {
                    "id": "go",
                    "needs": ["package"],
                    "approval": {"question": "Deploy to prod?"},
                },
                {"id": "deploy", "needs": ["go"], "run": "echo deployed to prod"},
            ],
        }
    ],
}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "chromium is not installed: apt-get install chromium"
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Server:
    """``vigil serve`` on a free localhost port, stopped (with its children) afterwards."""

    def __init__(self, workspace: Path, host: str = "127.0.0.1") -> None:
        self.proc = spawn(
            "serve",
            "--host",
            host,
            "--port",
            "0",
            "-w",
            str(workspace),
            cwd=workspace,
            env={"VIGIL_SERVE_TOKEN": TOKEN},
        )
        self.url = self._read_url()

    def _read_url(self) -> str:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + HANG
        seen = ""
        while time.monotonic() < deadline:
            if not sel.select(timeout=1):
                continue
            line = self.proc.stdout.readline()
            if not line:
                break
            seen += line
            found = re.search(r"vigil dashboard: (http://\S+)", line)
            if found:
                return found.group(1).rstrip("/")
        self.stop()
        raise AssertionError(f"vigil serve did not start: {seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def shots() -> Path | None:
    where = os.environ.get("VIGIL_SCREENSHOTS")
    return Path(where) if where else None


def new_page(browser: Browser) -> Page:
    """A page whose actions and navigations wait up to the hang detector, not 30 s."""
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(HANG * 1000)
    return page


def snap(page: Page, name: str, tmp_path: Path) -> None:
    target = (shots() or tmp_path) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_plan(workspace: Path, name: str, plan: dict[str, Any], expect_code: int) -> str:
    write_plan(workspace / name, plan)
    out = vigil("run", name, "--format", "json", "-w", str(workspace), cwd=workspace)
    assert out.returncode == expect_code, out.stdout + out.stderr
    run_id: str = json.loads(out.stdout)["id"]
    return run_id


def test_browse_runs_graph_and_a_task_log(
    workspace: Path, browser: Browser, tmp_path: Path
) -> None:
    run_id = run_plan(workspace, "nightly.yaml", NIGHTLY, 0)
    bad = dict(NIGHTLY, name="Nightly build (broken)")
    bad["phases"] = [{"id": "build", "tasks": [{"id": "deps", "run": "echo 'no network'; exit 2"}]}]
    failed_id = run_plan(workspace, "broken.yaml", bad, 1)
    serving = Server(workspace)
    try:
        page = new_page(browser)
        page.goto(f"{serving.url}/runs")
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_attribute(
            "data-state", "succeeded"
        )
        expect(page.locator(f'tr[data-run="{failed_id}"]')).to_have_attribute(
            "data-state", "failed"
        )
        snap(page, "runs.png", tmp_path)

        page.click("a.chip.state-failed")
        expect(page.locator("tr[data-run]")).to_have_count(1)
        page.click(f'a[href="/runs/{failed_id}"]')
        expect(page.locator("svg.task-graph g.task")).to_have_count(1)

        page.goto(f"{serving.url}/runs")
        page.click(f'a[href="/runs/{run_id}"]')
        graph = page.locator("svg.task-graph")
        expect(graph.locator("g.task")).to_have_count(5)
        truth = {t["id"]: t["state"] for t in status(run_id, workspace)["tasks"]}
        for task_id, state in truth.items():
            expect(graph.locator(f'g.task[data-task="{task_id}"]')).to_have_attribute(
                "data-state", state
            )
        expect(graph.locator("path.edge")).to_have_count(3)
        snap(page, "run.png", tmp_path)

        graph.locator('g.task[data-task="compile"]').click()
        expect(page.locator("tr[data-attempt]")).to_have_count(2)
        expect(page.locator("#log")).to_contain_text("compiled 42 files")
        page.click('tr[data-attempt="1"] a')
        expect(page.locator("#log")).to_contain_text("cc: flaky")
        snap(page, "task.png", tmp_path)

        page.goto(f"{serving.url}/runs/{run_id}/report")
        expect(page.locator("article.report h1")).to_contain_text("SUCCEEDED")
    finally:
        serving.stop()


def test_approve_an_escalation_in_the_browser(
    workspace: Path, browser: Browser, tmp_path: Path
) -> None:
    run_id = run_plan(workspace, "release.yaml", RELEASE, 5)
    serving = Server(workspace)
    try:
        page = new_page(browser)
        page.goto(f"{serving.url}/escalations")
        card = page.locator("article.escalation")
        expect(card).to_have_count(1)
        expect(card.locator(".question")).to_have_text("Deploy to prod?")

        # Without the token the button is refused and nothing changes.
        card.locator("button.approve").click()
        expect(page.locator("h1")).to_have_text("Log in")
        assert status(run_id, workspace)["state"] == "waiting"
        still_open = httpx.get(f"{serving.url}/api/escalations").json()
        assert [(e["task"], e["answered"]) for e in still_open] == [("go", False)]

        # Log in through the form; it brings us back to the escalations.
        page.fill('input[name="token"]', "not-the-token")
        page.click("form.login button")
        expect(page.locator(".error")).to_contain_text("not this dashboard's access token")
        page.fill('input[name="token"]', TOKEN)
        page.fill('input[name="name"]', "ada")
        page.click("form.login button")
        expect(page).to_have_url(re.compile("/escalations$"))
        expect(page.locator(".who")).to_contain_text("ada")
        expect(page.locator("article.escalation")).to_have_count(1)
        snap(page, "escalations.png", tmp_path)
        page.locator("article.escalation input[name=comment]").fill("ship it")
        page.locator("article.escalation button.approve").click()

        expect(page).to_have_url(re.compile(f"/runs/{run_id}$"))
        # The run page reloads itself while the run is live.
        expect(page.locator("#run-state .badge")).to_have_text("succeeded")
        done = status(run_id, workspace)
        assert {t["id"]: t["state"] for t in done["tasks"]}["deploy"] == "succeeded"
        history = httpx.get(f"{serving.url}/api/escalations?all=1&run={run_id}").json()
        assert [(e["answer"]["by"], e["answer"]["comment"]) for e in history] == [
            ("web:ada", "ship it")
        ]
    finally:
        serving.stop()


def test_serve_refuses_a_short_token_and_a_taken_port(workspace: Path) -> None:
    short = vigil("serve", "--port", "0", cwd=workspace, env={"VIGIL_SERVE_TOKEN": "abc"})
    assert short.returncode == 2 and "VIGIL-CONFIG" in short.stderr
    serving = Server(workspace)
    try:
        port = serving.url.rsplit(":", 1)[1]
        taken = vigil("serve", "--port", port, cwd=workspace)
        assert taken.returncode == 2 and "VIGIL-SERVE-BIND" in taken.stderr
    finally:
        serving.stop()


def test_off_loopback_the_served_dashboard_wants_the_token_for_everything(
    workspace: Path,
) -> None:
    serving = Server(workspace, host="0.0.0.0")
    try:
        local = serving.url.replace("0.0.0.0", "127.0.0.1")
        for path in ("/runs", "/api/runs", "/metrics", "/escalations"):
            assert httpx.get(local + path).status_code == 401, path
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(local + "/api/runs", headers=bearer).json() == []
    finally:
        serving.stop()
