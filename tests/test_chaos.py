"""Kill -9 at random moments, resume, and check the durability invariants every time."""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from pathlib import Path

from clitools import kill9, spawn, status, tagged, vigil, write_plan
from vigil.engine import events as ev
from vigil.store import open_store

ROUNDS = 20
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
            script = (
                f'echo "$VIGIL_TASK_ID $VIGIL_ATTEMPT start" >> marks.log\n'
                f"sleep {pause}\n"
                f'echo "$VIGIL_TASK_ID $VIGIL_ATTEMPT end" >> marks.log\n'
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
            {"id": "work", "tasks": tasks, "validate": ["test -s marks.log"]},
            {"id": "wrap", "tasks": [{"id": "final", "run": "echo final >> marks.log"}]},
        ],
    }


def journal_snapshot(url: str, run_id: str) -> tuple[set[str], set[tuple[str, int]], bool]:
    """Tasks recorded as succeeded, attempts started but not finished, whether the run exists."""
    if not Path(url.removeprefix("sqlite:///")).exists():
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


def test_kill9_at_random_moments_then_resume(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    interrupted_total = 0
    for round_no in range(ROUNDS):
        ws = tmp_path / f"round{round_no}"
        ws.mkdir()
        write_plan(ws / "chaos.yaml", chaos_plan(round_no))
        run_id = f"chaos-{round_no}"
        proc = spawn("run", "chaos.yaml", "--run-id", run_id, "--max-parallel", "4", cwd=ws)
        delay = rng.uniform(0.5, 3.5)
        with contextlib.suppress(Exception):
            proc.wait(timeout=delay)
        if proc.returncode is None:
            kill9(proc)
        url = f"sqlite:///{ws / '.vigil' / 'vigil.db'}"
        done_before, running_at_kill, exists = journal_snapshot(url, run_id)
        if exists:
            resumed = vigil("resume", run_id, cwd=ws, timeout=120)
        else:  # killed before the run was created: the same command again starts it
            resumed = vigil("run", "chaos.yaml", "--run-id", run_id, cwd=ws, timeout=120)
        assert resumed.returncode == 0, (round_no, resumed.stdout, resumed.stderr)
        view = status(run_id, ws)
        assert view["state"] == "succeeded", round_no
        assert not tagged(f"{run_id}/"), "a process outlived its run"
        starts: dict[str, list[int]] = defaultdict(list)
        for line in (ws / "marks.log").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == "start":
                starts[parts[0]].append(int(parts[1]))
        for task in view["tasks"]:
            attempts = task["attempts"]
            assert task["state"] == "succeeded"
            assert sum(a["state"] == "succeeded" for a in attempts) == 1
            winner = next(a["number"] for a in attempts if a["state"] == "succeeded")
            if task["id"] in starts:
                # Nothing completed ran again: no attempt started after the recorded success.
                assert max(starts[task["id"]]) == winner, (round_no, task["id"], starts[task["id"]])
                assert len(set(starts[task["id"]])) == len(starts[task["id"]])
            if task["id"] in done_before:
                assert len(attempts) == winner
        # Every attempt that was running at the kill is recorded as interrupted.
        for task_id, number in running_at_kill:
            task = next(t for t in view["tasks"] if t["id"] == task_id)
            attempt = next(a for a in task["attempts"] if a["number"] == number)
            assert attempt["state"] == "interrupted", (round_no, task_id, number)
            interrupted_total += 1
    assert interrupted_total > 0, "no kill ever landed mid-attempt; the test proved nothing"
