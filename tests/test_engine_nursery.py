"""The nursery with real threads: closing waits only up to its grace and names the jobs still
running, a closed nursery takes no new job, and a job abandoned or outlived is never
reported, however late it ends. (Faults through the driver: tests/test_engine_faults.py.)"""

from __future__ import annotations

import threading

import pytest

from enginetools import HANG
from vigil.engine.nursery import Nursery


class Reports:
    """What the nursery reported, in order, with a way to wait for one report."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, item: str) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, item: str) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: item in self.items, HANG), f"{item} never came"


def blocked(started: threading.Event, release: threading.Event, result: str) -> str:
    started.set()
    release.wait(HANG)
    return result


def join_workers(name: str) -> None:
    """Wait until the nursery's workers (threads named ``name-N``) have all ended."""
    for thread in threading.enumerate():
        if thread.name.startswith(f"{name}-"):
            thread.join(HANG)
            assert not thread.is_alive(), f"{thread.name} never ended"


def test_close_names_the_stuck_job_and_drops_its_late_result() -> None:
    reports = Reports()
    nursery: Nursery[str] = Nursery(reports, name="close-test")
    started, release = threading.Event(), threading.Event()
    nursery.start("stuck", lambda: blocked(started, release, "stuck: late"), lambda e: "error")
    nursery.start("quick", lambda: "quick: done", lambda e: "error")
    reports.wait_for("quick: done")
    assert started.wait(HANG)
    # A close that waited for the stuck job would return only once this releases it.
    unstick = threading.Timer(HANG, release.set)
    unstick.start()
    try:
        assert nursery.close(0.05) == ["stuck"]
        assert nursery.in_flight() == []
        with pytest.raises(RuntimeError, match="closed"):
            nursery.start("after", lambda: "after: ran", lambda e: "error")
    finally:
        unstick.cancel()
        release.set()
    join_workers("close-test")
    assert reports.items == ["quick: done"]


def test_an_abandoned_job_is_never_reported_and_the_others_are() -> None:
    reports = Reports()
    nursery: Nursery[str] = Nursery(reports, name="abandon-test")
    events = {key: (threading.Event(), threading.Event()) for key in ("a", "b")}
    for key, (started, release) in events.items():
        nursery.start(key, lambda s=started, r=release, k=key: blocked(s, r, k), lambda e: "error")
    for started, _ in events.values():
        assert started.wait(HANG)
    nursery.abandon("a")
    assert nursery.in_flight() == ["b"]
    for _, release in events.values():
        release.set()
    reports.wait_for("b")
    assert nursery.close(HANG) == []
    join_workers("abandon-test")
    assert reports.items == ["b"]
