"""The journal under concurrent writers and under kill -9, with real processes."""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from enginetools import HANG
from vigil.store import NewRun, Store, StoredEvent, open_store

pytestmark = pytest.mark.slow

# Appends batches of 1..max_batch events; prints the returned seq after each append.
APPEND = """
import random, sys, time
from vigil.store import open_store
url, run_id, worker, batches, max_batch, seed = sys.argv[1:7]
rng = random.Random(int(seed))
store = open_store(url)
b = 0
while int(batches) < 0 or b < int(batches):
    n = rng.randint(1, int(max_batch))
    events = [("tick", {"w": int(worker), "b": b, "i": i, "n": n, "pad": "x" * rng.randint(0, 400)})
              for i in range(n)]
    last = store.append(run_id, events, at=time.time())
    print(last, flush=True)
    b += 1
store.close()
"""


def spawn_appender(
    url: str, run_id: str, worker: int, batches: int, max_batch: int, seed: int
) -> subprocess.Popen[str]:
    args = [url, run_id, str(worker), str(batches), str(max_batch), str(seed)]
    return subprocess.Popen(
        [sys.executable, "-c", APPEND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def new_run(run_id: str) -> NewRun:
    return NewRun(run_id, "p", "proj", "h", "{}", "plan.yaml", "/ws", time.time(), {})


def check_journal(store: Store, run_id: str) -> list[StoredEvent]:
    """The invariants: gap-free seqs, last_seq agrees, every batch whole and contiguous."""
    events = store.events(run_id)
    record = store.get_run(run_id)
    assert record is not None
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert record.last_seq == len(events)
    batches: dict[tuple[int, int], list[StoredEvent]] = defaultdict(list)
    for event in events:
        batches[(event.data["w"], event.data["b"])].append(event)
    for (worker, b), batch in batches.items():
        size = batch[0].data["n"]
        assert [e.data["i"] for e in batch] == list(range(size)), (worker, b)
        assert [e.seq for e in batch] == list(range(batch[0].seq, batch[0].seq + size))
    return events


def test_concurrent_appenders_get_gap_free_consecutive_seqs(store_url: str, store: Store) -> None:
    store.create_run(new_run("shared"))
    workers = [spawn_appender(store_url, "shared", w, 40, 4, seed=w) for w in range(4)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr

    events = check_journal(store, "shared")
    assert {e.data["w"] for e in events} == {0, 1, 2, 3}
    for w, (stdout, _) in enumerate(outputs):
        acknowledged = [int(line) for line in stdout.split()]
        assert len(acknowledged) == 40
        # Each worker's own appends are ordered, and its batches sit where it was told.
        assert acknowledged == sorted(acknowledged)
        mine = {e.seq: e for e in events if e.data["w"] == w}
        for b, last in enumerate(acknowledged):
            assert mine[last].data["b"] == b
            assert mine[last].data["i"] == mine[last].data["n"] - 1
        assert len({e.data["b"] for e in mine.values()}) == 40


def read_acknowledgements(proc: subprocess.Popen[str], count: int) -> list[int]:
    """Wait until the child has acknowledged ``count`` appends; fails if it dies or stalls."""
    assert proc.stdout is not None
    seen: list[int] = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(seen) < count:
            if not selector.select(HANG):
                pytest.fail("appender stalled")
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"appender died: {proc.stderr.read() if proc.stderr else ''}")
            seen.append(int(line))
    return seen


@pytest.mark.parametrize("round_", range(4))
def test_kill_9_mid_stream_leaves_no_partial_batch_and_loses_nothing_acknowledged(
    store_url: str, store: Store, round_: int
) -> None:
    rng = random.Random(round_)
    run_id = f"victim-{round_}"
    store.create_run(new_run(run_id))
    child = spawn_appender(store_url, run_id, 0, -1, 30, seed=round_)
    try:
        acknowledged = read_acknowledgements(child, rng.randint(1, 40))
        # Land the kill at a varying point inside the next appends.
        time.sleep(rng.random() * 0.02)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate()
    assert child.returncode == -signal.SIGKILL
    # Appends acknowledged after we stopped reading count too (whole lines only).
    acknowledged += [int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n")]

    with open_store(store_url) as after:  # a fresh open recovers whatever the crash left
        events = check_journal(after, run_id)
    assert max(acknowledged) <= len(events)
    check_journal(store, run_id)
    # The run stays usable: the next append continues the sequence.
    assert store.append(run_id, [("resumed", {"w": 9, "b": 0, "i": 0, "n": 1})], at=1.0) == (
        len(events) + 1
    )
    json.dumps([e.data for e in store.events(run_id)])  # still plain JSON
