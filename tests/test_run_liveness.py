"""A dead driver looks dead: after ``kill -9`` a run shows as ``interrupted`` with the
command that continues it, in ``vigil runs``, ``vigil status`` (text and JSON) and the
dashboard; a run whose driver is alive still shows ``running``. On both stores."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from clitools import kill9, spawn, status, vigil, write_plan
from enginetools import HANG, wait_for_event
from vigil.config import load_config
from vigil.engine import events as ev
from vigil.store import open_store
from vigil.web import create_app

pytestmark = pytest.mark.slow

with warnings.catch_warnings():
    # Starlette's test client prefers a newer httpx fork; the one we have works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PLAN = {
    "name": "slow",
    "project": "slow",
    "phases": [{"id": "p", "tasks": [{"id": "sleeper", "run": "sleep 300"}]}],
}


class Cli:
    def __init__(self, ws: Path, store_url: str) -> None:
        self.ws = ws
        sqlite = store_url.startswith("sqlite")
        self.env = {} if sqlite else {"VIGIL_DATABASE_URL": store_url}
        self.url = f"sqlite:///{ws / '.vigil' / 'vigil.db'}" if sqlite else store_url
        # Run ids name process tags, which are machine-wide: one id per backend.
        self.rid = "dead-sqlite" if sqlite else "dead-pg"

    def runs(self) -> dict[str, dict[str, object]]:
        out = vigil("runs", "--format", "json", cwd=self.ws, env=self.env)
        assert out.returncode == 0, out.stderr
        return {r["id"]: r for r in json.loads(out.stdout)}


@pytest.fixture
def cli(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    ws = tmp_path / "ws"
    # The in-process dashboard reads the store the commands use.
    monkeypatch.setenv("VIGIL_DATABASE_URL", Cli(ws, store_url).url)
    ws.mkdir()
    write_plan(ws / "plan.yaml", PLAN)
    yield Cli(ws, store_url)


def test_killed_driver_shows_interrupted_and_the_resume_command(cli: Cli) -> None:
    proc = spawn("run", "plan.yaml", "--run-id", cli.rid, cwd=cli.ws, env=cli.env)
    try:
        wait_for_event(cli.url, cli.rid, ev.ATTEMPT_STARTED)
        # While the driver lives, the run is running.
        assert cli.runs()[cli.rid]["state"] == "running"
        assert status(cli.rid, cli.ws, env=cli.env)["resume"] is None
        kill9(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    row = cli.runs()[cli.rid]
    assert row["state"] == "interrupted" and row["resume"] == f"vigil resume {cli.rid}"
    view = status(cli.rid, cli.ws, env=cli.env)
    assert view["state"] == "interrupted" and view["resume"] == f"vigil resume {cli.rid}"
    text = vigil("status", cli.rid, cwd=cli.ws, env=cli.env)
    assert "interrupted" in text.stdout and f"vigil resume {cli.rid}" in text.stdout
    listing = vigil("runs", cwd=cli.ws, env=cli.env)
    assert "interrupted" in listing.stdout and f"vigil resume {cli.rid}" in listing.stdout
    # The dashboard reads the same rows and view.
    store = open_store(cli.url)
    try:
        app = create_app(load_config(cli.ws), token="t" * 32, open_reads=True, store=store)
        with TestClient(app, base_url="http://127.0.0.1") as web:
            api = {r["id"]: r for r in web.get("/api/runs").json()}
            assert api[cli.rid]["state"] == "interrupted"
            assert web.get(f"/api/runs/{cli.rid}").json()["resume"] == f"vigil resume {cli.rid}"
            page = web.get(f"/runs/{cli.rid}").text
            assert f"vigil resume {cli.rid}" in page
    finally:
        store.close()
    # And the command shown does continue it; a cancel (nobody driving) ends it.
    ended = vigil("cancel", cli.rid, cwd=cli.ws, env=cli.env, timeout=HANG)
    assert ended.returncode == 0, ended.stderr
    assert cli.runs()[cli.rid]["state"] == "cancelled"
