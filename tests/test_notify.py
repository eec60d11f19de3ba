"""Notifications: a real local HTTP server and real commands; nothing may block or fail a run."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clitools import alive, wait_for
from vigil.config import Config, load_config
from vigil.engine import hooks
from vigil.engine.runs import start_run
from vigil.errors import ConfigError
from vigil.followup import follow_up
from vigil.notify import Notifier, notification
from vigil.plan.models import Plan


class Hook:
    """A webhook receiver: records bodies; answers ``status``; may hold replies until released."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        self.hold = False
        self.release = threading.Event()
        self.arrived = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                hook.arrived.set()
                if hook.hold:
                    hook.release.wait(30)
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.stop()


def notifier(tmp_path: Path, **settings: Any) -> Notifier:
    return Notifier.from_config(Config(workspace=tmp_path, data={"notify": settings}))


def event(kind: str = "run_end", **extra: Any) -> dict[str, Any]:
    base = notification(kind, run="r1", plan="nightly", project="shop", state="failed")  # type: ignore[arg-type]
    return {**base, **extra}


def test_webhook_and_command_both_get_the_event(tmp_path: Path, hook: Hook) -> None:
    out = tmp_path / "events.jsonl"
    n = notifier(tmp_path, webhook=hook.url, command=f'cat >> "{out}"; echo >> "{out}"')
    assert n.send(event(message="run r1 failed"))
    n.close()
    assert hook.bodies == [event(message="run r1 failed")]
    lines = [json.loads(line) for line in out.read_text().splitlines() if line]
    assert lines == [event(message="run r1 failed")]
    assert n.counts.delivered == 1 and n.counts.failed == 0
    assert not n.send(event()), "a closed notifier takes nothing more"


def test_only_the_chosen_events_are_sent(tmp_path: Path, hook: Hook) -> None:
    n = notifier(tmp_path, webhook=hook.url, on=["escalation"])
    assert not n.send(event("run_end"))
    assert not n.send(event("failure"))
    assert n.send(event("escalation"))
    n.close()
    assert [b["event"] for b in hook.bodies] == ["escalation"]
    silent = notifier(tmp_path)
    assert not silent.enabled and not silent.send(event())
    silent.close()


def test_a_stuck_webhook_never_blocks_the_sender(tmp_path: Path, hook: Hook) -> None:
    hook.hold = True
    n = notifier(tmp_path, webhook=hook.url, queue=2)
    assert n.send(event(message="first"))
    assert hook.arrived.wait(120), "the first delivery never reached the webhook"
    # The worker is stuck inside the first delivery; two fit in the queue, the rest are
    # dropped at once instead of making the sender wait.
    results = [n.send(event(message=f"more {i}")) for i in range(5)]
    assert results == [True, True, False, False, False]
    assert n.counts.dropped == 3
    hook.release.set()
    n.close()
    assert [b["message"] for b in hook.bodies] == ["first", "more 0", "more 1"]
    assert n.counts.delivered == 3


@pytest.mark.slow
def test_a_failing_webhook_is_retried_then_given_up(tmp_path: Path, hook: Hook) -> None:
    hook.status = 503
    n = notifier(tmp_path, webhook=hook.url, retries=2)
    n.send(event())
    n.close()
    assert len(hook.bodies) == 3
    assert (n.counts.delivered, n.counts.failed) == (0, 1)
    hook.bodies.clear()
    hook.status = 400  # refused: trying again cannot help
    n = notifier(tmp_path, webhook=hook.url, retries=2)
    n.send(event())
    n.close()
    assert len(hook.bodies) == 1 and n.counts.failed == 1


def test_an_unreachable_webhook_fails_quietly(tmp_path: Path) -> None:
    n = notifier(tmp_path, webhook="http://127.0.0.1:9/nothing-listens", retries=1, timeout=2)
    assert n.send(event())
    n.close()
    assert n.counts.failed == 1


def test_a_hanging_command_is_killed_with_its_children(tmp_path: Path) -> None:
    # The timeout must strike after the command started its child. On a loaded machine a
    # shell may need longer than a short bound just to start, so the bound grows until the
    # child was seen: how fast the machine is changes how long the test takes, not its outcome.
    for timeout in (0.5, 2.0, 10.0, 60.0):
        pid_file = tmp_path / f"pid-{timeout}"
        command = f'sleep 600 & echo $! > "{pid_file}.new"; mv "{pid_file}.new" "{pid_file}"; wait'
        n = notifier(tmp_path, command=command, timeout=timeout)
        assert n.send(event())
        n.close()
        if pid_file.exists():
            break
    else:
        pytest.fail("the command never started its child, whatever the timeout")
    child = int(pid_file.read_text())
    wait_for(lambda: not alive(child))
    assert n.counts.failed == 1 and n.counts.delivered == 0
    failing = notifier(tmp_path, command="exit 4")
    failing.send(event())
    failing.close()
    assert failing.counts.failed == 1


def test_bad_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"notify\.webhook"):
        notifier(tmp_path, webhook="ftp://example.com/x")
    with pytest.raises(ConfigError, match=r"notify\.on"):
        notifier(tmp_path, command="true", on=["sometimes"])


def test_a_real_run_notifies_its_failure_and_its_end(
    tmp_path: Path, hook: Hook, sqlite_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_DATABASE_URL", sqlite_store_url)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "vigil.toml").write_text(
        f'[notify]\nwebhook = "{hook.url}"\nlink = "https://vigil.example/runs/{{run}}"\n'
    )
    hook.status = 500  # a broken receiver must not change the run's outcome
    config = load_config(workspace)
    plan = Plan.model_validate(
        {
            "name": "nightly",
            "project": "shop",
            "phases": [
                {
                    "id": "m",
                    "tasks": [
                        {"id": "bad", "run": "exit 3", "on_failure": "continue"},
                        {"id": "good", "run": "true"},
                    ],
                }
            ],
        }
    )
    from vigil.store import open_store

    # No observer is passed: the follow-up installed for the process (as the vigil
    # command installs it) notifies and writes the report, whoever drives the run.
    with hooks.installed(follow_up), open_store(sqlite_store_url) as store:
        outcome = start_run(config, store, plan, "plan.yaml", run_id="n1")
    assert outcome.state == "succeeded"
    seen = {(b["event"], b["task"], b["state"]) for b in hook.bodies}
    assert ("failure", "bad", "running") in seen
    assert ("run_end", None, "succeeded") in seen
    assert all(b["url"] == "https://vigil.example/runs/n1" for b in hook.bodies)
    assert all(b["run"] == "n1" and b["project"] == "shop" for b in hook.bodies)
    assert (workspace / ".vigil" / "reports" / "n1.md").read_text().startswith("# Run n1:")


def test_a_process_without_a_follow_up_drives_runs_without_one(
    tmp_path: Path, hook: Hook, sqlite_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_DATABASE_URL", sqlite_store_url)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "vigil.toml").write_text(f'[notify]\nwebhook = "{hook.url}"\n')
    plan = Plan.model_validate(
        {
            "name": "n",
            "project": "p",
            "phases": [{"id": "m", "tasks": [{"id": "t", "run": "false"}]}],
        }
    )
    from vigil.store import open_store

    with hooks.installed(None), open_store(sqlite_store_url) as store:
        outcome = start_run(load_config(workspace), store, plan, "plan.yaml", run_id="quiet")
    assert outcome.state == "failed"
    assert hook.bodies == []
    assert not (workspace / ".vigil" / "reports").exists()
