"""The resolution every host-side read and write uses: beneath the root, no link followed.

Each test runs twice: with ``openat2`` (where the kernel has it) and with the
component-by-component walk that replaces it on older kernels.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel import Sentinel
from vigil.workspace import beneath
from vigil.workspace.beneath import Blocked, Tree, UnsafePath


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "openat2":
        assert beneath.openat2_available(), "this kernel should have openat2 (5.6+)"
    else:
        monkeypatch.setattr(beneath, "_have_openat2", False)
    yield request.param


@pytest.fixture
def outside(tmp_path: Path) -> Sentinel:
    return Sentinel.make(tmp_path / "outside")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    (path / "a" / "b" / "c").mkdir(parents=True)
    (path / "a" / "b" / "c" / "f").write_text("inside\n")
    return path


PREFIXES = ["a", "a/b", "a/b/c"]  # the link sits in the first, a middle or the last dir


@pytest.mark.parametrize("where", PREFIXES)
@pytest.mark.parametrize("op", ["write", "mkdir", "symlink", "unlink", "chmod", "read", "list"])
def test_a_link_in_any_component_is_never_followed(
    resolver: str, root: Path, outside: Sentinel, where: str, op: str
) -> None:
    real = root / where
    real.rename(root / (where + ".moved"))
    os.symlink(outside.root, real)
    rel = f"{where}/f"
    with Tree(root) as tree, pytest.raises(Blocked) as err:
        if op == "write":
            tree.write_file(rel, lambda fd: os.write(fd, b"evil"), 0o644)
        elif op == "mkdir":
            tree.mkdir(rel + "-dir")
        elif op == "symlink":
            tree.symlink(rel, "/etc/passwd")
        elif op == "unlink":
            tree.unlink(rel)
        elif op == "chmod":
            tree.chmod(rel, 0o777)
        elif op == "read":
            os.close(tree.open_file(rel))
        else:
            tree.listdir(where + "/f")
    assert err.value.rel == where and err.value.what == "symbolic link"
    outside.assert_unchanged()


def test_the_last_component_is_not_followed_either(
    resolver: str, root: Path, outside: Sentinel
) -> None:
    os.symlink(outside.root / "file.txt", root / "a" / "link")
    with Tree(root) as tree:
        with pytest.raises(Blocked):
            os.close(tree.open_file("a/link"))
        with pytest.raises(Blocked):
            tree.chmod("a/link", 0o777)
        assert tree.readlink("a/link") == str(outside.root / "file.txt")
        st = tree.lstat("a/link")
        assert st is not None and stat.S_ISLNK(st.st_mode)
        # Writing a new file at a link's name replaces the link, never its target.
        tree.write_file("a/link", lambda fd: os.write(fd, b"new\n"), 0o600)
        tree.unlink("a/b/c/f")
    assert (root / "a" / "link").read_bytes() == b"new\n"
    assert not (root / "a" / "link").is_symlink()
    outside.assert_unchanged()


def test_a_file_where_a_directory_was_is_blocked(resolver: str, root: Path) -> None:
    (root / "a" / "b" / "c" / "f").unlink()
    (root / "a" / "b" / "c").rmdir()
    (root / "a" / "b" / "c").write_text("now a file\n")
    with Tree(root) as tree, pytest.raises(Blocked) as err:
        tree.write_file("a/b/c/f", lambda fd: None, 0o644)
    assert err.value.rel == "a/b/c" and err.value.what == "file"


@pytest.mark.parametrize(
    "rel", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a/", "a\0b", ".."]
)
def test_paths_that_are_not_plain_are_refused(resolver: str, root: Path, rel: str) -> None:
    with Tree(root) as tree, pytest.raises(UnsafePath):
        tree.write_file(rel, lambda fd: None, 0o644)


def test_writes_replace_a_hard_link_instead_of_writing_through(
    resolver: str, root: Path, outside: Sentinel
) -> None:
    os.link(outside.root / "file.txt", root / "a" / "hard")
    outside.refresh()  # the link count of the outside file changed: that is the set-up
    with Tree(root) as tree:
        tree.write_file("a/hard", lambda fd: os.write(fd, b"replaced\n"), 0o644)
        tree.symlink("a/hard2", "x")
    assert (root / "a" / "hard").read_bytes() == b"replaced\n"
    outside.assert_unchanged(link_counts=False)
    assert (outside.root / "file.txt").stat().st_nlink == 2  # the workspace's link was replaced


def test_a_stale_temporary_that_is_a_link_is_not_written_through(
    resolver: str, root: Path, outside: Sentinel
) -> None:
    # Whatever sits at the temporary name (a link planted there) is removed, not followed.
    os.symlink(outside.root / "file.txt", root / "a" / ("new" + beneath.TMP_SUFFIX))
    with Tree(root) as tree:
        tree.write_file("a/new", lambda fd: os.write(fd, b"ok\n"), 0o644)
    assert (root / "a" / "new").read_bytes() == b"ok\n"
    outside.assert_unchanged()


def test_reads_refuse_fifos_instead_of_hanging(resolver: str, root: Path) -> None:
    os.mkfifo(root / "a" / "pipe")
    with Tree(root) as tree, pytest.raises(Blocked):
        os.close(tree.open_file("a/pipe"))


def test_a_directory_swapped_after_it_was_resolved_keeps_the_write_inside(
    resolver: str, root: Path, outside: Sentinel
) -> None:
    """The operation acts on the descriptor it resolved, not on the name again."""
    with Tree(root) as tree, tree.parent("a/b/c/new") as (fd, name):
        (root / "a" / "b" / "c").rename(root / "a" / "b" / "c.real")
        os.symlink(outside.root, root / "a" / "b" / "c")
        os.mkdir(name, dir_fd=fd)
    assert (root / "a" / "b" / "c.real" / "new").is_dir()
    outside.assert_unchanged()
