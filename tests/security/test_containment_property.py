"""Property: whatever two parallel tasks change and however the tree shifts between their
commits, commit and rollback never change anything outside the workspace, and the
protected files stay as a person left them.

Each task's changeset is built the way snapshot capture builds one (scan a private copy
of the workspace before and after random operations), so thousands of operation
sequences run in seconds. Between the commits, the host's side of the tree is shifted
too (directories swapped for links out or for files, hard links to outside files), as a
person or another tool could. After every step a sentinel tree beside the workspace is
compared to the inode.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sentinel import Sentinel
from vigil.errors import VigilError
from vigil.workspace import Changeset, Workspace
from vigil.workspace.capture import diff_states, store_images
from vigil.workspace.ignore import IgnoreRules
from vigil.workspace.state import scan

pytestmark = pytest.mark.slow

POLICY = b'[policy]\nprotected = ["prod"]\n'
PATHS = ["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "vigil.toml", "VIGIL.TOML", ".vigil/x"]
DIRS = ["d", "d/e"]
TARGETS = ["OUTSIDE", "OUTSIDE/sub", "../outside", "..", ".", "vigil.toml", ".vigil", "a"]

path = st.sampled_from(PATHS)
target = st.sampled_from(TARGETS)
op = st.one_of(
    st.tuples(st.just("write"), path, st.binary(max_size=8)),
    st.tuples(st.just("delete"), path),
    st.tuples(st.just("mkdir"), path),
    st.tuples(st.just("rename"), path, path),
    st.tuples(st.just("hardlink"), path, path),
    st.tuples(st.just("hardlink_out"), path),
    st.tuples(st.just("symlink"), path, target),
    st.tuples(st.just("dir_to_link"), st.sampled_from(DIRS), target),
    st.tuples(st.just("dir_to_file"), st.sampled_from(DIRS)),
)
ops = st.lists(op, max_size=8)


def _plain_parents(root: Path, rel: str) -> bool:
    """Whether every parent of ``rel`` is a real directory (so no operation follows a link)."""
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        if current.is_symlink() or not current.is_dir():
            return False
    return True


def _clear(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def apply_op(root: Path, outside: Path, step: tuple[object, ...], *, host: bool = False) -> None:
    """One file operation on ``root`` that never follows a link (skipped if it would).

    ``host``: an operation on the real workspace, by a person: it leaves vigil's files be.
    """
    kind, rel = str(step[0]), str(step[1])
    paths = [rel] + [str(s) for s in step[2:] if isinstance(s, str) and s in PATHS]
    if not all(_plain_parents(root, p) for p in paths):
        return
    if host and any(p.casefold().startswith(("vigil.toml", ".vigil")) for p in paths):
        return
    p = root / rel
    try:
        if kind == "write":
            if p.is_dir() and not p.is_symlink():
                return
            _clear(p)  # replace, never write through a link or a hard link
            p.write_bytes(bytes(step[2]))  # type: ignore[arg-type]
        elif kind == "delete":
            _clear(p)
        elif kind == "mkdir":
            p.mkdir()
        elif kind == "rename":
            os.rename(p, root / str(step[2]))
        elif kind == "hardlink":
            if p.is_file() and not p.is_symlink():
                os.link(p, root / str(step[2]))
        elif kind == "hardlink_out":
            os.link(outside / "file.txt", p)
        elif kind == "symlink":
            os.symlink(str(step[2]).replace("OUTSIDE", str(outside)), p)
        elif kind == "dir_to_link":
            _clear(p)
            os.symlink(str(step[2]).replace("OUTSIDE", str(outside)), p)
        elif kind == "dir_to_file":
            _clear(p)
            p.write_bytes(b"was a directory\n")
    except OSError:
        pass  # the operation does not apply to the tree as it is; like a failed command


def changeset_of(
    ws: Workspace, scratch: Path, outside: Path, steps: list[tuple[object, ...]]
) -> Changeset:
    """The changeset of a task that ran ``steps`` on its own copy of the workspace."""
    shutil.copytree(ws.root, scratch, symlinks=True, ignore=shutil.ignore_patterns(".vigil"))
    before = scan(scratch, [".vigil"])
    for step in steps:
        apply_op(scratch, outside, step)
    after = scan(scratch, [".vigil"])
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    store_images(scratch, changed, ws.objects)
    store_images(ws.root, {k: v for k, v in before.items() if after.get(k) != v}, ws.objects)
    return diff_states(before, after, IgnoreRules())


def check(ws: Workspace, outside: Sentinel, state_entries: set[str]) -> None:
    outside.assert_unchanged(link_counts=False)
    policy = ws.root / "vigil.toml"
    assert not policy.is_symlink() and policy.read_bytes() == POLICY
    assert not (ws.root / "VIGIL.TOML").exists()
    assert set(os.listdir(ws.root / ".vigil")) <= state_entries
    assert not (ws.root / ".vigil" / "x").exists()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(task_a=ops, task_b=ops, shift=ops)
# Found by this search: a forced rollback over a directory made or filled since.
@example(task_a=[("delete", "a")], task_b=[], shift=[("mkdir", "a")])
@example(task_a=[], task_b=[("mkdir", "b")], shift=[("rename", "d", "b")])
def test_commits_and_rollbacks_stay_inside_the_workspace(
    task_a: list[tuple[object, ...]],
    task_b: list[tuple[object, ...]],
    shift: list[tuple[object, ...]],
) -> None:
    with tempfile.TemporaryDirectory(prefix="vigil-prop-") as tmp:
        base = Path(tmp)
        outside = Sentinel.make(base / "outside")
        root = base / "ws"
        (root / "d" / "e").mkdir(parents=True)
        (root / "a").write_text("a\n")
        (root / "d" / "a").write_text("d/a\n")
        (root / "d" / "e" / "a").write_text("d/e/a\n")
        (root / "vigil.toml").write_bytes(POLICY)
        os.environ.setdefault("VIGIL_CONFIG_DIR", str(base / "config"))
        ws = Workspace(root, root / ".vigil", mode="snapshot")
        state_entries = {"objects", "commits", "locks", "commits.log", "attempts", "snapshots"}
        state_entries.add(".gitignore")  # written with the state directory
        (root / ".vigil").mkdir(exist_ok=True)
        cs_a = changeset_of(ws, base / "task-a", outside.root, task_a)
        cs_b = changeset_of(ws, base / "task-b", outside.root, task_b)
        outside.refresh()  # hard links made into the task copies changed link counts only
        since = ws.generation()
        landed: list[Changeset] = []
        for cs, shifts in ((cs_a, shift), (cs_b, [])):
            try:
                ws.commit(cs, since=since)
                landed.append(cs)
            except VigilError:
                pass
            check(ws, outside, state_entries)
            for step in shifts:
                apply_op(root, outside.root, step, host=True)
                check(ws, outside, state_entries)
        for cs in reversed(landed):
            for force in (False, True):
                with contextlib.suppress(VigilError):
                    ws.rollback([cs], force=force)
                check(ws, outside, state_entries)
        with contextlib.suppress(VigilError):
            ws.recover()
        check(ws, outside, state_entries)
