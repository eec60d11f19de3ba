"""Where vigil looks for the cgroups it puts attempts in, read from /proc's text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.workspace.cgroup import candidates, cgroup_mounts, own_cgroups

# A hybrid machine: v1 hierarchies for pids and memory, a v2 one without them.
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
1:cpu,cpuacct:/
0::/
"""
HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_v1_hierarchies_nest_attempts_in_vigils_own_cgroups() -> None:
    found = candidates(own_cgroups(HYBRID_CGROUP), cgroup_mounts(HYBRID_MOUNTS))
    assert found["pids"].version == 1 and found["pids"].parent == Path("/sys/fs/cgroup/pids")
    assert found["memory"].parent == Path("/sys/fs/cgroup/memory/process_api/abc")


def test_v2_counts_only_where_vigils_cgroup_enables_the_controllers(tmp_path: Path) -> None:
    mine = tmp_path / "user.slice" / "vigil scope"
    mine.mkdir(parents=True)
    own = own_cgroups("0::/user.slice/vigil scope\n")
    mounts = cgroup_mounts(f"40 31 0:37 / {tmp_path} rw - cgroup2 cgroup2 rw\n")
    assert candidates(own, mounts) == {}  # no cgroup.subtree_control: nothing enabled
    (mine / "cgroup.subtree_control").write_text("cpu memory\n")
    assert list(candidates(own, mounts)) == ["memory"]
    (mine / "cgroup.subtree_control").write_text("cpu memory pids\n")
    found = candidates(own, mounts)
    assert {h.version for h in found.values()} == {2}
    assert {h.parent for h in found.values()} == {mine}


def test_a_mount_of_another_subtree_does_not_hold_vigils_cgroup() -> None:
    mounts = cgroup_mounts("39 31 0:36 /other /mnt/pids rw - cgroup cgroup rw,pids\n")
    assert candidates(own_cgroups("8:pids:/mine\n"), mounts) == {}
    mounts = cgroup_mounts("39 31 0:36 /mine /mnt/pids rw - cgroup cgroup rw,pids\n")
    assert candidates(own_cgroups("8:pids:/mine/x\n"), mounts)["pids"].parent == Path("/mnt/pids/x")


_NAME = st.text(alphabet="abcdefghij-_. 0123456789", min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)


@given(root=st.lists(_NAME, max_size=3), below=st.lists(_NAME, max_size=3))
def test_vigils_cgroup_is_found_beneath_any_mount_root(root: list[str], below: list[str]) -> None:
    """Whatever the mount's root and vigil's path below it (spaces escaped as mountinfo
    writes them), the attempts' parent is the mount point joined with the rest."""
    mount_root = "/" + "/".join(root)
    own = "/" + "/".join([*root, *below])
    escaped = mount_root.replace(" ", "\\040")
    line = f"39 31 0:36 {escaped} /mnt/my\\040pids rw - cgroup cgroup rw,pids\n"
    found = candidates(own_cgroups(f"8:pids:{own}\n"), cgroup_mounts(line))
    assert found["pids"].parent == Path("/mnt/my pids", *below)


def test_workers_preparing_attempts_at_once_get_one_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # A driver's workers ask at the same time; a second probe racing the first (removing
    # its probe cgroup) once made one worker see rlimits after another had chosen cgroups.
    import threading

    from vigil.workspace import cgroup

    monkeypatch.setattr(cgroup, "_DECIDED", [])
    barrier = threading.Barrier(8)
    answers: list[object] = []

    def ask() -> None:
        barrier.wait()
        answers.append(cgroup.enforcement())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 8 and all(a is answers[0] for a in answers)
