"""Commit is all-or-nothing even under kill -9; conflicts and drift are refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from enginetools import HANG
from test_workspace_support import EDIT_SCRIPT, attempt, make_project, overlay_available
from vigil.workspace import ChangeEntry, Changeset, Conflict, Drift, FileState, Workspace
from vigil.workspace.state import file_sha256, tree_hash

MODE = "overlay" if overlay_available() else "snapshot"


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = make_project(tmp_path / "project")
    return Workspace(root, root / ".vigil", mode=MODE)


def test_parallel_commits_to_one_path_conflict(ws: Workspace) -> None:
    first = attempt(ws, "a", ["echo from-a > README.md && echo a > only-a"])
    second = attempt(ws, "b", ["echo from-b > README.md && echo b > only-b"])
    errors: list[BaseException] = []

    def commit(cs: Changeset) -> None:
        try:
            ws.commit(cs)
        except Conflict as exc:
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(cs,)) for cs in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1
    assert errors[0].code == "VIGIL-CONFLICT"
    assert "README.md" in errors[0].details
    winner = "a" if (ws.root / "only-a").exists() else "b"
    loser = "b" if winner == "a" else "a"
    assert (ws.root / "README.md").read_text() == f"from-{winner}\n"
    # The losing changeset applied nothing at all, not even its non-conflicting file.
    assert not (ws.root / f"only-{loser}").exists()


def test_conflict_when_user_edits_meanwhile(ws: Workspace) -> None:
    cs = attempt(ws, "k", [EDIT_SCRIPT])
    (ws.root / "src" / "lib" / "util.py").write_text("X = 2  # edited by a person\n")
    (ws.root / "old" / "sub" / "new-by-person.txt").write_text("keep me\n")
    before = tree_hash(ws.root)
    with pytest.raises(Conflict) as err:
        ws.commit(cs)
    assert "src/lib/util.py" in err.value.details
    assert "old/sub/new-by-person.txt" in err.value.details
    assert tree_hash(ws.root) == before


def test_rollback_restores_exactly_and_refuses_drift(ws: Workspace) -> None:
    before = tree_hash(ws.root)
    first = attempt(ws, "1", [EDIT_SCRIPT])
    ws.commit(first)
    second = attempt(ws, "2", ["echo again >> README.md && rm added.txt && chmod 600 blob.bin"])
    ws.commit(second)
    after = tree_hash(ws.root)
    (ws.root / "README.md").write_text("a person changed this\n")
    (ws.root / "src" / "lib" / "fresh.py").write_text("and this\n")
    drifted = tree_hash(ws.root)
    with pytest.raises(Drift) as err:
        ws.rollback([first, second])
    assert err.value.code == "VIGIL-DRIFT"
    assert set(err.value.details) == {"README.md", "src/lib/fresh.py"}
    assert tree_hash(ws.root) == drifted
    # Rolling back only the undrifted paths works without force.
    partial = ws.rollback([first, second], paths=["blob.bin"])
    assert partial.restored == ["blob.bin"] and not (ws.root / "blob.bin").exists()
    result = ws.rollback([first, second], force=True)
    assert set(result.overwritten) == {"README.md", "src/lib/fresh.py"}
    assert tree_hash(ws.root) == before
    assert after != before


def test_rollback_of_one_file(ws: Workspace) -> None:
    cs = attempt(ws, "1", ["echo x >> README.md && echo y >> src/app.py"])
    ws.commit(cs)
    result = ws.rollback([cs], paths=["README.md"])
    assert result.restored == ["README.md"]
    assert (ws.root / "README.md").read_text() == "hello\n"
    assert (ws.root / "src" / "app.py").read_text() == "print('app')\ny\n"


def _big_changeset(ws: Workspace) -> Changeset:
    script = (
        "for i in $(seq 1 120); do mkdir -p gen/d$((i % 7)); echo file $i > gen/d$((i % 7))/f$i;"
        " done; for i in $(seq 1 40); do echo mod $i >> README.md; done;"
        " rm -r old src/lib; chmod 700 script.sh; ln -sfn gen link;"
        " for i in $(seq 1 30); do echo m$i > src/m$i.txt; done"
    )
    cs = attempt(ws, "big", [script])
    assert len(cs.entries) >= 150
    return cs


# The child installs the fault hook itself: production code reads no fault settings.
CHILD = """
import json, os, signal, sys
from pathlib import Path
from vigil.workspace import Changeset, Workspace
from vigil.workspace.apply import FAULTS
root = Path(sys.argv[1])
cs = Changeset.from_dict(json.loads(Path(sys.argv[2]).read_text()))
budget = [int(sys.argv[3])] if len(sys.argv) > 3 else None

def kill_after_budget():
    budget[0] -= 1
    if budget[0] < 0:
        os.kill(os.getpid(), signal.SIGKILL)

if budget is not None:
    FAULTS.before_op = kill_after_budget
Workspace(root, root / ".vigil", mode="snapshot").commit(cs)
"""


def _commit_in_child(
    ws: Workspace, manifest: Path, kill_after_ops: int | None = None
) -> subprocess.Popen[bytes]:
    extra = [] if kill_after_ops is None else [str(kill_after_ops)]
    return subprocess.Popen([sys.executable, "-c", CHILD, str(ws.root), str(manifest), *extra])


@pytest.mark.slow
def test_kill_during_commit_then_recover_is_all_or_nothing(ws: Workspace, tmp_path: Path) -> None:
    cs = _big_changeset(ws)
    manifest = tmp_path / "cs.json"
    manifest.write_text(json.dumps(cs.to_dict()))
    empty = tree_hash(ws.root)
    ws.commit(cs)
    full = tree_hash(ws.root)
    ws.rollback([cs])
    assert tree_hash(ws.root) == empty
    rng = random.Random(1234)
    outcomes = {"none": 0, "all": 0}
    for budget in [0, 1, 2, 50, 149, *rng.sample(range(3, 260), 12)]:
        child = _commit_in_child(ws, manifest, budget)
        child.wait(timeout=HANG)
        done = Workspace(ws.root, ws.root / ".vigil", mode="snapshot").recover()
        now = tree_hash(ws.root)
        assert now in (empty, full), f"half-applied after kill at op {budget}"
        outcomes["all" if now == full else "none"] += 1
        if child.returncode == -signal.SIGKILL:
            assert done, "a killed commit left no intent to recover"
        if now == full:
            ws.rollback([cs])
        assert tree_hash(ws.root) == empty
    assert outcomes["all"] >= 10


@pytest.mark.slow
def test_random_time_kills_during_commit(ws: Workspace, tmp_path: Path) -> None:
    cs = _big_changeset(ws)
    manifest = tmp_path / "cs.json"
    manifest.write_text(json.dumps(cs.to_dict()))
    empty = tree_hash(ws.root)
    ws.commit(cs)
    full = tree_hash(ws.root)
    ws.rollback([cs])
    rng = random.Random(99)
    for _ in range(12):
        child = _commit_in_child(ws, manifest)
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=HANG)
        Workspace(ws.root, ws.root / ".vigil", mode="snapshot").recover()
        now = tree_hash(ws.root)
        assert now in (empty, full)
        if now == full:
            ws.rollback([cs])
        assert tree_hash(ws.root) == empty


def test_commit_uses_only_stored_objects(ws: Workspace, tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"stored content\n")
    sha = ws.objects.put_file(blob)
    blob.unlink()
    state = FileState("file", 0o640, sha, 15)
    folder = FileState("dir", 0o755)
    entries = [ChangeEntry(p, None, folder) for p in ("deep", "deep/new")]
    ws.commit(Changeset((*entries, ChangeEntry("deep/new/file.txt", None, state))))
    target = ws.root / "deep" / "new" / "file.txt"
    assert file_sha256(target) == sha and target.stat().st_mode & 0o777 == 0o640


@pytest.mark.slow
def test_kill_at_every_step_of_a_new_tree_commit_is_all_or_nothing(
    ws: Workspace, tmp_path: Path
) -> None:
    # A new tree (as a fresh virtualenv lands) is written straight under its final names:
    # a kill at any step recovers to the whole tree, and so does a file torn mid-write.
    folder = FileState("dir", 0o755)
    entries = [ChangeEntry(p, None, folder) for p in ("venv", "venv/a", "venv/a/b", "venv/c")]
    for i, parent in enumerate(("venv/a", "venv/a/b", "venv/c") * 4):
        data = f"module {i}\n".encode() * (1 + 3000 * (i % 3))
        sha = ws.objects.put_bytes(data)
        entries.append(
            ChangeEntry(f"{parent}/m{i}.py", None, FileState("file", 0o640, sha, len(data)))
        )
    entries.append(ChangeEntry("venv/c/link", None, FileState("symlink", target="../a")))
    cs = Changeset(tuple(entries))
    manifest = tmp_path / "cs.json"
    manifest.write_text(json.dumps(cs.to_dict()))
    empty = tree_hash(ws.root)
    ws.commit(cs)
    full = tree_hash(ws.root)
    ws.rollback([cs])
    for budget in range(len(entries) + 2):
        child = _commit_in_child(ws, manifest, budget)
        child.wait(timeout=60)
        Workspace(ws.root, ws.root / ".vigil", mode="snapshot").recover()
        assert tree_hash(ws.root) == full, f"not whole after a kill at op {budget}"
        ws.rollback([cs])
        assert tree_hash(ws.root) == empty
    child = _commit_in_child(ws, manifest, 8)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    torn = ws.root / "venv" / "a" / "b" / "m1.py"
    torn.write_bytes(torn.read_bytes()[:1000])  # what a crash in the middle of it leaves
    Workspace(ws.root, ws.root / ".vigil", mode="snapshot").recover()
    assert tree_hash(ws.root) == full


def test_committed_files_keep_the_step_s_times_and_a_rollback_gives_back_the_old_ones(
    ws: Workspace,
) -> None:
    # Tools compare times (Python checks a .pyc against its source's): a file lands with
    # the time the step left on it, not the time of the commit.
    readme = ws.root / "README.md"
    os.utime(readme, ns=(1_400_000_000_123_456_789, 1_400_000_000_123_456_789))
    changes = attempt(
        ws,
        "t",
        [
            "echo changed >> README.md && touch -d @1600000000 README.md"
            " && echo new > added.txt && touch -d @1500000000 added.txt"
        ],
    )
    ws.commit(changes)
    assert readme.read_text() == "hello\nchanged\n"
    assert readme.stat().st_mtime_ns == 1_600_000_000 * 10**9
    assert (ws.root / "added.txt").stat().st_mtime_ns == 1_500_000_000 * 10**9
    # Read back from its JSON, the changeset carries the same times.
    assert Changeset.from_dict(json.loads(json.dumps(changes.to_dict()))).id == changes.id
    ws.rollback([changes])
    assert readme.read_text() == "hello\n"
    assert readme.stat().st_mtime_ns == 1_400_000_000_123_456_789
    assert not (ws.root / "added.txt").exists()
    # Times are not compared: touching a file is no change.
    assert attempt(ws, "touch", ["touch -d @1700000000 README.md"]).entries == ()


def test_a_time_a_file_cannot_have_is_dropped_from_a_stored_changeset() -> None:
    for bad in (-1, 2**70, "1600000000", 1.5, True, None):
        state = FileState.from_dict(
            {"kind": "file", "mode": 0o644, "sha256": "0" * 64, "size": 1, "mtime_ns": bad}
        )
        assert state.mtime_ns is None
    good = FileState.from_dict({"kind": "file", "sha256": "0" * 64, "mtime_ns": 5})
    assert good.mtime_ns == 5 and good == FileState("file", sha256="0" * 64)
