"""Kill -9 at points defined by the journal, resume, and check the durability invariants
every time, on both stores."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from clitools import kill9, spawn, status, store_url_of, tagged, vigil, write_plan
from enginetools import HANG
from vigil.engine import events as ev
from vigil.store import open_store

pytestmark = pytest.mark.slow

ROUNDS = 12
LAYERS = 5
WIDTH = 7


def chaos_plan(seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    tasks: list[dict[str, object]] = []
    previous: list[str] = []
    for layer in range(LAYERS):
        current = []
        for i in range(WIDTH):
            tid = f"l{layer}t{i}"
            pause = rng.choice(["0.02", "0.05", "0.1", "0.2"])
            # Each task writes only its own files: parallel attempts change disjoint paths.
            script = (
                "mkdir -p marks\n"
                'echo "$VIGIL_ATTEMPT" > "marks/$VIGIL_TASK_ID.start"\n'
                f"sleep {pause}\n"
                'echo "$VIGIL_ATTEMPT" > "marks/$VIGIL_TASK_ID.end"\n'
            )
            task: dict[str, object] = {"id": tid, "run": script}
            if previous:
                task["needs"] = rng.sample(previous, k=2)
            tasks.append(task)
            current.append(tid)
        previous = current
    return {
        "name": "chaos",
        "project": "chaos",
        "phases": [
            {"id": "work", "tasks": tasks, "validate": ["test -d marks"]},
            {"id": "wrap", "tasks": [{"id": "final", "run": "echo final > final.txt"}]},
        ],
    }


def journal_snapshot(url: str, run_id: str) -> tuple[set[str], set[tuple[str, int]], bool]:
    """Tasks recorded as succeeded, attempts started but not finished, whether the run exists."""
    if url.startswith("sqlite") and not Path(url.removeprefix("sqlite:///")).exists():
        return set(), set(), False
    store = open_store(url)
    try:
        succeeded: set[str] = set()
        running: set[tuple[str, int]] = set()
        for e in store.events(run_id):
            if e.kind == ev.TASK_FINISHED and e.data["state"] == "succeeded":
                succeeded.add(e.data["task"])
            elif e.kind == ev.ATTEMPT_STARTED:
                running.add((e.data["task"], e.data["attempt"]))
            elif e.kind == ev.ATTEMPT_FINISHED:
                running.discard((e.data["task"], e.data["attempt"]))
        return succeeded, running, store.get_run(run_id) is not None
    finally:
        store.close()


KILL_KINDS = (ev.ATTEMPT_STARTED, ev.ATTEMPT_FINISHED, ev.CHANGESET_COMMITTING, ev.TASK_FINISHED)


def kill_at(proc: subprocess.Popen[str], url: str, run_id: str, kind: str, count: int) -> bool:
    """kill -9 the driver once its journal holds ``count`` events of ``kind`` (a point
    defined by the journal, whatever the machine's speed); False if it ended first."""
    deadline = time.monotonic() + HANG
    while proc.poll() is None and time.monotonic() < deadline:
        if url.startswith("sqlite") and not Path(url.removeprefix("sqlite:///")).exists():
            time.sleep(0.01)
            continue
        store = open_store(url)
        try:
            seen = sum(1 for e in store.events(run_id) if e.kind == kind)
        finally:
            store.close()
        if seen >= count:
            kill9(proc)
            return True
        time.sleep(0.01)
    if proc.poll() is None:
        kill9(proc)
        raise AssertionError(f"hung: {run_id} neither ended nor reached {count} x {kind}")
    return False


def test_kill9_at_journal_points_then_resume(tmp_path: Path, backend: str) -> None:
    rng = random.Random(20261121)
    for round_no in range(ROUNDS):
        ws = tmp_path / f"round{round_no}"
        ws.mkdir()
        write_plan(ws / "chaos.yaml", chaos_plan(round_no))
        run_id = f"chaos-{backend}-{round_no}"
        url = store_url_of(ws)
        kind = rng.choice(KILL_KINDS)
        count = rng.randint(1, LAYERS * WIDTH - 1)
        proc = spawn("run", "chaos.yaml", "--run-id", run_id, "--max-parallel", "4", cwd=ws)
        kill_at(proc, url, run_id, kind, count)
        done_before, running_at_kill, exists = journal_snapshot(url, run_id)
        if exists:
            resumed = vigil("resume", run_id, cwd=ws, timeout=HANG)
        else:  # killed before the run was created: the same command again starts it
            resumed = vigil("run", "chaos.yaml", "--run-id", run_id, cwd=ws, timeout=HANG)
        assert resumed.returncode == 0, (round_no, resumed.stdout, resumed.stderr)
        view = status(run_id, ws)
        assert view["state"] == "succeeded", round_no
        assert not tagged(f"{run_id}/", ws), "a process outlived its run"
        check_one_commit_per_changeset(url, run_id)
        for task in view["tasks"]:
            attempts = task["attempts"]
            assert task["state"] == "succeeded"
            assert sum(a["state"] == "succeeded" for a in attempts) == 1
            winner = next(a["number"] for a in attempts if a["state"] == "succeeded")
            # Nothing completed ran again: the success is the last attempt.
            assert attempts[-1]["number"] == winner
            if task["id"] in done_before:
                assert len(attempts) == winner
            if task["id"] != "final":
                # Only the winning attempt's files landed, and both of them (atomic).
                marks = ws / "marks"
                assert (marks / f"{task['id']}.start").read_text().strip() == str(winner)
                assert (marks / f"{task['id']}.end").read_text().strip() == str(winner)
        # Every attempt that was running at the kill is recorded as interrupted.
        for task_id, number in running_at_kill:
            task = next(t for t in view["tasks"] if t["id"] == task_id)
            attempt = next(a for a in task["attempts"] if a["number"] == number)
            assert attempt["state"] == "interrupted", (round_no, task_id, number)


def check_one_commit_per_changeset(url: str, run_id: str) -> None:
    store = open_store(url)
    try:
        journal = store.events(run_id)
    finally:
        store.close()
    for kind in (ev.CHANGESET_COMMITTING, ev.CHANGESET_COMMITTED):
        keys = [(e.data["task"], e.data["attempt"]) for e in journal if e.kind == kind]
        assert len(keys) == len(set(keys)), f"{kind} twice for one changeset"


def test_kill9_while_writing_and_committing_100_files(tmp_path: Path, backend: str) -> None:
    """The workspace holds all of an attempt's files or none, whenever vigil dies."""
    from vigil.workspace import Workspace

    script = (
        "mkdir -p out\n"
        'for i in $(seq 1 100); do echo "$VIGIL_ATTEMPT" > "out/f$i"; sleep 0.004; done\n'
    )
    plan = {
        "name": "hundred",
        "project": "hundred",
        "phases": [{"id": "p", "tasks": [{"id": "write", "run": script}]}],
    }
    # Kill while the step writes, as its commit starts, and as it ends.
    points = [(ev.ATTEMPT_STARTED, 1), (ev.CHANGESET_COMMITTING, 1), (ev.ATTEMPT_FINISHED, 1)]
    for round_no, (kind, count) in enumerate(points * 3):
        ws = tmp_path / f"h{round_no}"
        ws.mkdir()
        write_plan(ws / "plan.yaml", plan)
        run_id = f"hundred-{backend}-{round_no}"
        url = store_url_of(ws)
        proc = spawn("run", "plan.yaml", "--run-id", run_id, cwd=ws)
        kill_at(proc, url, run_id, kind, count)
        # What resume does first: finish or undo a commit cut short. Then: all or none.
        Workspace(ws, ws / ".vigil").recover()
        out = ws / "out"
        files = sorted(out.iterdir()) if out.exists() else []
        assert len(files) in (0, 100), (round_no, len(files))
        if files:
            assert len({f.read_text() for f in files}) == 1, "files from two attempts mixed"
        _, _, exists = journal_snapshot(url, run_id)
        if exists:
            finished = vigil("resume", run_id, cwd=ws, timeout=HANG)
        else:
            finished = vigil("run", "plan.yaml", "--run-id", run_id, cwd=ws, timeout=HANG)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        files = sorted((ws / "out").iterdir())
        assert len(files) == 100
        assert len({f.read_text() for f in files}) == 1
        check_one_commit_per_changeset(url, run_id)
