"""The driver never hangs: a worker that fails anywhere becomes a recorded failure, and an
interrupt or a cancel ends the driver even while a worker is stuck.

Faults are injected through the hook the test passes to the driver (``FAULT_POINTS``),
never through the environment. Timeouts here only detect hangs; nothing is timed.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clitools import spawn, status, tagged, vigil, write_plan
from enginetools import HANG, Harness, one_phase, wait_for_event
from vigil.engine import events as ev
from vigil.engine.audit import Auditor
from vigil.engine.driver import FAULT_POINTS
from vigil.safety.audit import AuditFailed as AuditUnwritable
from vigil.store import open_store

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def hb(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("VIGIL_DATABASE_URL", store_url)
    harness = Harness(tmp_path / "workspace", store_url)
    yield harness
    harness.store.close()


def fail_at(point: str, times: int) -> tuple[Callable[[str], None], Counter[str]]:
    hits: Counter[str] = Counter()

    def hook(where: str) -> None:
        if where == point and hits[where] < times:
            hits[where] += 1
            raise ENOSPC

    return hook, hits


def writer_plan() -> Any:
    # A writer whose changes are committed, a reader that needs them, phase checks.
    return one_phase(
        {"id": "write", "run": "echo x > a", "retry": {"attempts": 3, "initial": 0}},
        {"id": "read", "run": "test -f a && echo y > b", "needs": ["write"]},
        validate=["test -f b"],
    )


def assert_settled(h: Harness, run_id: str) -> None:
    """Every attempt that started finished, and the run ended."""
    started: set[tuple[str, int]] = set()
    for e in h.journal(run_id):
        if e.kind == ev.ATTEMPT_STARTED:
            started.add((e.data["task"], e.data["attempt"]))
        elif e.kind == ev.ATTEMPT_FINISHED:
            started.discard((e.data["task"], e.data["attempt"]))
    assert not started, f"attempts left running: {started}"
    assert h.view(run_id)["state"] in ("succeeded", "failed")


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_a_worker_failing_once_is_recorded_and_retried(hb: Harness, point: str) -> None:
    hook, hits = fail_at(point, times=1)
    out = hb.run(writer_plan(), faults=hook, max_parallel=2)
    assert hits[point] == 1, "the fault point was never reached"
    assert_settled(hb, out.run_id)
    journal = hb.journal(out.run_id)
    if point == "checks.execute":
        # The phase's checks could not run: the phase fails, on the record, with the cause.
        assert out.state == "failed"
        phase = hb.view(out.run_id)["phases"][0]
        assert phase["state"] == "failed" and "No space left" in phase["reason"]
        return
    assert out.state == "succeeded", hb.view(out.run_id)
    if point.startswith("commit."):
        failed = [e for e in journal if e.kind == ev.CHANGESET_FAILED]
        assert len(failed) == 1
        assert failed[0].data["code"] == "VIGIL-COMMIT"
        assert failed[0].data["category"] == "internal"
        assert "No space left" in failed[0].data["reason"]
    else:
        failed = [
            e for e in journal if e.kind == ev.ATTEMPT_FINISHED and e.data["outcome"] == "failed"
        ]
        assert len(failed) == 1
        assert failed[0].data["code"] == "VIGIL-INTERNAL"
        assert failed[0].data["category"] == "internal"
        assert "No space left" in failed[0].data["reason"]
    # One commit per changeset, and one audit entry per commit.
    commits = Counter(
        (e.data["task"], e.data["attempt"]) for e in journal if e.kind == ev.CHANGESET_COMMITTED
    )
    assert commits and all(n == 1 for n in commits.values())
    assert (hb.workspace / "a").read_text() == "x\n" and (hb.workspace / "b").exists()


class Unprintable(Exception):
    """An error whose message cannot be built: turning it into a recorded failure raises
    too, so the worker's error handler fails on top of the job."""

    def __str__(self) -> str:
        raise ValueError("no message")


# One point per kind of worker: an attempt, a commit, a phase's checks.
@pytest.mark.parametrize("point", ["attempt.execute", "commit.apply", "checks.execute"])
def test_a_failure_whose_report_fails_too_is_still_recorded(hb: Harness, point: str) -> None:
    hits: Counter[str] = Counter()

    def hook(where: str) -> None:
        if where == point and not hits[where]:
            hits[where] += 1
            raise Unprintable()

    # If a report were lost the driver would wait for it forever: a run still going after
    # HANG is cancelled and the test fails.
    result: list[Any] = []
    rid = f"unprintable-{point}"
    runner = threading.Thread(
        target=lambda: result.append(
            hb.run(writer_plan(), run_id=rid, faults=hook, max_parallel=2)
        ),
        daemon=True,
    )
    runner.start()
    runner.join(HANG)
    if runner.is_alive():
        hb.store.append(rid, [(ev.CANCEL_REQUESTED, {"reason": "hung", "by": "t"})], at=0.0)
        runner.join(HANG)
        pytest.fail("a worker whose error report failed was never reported: the driver hung")
    out = result[0]
    assert hits[point] == 1, "the fault point was never reached"
    assert_settled(hb, out.run_id)
    # Both failures are on the record, the job's and its report's.
    both = "Unprintable(); then ValueError('no message')"
    journal = hb.journal(out.run_id)
    assert [e for e in journal if both in str(e.data)], [e.data for e in journal]
    if point == "checks.execute":
        assert out.state == "failed"
        assert both in hb.view(out.run_id)["phases"][0]["reason"]
    else:
        assert out.state == "succeeded", hb.view(out.run_id)  # retried after the failure
        assert (hb.workspace / "b").exists()


@pytest.mark.parametrize("point", [p for p in FAULT_POINTS if p != "checks.execute"])
def test_a_worker_that_always_fails_fails_its_task_and_only_its_dependents(
    hb: Harness, point: str
) -> None:
    hook, hits = fail_at(point, times=1_000)
    plan = one_phase(
        {"id": "write", "run": "echo x > a", "retry": {"attempts": 2, "initial": 0}},
        {"id": "read", "run": "true", "needs": ["write"]},
        {"id": "alone", "run": "true", "on_failure": "continue"},
    )
    out = hb.run(plan, faults=hook)
    assert hits[point] >= 1
    assert_settled(hb, out.run_id)
    assert out.state == "failed"
    assert hb.task(out.run_id, "write")["state"] == "failed"
    assert hb.task(out.run_id, "read")["state"] == "skipped"
    # A task without changes has nothing to commit; at the other points it fails too.
    alone = "succeeded" if point.startswith("commit.") else "failed"
    assert hb.task(out.run_id, "alone")["state"] == alone


class Gate:
    """A fault hook that blocks a worker at ``point`` until released (a stuck worker)."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.reached = threading.Event()
        self.release = threading.Event()

    def __call__(self, where: str) -> None:
        if where == self.point:
            self.reached.set()
            self.release.wait(HANG)


def test_interrupt_ends_the_driver_while_a_worker_is_stuck(hb: Harness) -> None:
    gate = Gate("attempt.execute")
    plan = one_phase({"id": "stuck", "run": "true"})

    def interrupt_when_stuck() -> None:
        if gate.reached.wait(HANG):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the driver's own handler runs

    helper = threading.Thread(target=interrupt_when_stuck)
    helper.start()
    try:
        out = hb.run(plan, run_id="stuck-int", faults=gate, stop_grace=0.2)
    finally:
        gate.release.set()
        helper.join(HANG)
    assert out.state == "interrupted"
    stopped = [e for e in hb.journal("stuck-int") if e.kind == ev.DRIVER_STOPPED]
    assert "did not stop" in stopped[-1].data["reason"]
    # Resume picks it up: the stuck attempt is recorded as interrupted and run again.
    again = hb.run(plan, run_id="stuck-int")
    assert again.state == "succeeded"
    attempts = hb.task("stuck-int", "stuck")["attempts"]
    assert [a["state"] for a in attempts] == ["interrupted", "succeeded"]


def test_cancel_ends_the_driver_while_a_worker_is_stuck(hb: Harness) -> None:
    gate = Gate("attempt.execute")
    plan = one_phase({"id": "stuck", "run": "true"}, {"id": "later", "run": "true"})

    def cancel_when_stuck() -> None:
        if gate.reached.wait(HANG):
            store = open_store(hb.url)
            try:
                store.append(
                    "stuck-cancel", [(ev.CANCEL_REQUESTED, {"reason": "test"})], at=time.time()
                )
            finally:
                store.close()

    helper = threading.Thread(target=cancel_when_stuck)
    helper.start()
    try:
        out = hb.run(plan, run_id="stuck-cancel", faults=gate, stop_grace=0.2, max_parallel=1)
    finally:
        gate.release.set()
        helper.join(HANG)
    assert out.state == "cancelled"
    attempt = hb.task("stuck-cancel", "stuck")["attempts"][0]
    assert attempt["state"] == "cancelled" and "did not stop" in attempt["reason"]
    assert hb.task("stuck-cancel", "later")["state"] == "cancelled"


def test_auditor_that_cannot_write_raises_a_typed_error(tmp_path: Path) -> None:
    from vigil.config import load_config

    config = load_config(tmp_path)
    auditor = Auditor(config)
    auditor.path.parent.mkdir(parents=True, exist_ok=True)
    auditor.path.mkdir()  # the log's path is a directory: every append fails with OSError
    with pytest.raises(AuditUnwritable) as caught:
        auditor.record(action="changeset.commit", decision="allow")
    assert caught.value.category == "transient"


# ---------------------------------------------------------------- the real command


def _cli_env(store_url: str, ws: Path) -> dict[str, str]:
    if store_url.startswith("sqlite"):
        return {}
    return {"VIGIL_DATABASE_URL": store_url}


def _url(store_url: str, ws: Path) -> str:
    return (
        f"sqlite:///{ws / '.vigil' / 'vigil.db'}" if store_url.startswith("sqlite") else store_url
    )


SLOW_PLAN = {
    "name": "slow",
    "project": "slow",
    "phases": [{"id": "p", "tasks": [{"id": "sleeper", "run": "sleep 300"}]}],
}


@pytest.mark.slow
def test_ctrl_c_with_work_in_flight_stops_the_command(tmp_path: Path, store_url: str) -> None:
    rid = f"ctrlc-{store_url.split(':')[0].split('+')[0]}"
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(ws / "plan.yaml", SLOW_PLAN)
    env = _cli_env(store_url, ws)
    proc = spawn("run", "plan.yaml", "--run-id", rid, cwd=ws, env=env)
    try:
        wait_for_event(_url(store_url, ws), rid, ev.ATTEMPT_STARTED)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not tagged(f"{rid}/", ws), "a step outlived the interrupted command"
    view = status(rid, ws, env=env)
    assert view["state"] == "interrupted"
    assert view["resume"] == f"vigil resume {rid}"


@pytest.mark.slow
def test_vigil_cancel_with_work_in_flight(tmp_path: Path, store_url: str) -> None:
    rid = f"cancelme-{store_url.split(':')[0].split('+')[0]}"
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(ws / "plan.yaml", SLOW_PLAN)
    env = _cli_env(store_url, ws)
    proc = spawn("run", "plan.yaml", "--run-id", rid, cwd=ws, env=env)
    try:
        wait_for_event(_url(store_url, ws), rid, ev.ATTEMPT_STARTED)
        cancelled = vigil("cancel", rid, cwd=ws, env=env, timeout=HANG)
        assert cancelled.returncode == 0, cancelled.stderr
        proc.wait(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not tagged(f"{rid}/", ws)
    view = status(rid, ws, env=env)
    assert view["state"] == "cancelled"
    assert view["tasks"][0]["attempts"][0]["state"] == "cancelled"


class _RacingStore:
    """A store through which another process's cancel lands between the driver's last
    poll and its next append: the moment a journal cursor can skip an external event."""

    def __init__(self, store: Any, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self.raced = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def append(self, run_id: str, events: list[tuple[str, dict[str, Any]]], **kw: Any) -> int:
        starts = any(kind == ev.ATTEMPT_STARTED for kind, _ in events)
        if starts and not self.raced.is_set():
            self.raced.set()
            self._store.append(
                run_id, [(ev.CANCEL_REQUESTED, {"reason": "raced", "by": "other"})], at=time.time()
            )
        return int(self._store.append(run_id, events, **kw))


def test_an_event_appended_between_poll_and_append_is_not_skipped(hb: Harness) -> None:
    # The task can only end by the cancel: if the driver skipped it, the run would hang.
    plan = one_phase({"id": "wait", "run": "while [ ! -e never ]; do sleep 0.05; done"})
    racing = _RacingStore(hb.store, "race")
    result: list[str] = []
    from vigil.engine.runs import start_run

    runner = threading.Thread(
        target=lambda: result.append(
            start_run(hb.config, racing, plan, "plan.yaml", run_id="race").state
        ),
        daemon=True,
    )
    runner.start()
    runner.join(HANG)
    if runner.is_alive():  # end the hung run before failing, so nothing outlives the test
        hb.store.append("race", [(ev.CANCEL_REQUESTED, {"reason": "end", "by": "t"})], at=0.0)
        runner.join(HANG)
        pytest.fail("the driver skipped a cancel appended between its poll and its append")
    assert racing.raced.is_set()
    assert result == ["cancelled"]
