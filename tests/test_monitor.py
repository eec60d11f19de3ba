"""``vigil monitor`` watching a run that a real ``vigil run`` process drives."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.app import App

from clitools import spawn, status, vigil, wait_for, write_plan
from enginetools import HANG
from vigil.cli.monitor import MonitorApp, RunWatch, newest_active_run, read_tail
from vigil.errors import ExitCode, UsageError
from vigil.store import open_store

PLAN = {
    "name": "watched",
    "project": "shop",
    "phases": [
        {
            "id": "work",
            "tasks": [
                # Runs until the test cancels the run, so the monitor sees it in flight.
                {"id": "alpha", "run": "echo alpha-says-hello; sleep 600"},
                {"id": "beta", "run": "echo beta-line-1; echo beta-line-2"},
                {"id": "gamma", "needs": ["alpha"], "run": "echo gamma-ran"},
                # A real question for a person, opened by the driver while alpha runs.
                {"id": "ask", "approval": {"question": "Ship it?"}},
            ],
        }
    ],
}


def screen_text(app: App[None]) -> str:
    """What a terminal would show right now, as plain text."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True)
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


async def until(pilot: object, app: App[None], *needles: str, gone: str | None = None) -> str:
    """The screen once it shows every needle (and no longer shows ``gone``); what the
    screen shows ends the wait, the hang detector only a hung one."""
    text = ""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        await pilot.pause(0.05)  # type: ignore[attr-defined]
        text = screen_text(app)
        if all(n in text for n in needles) and (gone is None or gone not in text):
            return text
    raise AssertionError(f"never showed {needles!r} without {gone!r}; screen was:\n{text}")


@pytest.mark.slow
def test_monitor_follows_a_live_run(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(ws / "p.yaml", PLAN)
    proc = spawn("run", "p.yaml", "--run-id", "m1", "-j", "2", cwd=ws)
    try:
        wait_for(lambda: (ws / ".vigil" / "vigil.db").exists())
        wait_for(
            lambda: (
                "alpha-says-hello"
                in "\n".join(read_tail(ws / ".vigil" / "logs" / "m1" / "alpha" / "1.log", 200))
            )
        )
        wait_for(
            lambda: any(
                t["id"] == "beta" and t["state"] == "succeeded" for t in status("m1", ws)["tasks"]
            )
        )
        with open_store(f"sqlite:///{ws / '.vigil' / 'vigil.db'}") as store:
            assert newest_active_run(store) == "m1"
            app = MonitorApp(RunWatch(store, "m1", ws / ".vigil"), interval=0.1)

            async def drive() -> None:
                async with app.run_test(size=(120, 36)) as pilot:
                    # Every task, their states, and the running task's log.
                    text = await until(
                        pilot, app, "m1", "alpha", "beta", "gamma", "alpha-says-hello"
                    )
                    assert "running: alpha" in text
                    assert "log: alpha attempt 1/1 (running)" in text
                    # Move to beta and read its log.
                    await pilot.press("down")
                    text = await until(pilot, app, "beta-line-1", "beta-line-2")
                    assert "log: beta attempt 1/1 (succeeded)" in text
                    assert "alpha-says-hello" not in text
                    # A question for a person shows while it is open, and goes once answered.
                    text = await until(pilot, app, "on ask: Ship it?")
                    listed = vigil("escalations", "--format", "json", cwd=ws)
                    (question,) = json.loads(listed.stdout)
                    answered = vigil("escalations", "answer", question["id"], "--approve", cwd=ws)
                    assert answered.returncode == 0, answered.stderr
                    await until(pilot, app, "running: alpha", gone="on ask: Ship it?")
                    # Another process ends the run; the monitor catches up on its own.
                    cancelled = vigil("cancel", "m1", cwd=ws)
                    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
                    text = await until(pilot, app, "watched (shop)  cancelled")
                    assert "running: nothing" in text
                    await pilot.press("up")
                    text = await until(pilot, app, "log: alpha attempt 1/1 (cancelled)")
                    assert "alpha-says-hello" in text
                    await pilot.press("q")
                assert app.return_code in (0, None)

            asyncio.run(drive())
        assert proc.wait(timeout=HANG) == ExitCode.CANCELLED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_monitor_refuses_without_a_run_or_a_terminal(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'vigil.db'}") as store, pytest.raises(UsageError):
        newest_active_run(store)
    out = vigil("monitor", cwd=tmp_path)
    assert out.returncode == 2 and "needs a terminal" in out.stderr
    assert "Traceback" not in out.stderr
