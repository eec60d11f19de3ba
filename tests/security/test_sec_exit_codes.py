"""A sandboxed step's own exit status is what vigil reports, stopping it delivers SIGTERM to
the step first (its trap runs), and no loop that ends processes can spin forever."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sec_support import make_workspace, needs_overlay

from vigil.executors import process
from vigil.executors.process import LogSink, run_process, tagged_processes

pytestmark = needs_overlay


def _run(tmp_path: Path, script: str, *, stop: threading.Event | None = None, tag: str = "x"):
    ws = make_workspace(tmp_path)
    sandbox = ws.prepare(f"exit-{tag}")
    sink = LogSink(tmp_path / f"{tag}.log")
    try:
        spec = sandbox.command(["sh", "-c", script], env={})
        out = run_process(
            spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            sink=sink,
            timeout=None,
            stop=stop or threading.Event(),
            tag=f"sec-exit/{tag}",
            grace=30.0,
            supervisor=spec.supervisor,
            pass_fds=spec.pass_fds,
            started=spec.started,
        )
    finally:
        sink.close()
        sandbox.discard()
    return out, (tmp_path / f"{tag}.log").read_text()


@pytest.mark.parametrize(("script", "code"), [("exit 7", 7), ("true", 0), ("kill -9 $$", 137)])
def test_the_steps_own_status_is_reported(tmp_path: Path, script: str, code: int) -> None:
    out, _ = _run(tmp_path, script, tag=str(code))
    assert out.exit_code == code
    assert out.survivors == ()


def test_stopping_sends_sigterm_to_the_step_first(tmp_path: Path) -> None:
    stop = threading.Event()
    marker = tmp_path / "ready"
    script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"

    def stop_when_ready() -> None:
        # The step printed "ready" to its log: stop it, as Ctrl-C or a cancel would.
        while not stop.is_set():
            log = tmp_path / "term.log"
            if log.exists() and "ready" in log.read_text():
                stop.set()
            threading.Event().wait(0.02)

    waiter = threading.Thread(target=stop_when_ready)
    waiter.start()
    try:
        out, log = _run(tmp_path, script, stop=stop, tag="term")
    finally:
        stop.set()
        waiter.join()
    assert not marker.exists()
    assert out.stopped and out.exit_code is None
    assert "got-term" in log
    assert not tagged_processes("sec-exit/term")


def test_kill_loops_have_a_deadline_and_report_survivors() -> None:
    """A process that never dies (uninterruptible sleep) is reported, not waited on."""
    killed: list[list[int]] = []
    survivors = process._kill_until(lambda: [424242], killed.append, 0.05)
    assert survivors == [424242]
    assert killed and all(pids == [424242] for pids in killed)
