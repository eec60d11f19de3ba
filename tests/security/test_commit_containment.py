"""Nothing vigil writes on a step's behalf lands outside the workspace.

Attacks on the host's side of a commit: a directory turned into a link (in the first, a
middle or the last component) or into a file between capture and commit, by another task
or by a thread racing the commit; hard links to outside files; forged paths and object
names; and the same swaps before a rollback, a snapshot restore, a dry-run stacking and
the recovery of a half-applied commit. After each, a sentinel tree beside the workspace
must be unchanged to the inode.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from sentinel import Sentinel
from test_workspace_support import attempt, overlay_available, run
from vigil.errors import VigilError
from vigil.workspace import ChangeEntry, Changeset, Conflict, Drift, FileState, Workspace
from vigil.workspace.apply import Faults
from vigil.workspace.beneath import UnsafePath
from vigil.workspace.changeset import compose
from vigil.workspace.state import tree_hash
from vigil.workspace.view import StackedView, materialise

MODE = "overlay" if overlay_available() else "snapshot"
WHERE = ["d1", "d1/d2", "d1/d2/d3"]  # first, middle, last directory component


@pytest.fixture
def outside(tmp_path: Path) -> Sentinel:
    return Sentinel.make(tmp_path / "outside")


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "ws"
    (root / "d1" / "d2" / "d3").mkdir(parents=True)
    (root / "d1" / "d2" / "d3" / "f").write_text("inside f\n")
    (root / "d1" / "f").write_text("inside d1/f\n")
    (root / "vigil.toml").write_text('[policy]\nprotected = ["prod"]\n')
    return Workspace(root, root / ".vigil", mode=MODE)


def _file(ws: Workspace, data: bytes, mode: int = 0o644) -> FileState:
    return FileState("file", mode, ws.objects.put_bytes(data), len(data))


def _swap_to_link(root: Path, rel: str, target: Path) -> None:
    (root / rel).rename(root / (rel + ".moved"))
    os.symlink(target, root / rel)


@pytest.mark.parametrize("where", WHERE)
def test_a_directory_another_task_turned_into_a_link_is_not_followed(
    ws: Workspace, outside: Sentinel, where: str
) -> None:
    """The seen attack: task A makes ``where`` a link out, task B writes below it."""
    link = attempt(ws, "a", [f"rm -rf {where} && ln -s {outside.root} {where}"])
    write = attempt(
        ws, "b", [f"echo evil > {where}/f && mkdir -p {where}/new && echo x > {where}/new/g"]
    )
    ws.commit(link)
    with pytest.raises(Conflict) as err:
        ws.commit(write)
    assert f"{where}/f" in err.value.details
    outside.assert_unchanged()
    assert os.readlink(ws.root / where) == str(outside.root)


@pytest.mark.parametrize("where", WHERE)
def test_the_other_order_conflicts_too(ws: Workspace, outside: Sentinel, where: str) -> None:
    link = attempt(ws, "a", [f"rm -rf {where} && ln -s {outside.root} {where}"])
    write = attempt(ws, "b", [f"echo evil > {where}/f && echo new > {where}/n"])
    ws.commit(write)
    with pytest.raises(Conflict):
        ws.commit(link)  # would drop b's new file inside the directory it replaces
    outside.assert_unchanged()
    assert (ws.root / where / "n").read_text() == "new\n"


def test_a_file_another_task_turned_into_a_link_is_replaced_not_written_through(
    ws: Workspace, outside: Sentinel
) -> None:
    link = attempt(ws, "a", [f"rm d1/f && ln -s {outside.root / 'f'} d1/f"])
    write = attempt(ws, "b", ["echo evil >> d1/f"])
    ws.commit(link)
    with pytest.raises(Conflict):
        ws.commit(write)
    outside.assert_unchanged()


@pytest.mark.parametrize("where", WHERE)
def test_a_directory_turned_into_a_file_is_a_conflict(ws: Workspace, where: str) -> None:
    to_file = attempt(ws, "a", [f"rm -rf {where} && echo now-a-file > {where}"])
    write = attempt(ws, "b", [f"echo more > {where}/f2"])
    ws.commit(to_file)
    before = tree_hash(ws.root)
    with pytest.raises(Conflict):
        ws.commit(write)
    assert tree_hash(ws.root) == before


def test_a_hard_link_to_an_outside_file_is_replaced_not_written_through(
    ws: Workspace, outside: Sentinel
) -> None:
    os.link(outside.root / "file.txt", ws.root / "hard.txt")
    outside.refresh()
    cs = attempt(ws, "h", ["echo appended >> hard.txt && chmod 600 hard.txt"])
    ws.commit(cs)
    assert (ws.root / "hard.txt").read_text() == "outside\nappended\n"
    outside.assert_unchanged(link_counts=False)
    assert (outside.root / "file.txt").read_text() == "outside\n"
    assert (outside.root / "file.txt").stat().st_mode & 0o777 != 0o600 or os.getuid() != 0


def test_symlinks_are_captured_as_links_and_never_hashed_through(
    ws: Workspace, outside: Sentinel
) -> None:
    cs = attempt(ws, "l", [f"ln -s {outside.root / 'file.txt'} out && ln -s {outside.root} dir"])
    kinds = {e.path: e.after for e in cs.entries}
    assert kinds["out"] == FileState("symlink", target=str(outside.root / "file.txt"))
    assert kinds["dir"] == FileState("symlink", target=str(outside.root))
    ws.commit(cs)
    ws.rollback([cs])
    outside.assert_unchanged()


@pytest.mark.parametrize("path", ["../escape", "d1/../../escape", "/tmp/escape", "d1//x", "."])
def test_forged_paths_in_a_changeset_are_refused(
    ws: Workspace, outside: Sentinel, path: str
) -> None:
    """A changeset read back from a store someone else can write may name any path."""
    forged = Changeset((ChangeEntry(path, None, _file(ws, b"forged\n")),))
    before = tree_hash(ws.root)
    with pytest.raises((VigilError, UnsafePath)):
        ws.commit(forged)
    assert tree_hash(ws.root) == before
    assert not (ws.root.parent / "escape").exists() and not Path("/tmp/escape").exists()
    outside.assert_unchanged()


def test_forged_object_names_are_refused(ws: Workspace, outside: Sentinel) -> None:
    name = "../../../outside/file.txt"
    forged = Changeset((ChangeEntry("x", None, FileState("file", 0o644, name, 8)),))
    with pytest.raises((VigilError, UnsafePath, FileNotFoundError)):
        ws.commit(forged)
    assert not (ws.root / "x").exists()
    outside.assert_unchanged()


def test_a_blob_swapped_for_a_link_or_damaged_is_never_written(
    ws: Workspace, outside: Sentinel
) -> None:
    state = _file(ws, b"the real content\n")
    blob = ws.objects.path_of(state.sha256 or "")
    blob.unlink()
    os.symlink(outside.root / "file.txt", blob)
    cs = Changeset((ChangeEntry("new.txt", None, state),))
    with pytest.raises(FileNotFoundError):
        ws.commit(cs)  # a link in the object store is no object
    blob.unlink()
    blob.write_bytes(b"tampered\n")
    with pytest.raises(VigilError) as err:
        ws.commit(cs)
    assert err.value.code == "VIGIL-STORE"
    assert not (ws.root / "new.txt").exists()
    with pytest.raises(VigilError):
        ws.recover()  # the intent stays until the object is put right; it never writes junk
    assert not (ws.root / "new.txt").exists()
    outside.assert_unchanged()


def test_the_object_store_directory_swapped_for_a_link_is_not_followed(
    ws: Workspace, outside: Sentinel
) -> None:
    _file(ws, b"x\n")
    shutil.rmtree(ws.objects.root)
    os.symlink(outside.root, ws.objects.root)
    with pytest.raises(OSError):
        ws.objects.put_bytes(b"would land outside\n")
    outside.assert_unchanged()


# ------------------------------------------------------------------ rename races


def _swapper(root: Path, rel: str, outside: Path, stop: threading.Event, to_file: bool) -> None:
    real, moved = root / rel, root / (rel + ".moved")
    while not stop.is_set():
        os.rename(real, moved)
        if to_file:
            real.write_text("a file now\n")
        else:
            os.symlink(outside, real)
        os.unlink(real)
        os.rename(moved, real)


@pytest.mark.parametrize("to_file", [False, True], ids=["dir-to-link", "dir-to-file"])
def test_commits_racing_a_thread_that_swaps_the_parent(
    ws: Workspace, outside: Sentinel, to_file: bool
) -> None:
    """Many real commits while a thread keeps swapping their parent directory."""
    state = _file(ws, b"raced\n")
    (ws.root / "race").mkdir()
    for name in ("f", "g"):
        (outside.root / name).write_text("outside\n")
    outside.refresh()
    stop = threading.Event()
    swapper = threading.Thread(target=_swapper, args=(ws.root, "race", outside.root, stop, to_file))
    swapper.start()
    landed, refused = 0, 0
    try:
        for i in range(150):
            cs = Changeset(tuple(ChangeEntry(f"race/{n}{i}", None, state) for n in ("f", "g", "h")))
            try:
                ws.commit(cs)
                landed += 1
            except Conflict:
                refused += 1
            outside.assert_unchanged()
    finally:
        stop.set()
        swapper.join()
    assert landed + refused == 150
    # Commits cut short by the swap are finished now that the directory is back.
    ws.recover()
    assert not list((ws.root / ".vigil" / "commits").glob("*.json"))
    outside.assert_unchanged()
    written = sorted(os.listdir(ws.root / "race"))
    assert all((ws.root / "race" / n).read_bytes() == b"raced\n" for n in written)


def test_rollback_after_a_parent_became_a_link(ws: Workspace, outside: Sentinel) -> None:
    cs = attempt(ws, "w", ["mkdir -p d1/d2/new && echo n > d1/d2/new/file.txt"])
    ws.commit(cs)
    _swap_to_link(ws.root, "d1/d2/new", outside.root)
    with pytest.raises(Drift):
        ws.rollback([cs])
    with pytest.raises(Conflict):
        ws.rollback([cs], force=True)  # even forced, a link is never gone through
    outside.assert_unchanged()
    assert not list((ws.root / ".vigil" / "commits").glob("*.json")), "refused before the intent"


def test_forced_rollback_replaces_a_file_swapped_for_a_link(
    ws: Workspace, outside: Sentinel
) -> None:
    cs = attempt(ws, "w", ["echo changed > d1/f"])
    ws.commit(cs)
    (ws.root / "d1" / "f").unlink()
    os.symlink(outside.root / "f", ws.root / "d1" / "f")
    with pytest.raises(Drift):
        ws.rollback([cs])
    ws.rollback([cs], force=True)
    assert (ws.root / "d1" / "f").read_text() == "inside d1/f\n"
    outside.assert_unchanged()


def test_recovery_of_a_half_applied_commit_whose_parent_became_a_link(
    ws: Workspace, outside: Sentinel
) -> None:
    class Cut(Exception):
        pass

    ops = [0]

    def cut_after_two() -> None:
        ops[0] += 1
        if ops[0] > 2:
            raise Cut

    state = _file(ws, b"half\n")
    cs = Changeset(tuple(ChangeEntry(f"d1/d2/n{i}", None, state) for i in range(6)))
    ws.applier.faults = Faults(before_op=cut_after_two)
    with pytest.raises(Cut):
        ws.commit(cs)
    ws.applier.faults = None
    assert list((ws.root / ".vigil" / "commits").glob("*.json")), "no intent was left"
    _swap_to_link(ws.root, "d1/d2", outside.root)
    for _ in range(3):
        with pytest.raises(Conflict):
            ws.recover()
        outside.assert_unchanged()
    os.unlink(ws.root / "d1" / "d2")
    os.rename(ws.root / "d1" / "d2.moved", ws.root / "d1" / "d2")
    assert ws.recover()
    assert all((ws.root / "d1" / "d2" / f"n{i}").read_bytes() == b"half\n" for i in range(6))


def test_dry_run_layers_that_disagree_about_a_link_are_a_conflict(
    ws: Workspace, outside: Sentinel, tmp_path: Path
) -> None:
    link = attempt(ws, "a", [f"rm -rf d1/d2 && ln -s {outside.root} d1/d2"])
    below = attempt(ws, "c", ["echo x > d1/d2/f && echo y > d1/d2/new"])
    with pytest.raises(Conflict):
        materialise(compose([link, below]), ws.objects, tmp_path / "layer", StackedView(ws.root))
    outside.assert_unchanged()
    assert not (tmp_path / "layer").exists()


def test_snapshot_restore_does_not_follow_a_link_the_step_made(
    tmp_path: Path, outside: Sentinel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "snap"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f").write_text("inside\n")
    (root / "sub" / "file.txt").write_text("inside file.txt\n")
    ws = Workspace(root, root / ".vigil", mode="snapshot")
    before = tree_hash(root)
    sandbox = ws.prepare("swap")
    with sandbox.lock():
        # The step moves the directory away and leaves a link out in its place: putting
        # the workspace back must remove the link, not write the old files through it.
        run(sandbox, f"mv sub sub.moved && ln -s {outside.root} sub && echo n > new")
        sandbox.discard()
    assert tree_hash(root) == before
    assert not (root / "sub").is_symlink()
    outside.assert_unchanged()


@pytest.mark.parametrize("at_op", [2, 5, 9, 14])
def test_a_new_tree_swapped_for_a_link_mid_commit_is_not_written_through(
    ws: Workspace, outside: Sentinel, at_op: int
) -> None:
    # A commit of a new tree resolves each directory once and writes new files straight
    # under their names: a directory it made, moved away and replaced by a link to
    # outside mid-commit, must not lead any write outside, at any point of the commit.
    folder = FileState("dir", 0o755)
    entries = [ChangeEntry(p, None, folder) for p in ("venv", "venv/lib", "venv/lib/pkg")]
    entries += [
        ChangeEntry(f"venv/lib/pkg/m{i}.py", None, _file(ws, f"m{i}\n".encode())) for i in range(12)
    ]
    ops = [0]

    def swap() -> None:
        ops[0] += 1
        if ops[0] == at_op:
            for rel in ("venv/lib/pkg", "venv/lib", "venv"):
                if (ws.root / rel).is_dir() and not (ws.root / rel).is_symlink():
                    _swap_to_link(ws.root, rel, outside.root)
                    break

    ws.applier.faults = Faults(before_op=swap)
    try:
        ws.commit(Changeset(tuple(entries)))
    except Conflict:
        pass  # refused where a path was resolved after the swap
    finally:
        ws.applier.faults = None
    outside.assert_unchanged()
    assert ops[0] >= at_op, "the swap never happened"
    # What was written is inside the workspace: under the moved directory, or not at all.
    written = [p for p in ws.root.rglob("m*.py") if not p.is_symlink()]
    assert all(ws.root in p.parents and ".moved" in str(p) for p in written) or not written
