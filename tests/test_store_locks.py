"""Run locks: one driver per run, and a killed driver leaves nothing held."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enginetools import HANG
from vigil.errors import RunLocked
from vigil.store import Store, open_store
from vigil.store.locks import advisory_key, lock_file_name

HOLD_LOCK = """
import sys, time
from vigil.store import open_store
store = open_store(sys.argv[1])
lock = store.lock_run(sys.argv[2])
print("locked", flush=True)
time.sleep(600)
"""


def read_line(proc: subprocess.Popen[str], deadline_s: float = HANG) -> str:
    """The child's next stdout line; fails (not hangs) if the child dies or stalls."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(deadline_s):
            pytest.fail("child process printed nothing")
    line = proc.stdout.readline()
    if not line:
        stderr = proc.stderr.read() if proc.stderr else ""
        pytest.fail(f"child exited early:\n{stderr}")
    return line.strip()


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    children: list[subprocess.Popen[str]] = []
    yield children
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_second_lock_is_refused_until_released(store: Store) -> None:
    lock = store.lock_run("r1")
    with pytest.raises(RunLocked) as refused:
        store.lock_run("r1")
    assert f"pid {os.getpid()}" in refused.value.cause
    # Locks are per run.
    with store.lock_run("r2") as other:
        assert other.held
    assert not other.held
    lock.release()
    lock.release()  # a second release is harmless
    with store.lock_run("r1") as again:
        assert again.held


def test_lock_is_shared_by_all_stores_on_the_database(store_url: str, store: Store) -> None:
    with store.lock_run("r1"), open_store(store_url) as second, pytest.raises(RunLocked):
        second.lock_run("r1")
    with open_store(store_url) as third, third.lock_run("r1"):
        pass


@pytest.mark.slow
def test_kill_9_of_the_holder_frees_the_lock_at_once(
    store_url: str, store: Store, spawn: list[subprocess.Popen[str]]
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, store_url, "run-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spawn.append(child)
    assert read_line(child) == "locked"

    with pytest.raises(RunLocked) as refused:
        store.lock_run("run-1")
    assert f"pid {child.pid}" in refused.value.cause
    assert socket.gethostname()[:20] in refused.value.cause
    assert "since" in refused.value.cause

    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # No sleep, no lease to expire: resume right after a crash must work.
    with store.lock_run("run-1") as lock:
        assert lock.held


@pytest.mark.slow
def test_holder_that_exits_without_releasing_frees_the_lock(store_url: str, store: Store) -> None:
    script = HOLD_LOCK.replace("time.sleep(600)", "sys.exit(0)")
    done = subprocess.run(
        [sys.executable, "-c", script, store_url, "r9"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with store.lock_run("r9"):
        pass


@pytest.mark.parametrize("run_id", ["../../escape", "a/b", ".hidden", "x" * 300, "ü nicode"])
def test_hostile_run_ids_lock_inside_the_locks_directory(
    sqlite_store_url: str, run_id: str
) -> None:
    db_dir = Path(sqlite_store_url.removeprefix("sqlite:///")).parent
    workspace = db_dir.parent
    with open_store(sqlite_store_url) as store:
        before = {p for p in workspace.rglob("*") if p.is_file()}
        with store.lock_run(run_id), pytest.raises(RunLocked):
            store.lock_run(run_id)
        after = {p for p in workspace.rglob("*") if p.is_file()}
    [created] = after - before
    assert created.parent == db_dir / "locks"
    assert {p for p in workspace.parent.rglob("*") if p.is_file()} <= after


@given(st.text(), st.text())
def test_lock_file_names_are_plain_and_distinct(a: str, b: str) -> None:
    name = lock_file_name(a)
    assert "/" not in name and "\x00" not in name and not name.startswith(".")
    assert len(name) <= 140
    if a != b:
        assert lock_file_name(a) != lock_file_name(b)


def test_advisory_key_is_stable_across_versions() -> None:
    # Two vigil versions driving one database must agree on the key of a run.
    assert advisory_key("run-1") == advisory_key("run-1")
    assert advisory_key("run-1") == -8677926793806082300
    assert -(2**63) <= advisory_key("x" * 500) < 2**63
