"""A step cannot exhaust the host: its processes, its memory and its private tmpfs are
bounded, by a cgroup per attempt where vigil can make one and by per-process rlimits
elsewhere (test_sec_cgroup_limits.py tests what differs). The bounds here are small so
the attacks never endanger the machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from sec_support import make_workspace, needs_overlay, run_in, sh

from vigil.workspace import SandboxSettings
from vigil.workspace.cgroup import enforcement

pytestmark = needs_overlay

# Forks children that wait on a pipe until the first fork fails (or 300 succeed), prints
# how many it got, then lets them all go.
FORK_BOMB = """
import os, sys
r, w = os.pipe()
kids, error = [], ""
for _ in range(300):
    try:
        pid = os.fork()
    except OSError as exc:
        error = type(exc).__name__
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids.append(pid)
os.close(w)
for pid in kids:
    os.waitpid(pid, 0)
print(len(kids), error)
"""


def test_fork_bomb_is_bounded_to_the_attempt(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_processes=40))
    for round_ in range(2):
        sandbox = ws.prepare(f"bomb-{round_}")
        try:
            proc = run_in(sandbox, ["python3", "-c", FORK_BOMB])
        finally:
            sandbox.discard()
        count, error = proc.stdout.split()
        assert error == "BlockingIOError", proc.stdout + proc.stderr
        assert int(count) < 40
    # Nothing else was limited: the next attempt without the bound forks freely.
    free = make_workspace(tmp_path, name="free", settings=SandboxSettings(max_processes=0))
    sandbox = free.prepare("free")
    try:
        proc = run_in(sandbox, ["python3", "-c", FORK_BOMB.replace("300", "60")])
    finally:
        sandbox.discard()
    assert proc.stdout.split() == ["60"]


def test_memory_hog_fails_and_modest_use_works(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_memory="256M"))
    sandbox = ws.prepare("hog")
    try:
        hog = run_in(sandbox, ["python3", "-c", "b = bytearray(1 << 30); print('allocated')"])
        hit = sandbox.limit_hit()
        modest = run_in(sandbox, ["python3", "-c", "b = bytearray(32 << 20); print('ok')"])
    finally:
        sandbox.discard()
    assert hog.returncode != 0
    assert "allocated" not in hog.stdout
    if enforcement().cgroups:
        assert hog.returncode == 128 + 9  # the kernel's out-of-memory kill
        assert hit is not None and "max_memory" in hit.cause
    else:
        assert "MemoryError" in hog.stderr  # RLIMIT_DATA: the allocation itself fails
        assert hit is None
    assert modest.stdout.strip() == "ok"


def test_private_tmp_has_a_size_limit(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, settings=SandboxSettings(tmp_size="8M"))
    sandbox = ws.prepare("tmpfs")
    try:
        proc = sh(
            sandbox,
            "head -c 16777216 /dev/zero > /tmp/big; echo rc=$?; head -c 4194304 /dev/zero"
            ' > /dev/shm/small && echo small-ok; head -c 16777216 /dev/zero > "$HOME/big";'
            " echo home=$?",
        )
    finally:
        sandbox.discard()
    assert "rc=1" in proc.stdout
    assert "No space left on device" in proc.stderr
    assert "small-ok" in proc.stdout
    assert "home=1" in proc.stdout


@pytest.mark.slow
def test_through_the_engine_only_the_hog_fails(tmp_path: Path, backend: str) -> None:
    """[workspace] limits in vigil.toml reach the sandbox; the attempt that hits them
    fails, its sibling succeeds, and nothing of theirs lands."""
    from clitools import status, vigil, write_plan

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text('[workspace]\nmax_processes = 40\nmax_memory = "256M"\n')
    bomb = f"python3 -c {FORK_BOMB!r} > bomb.txt && test \"$(cut -d' ' -f2 bomb.txt)\" = ''"
    hog = "python3 -c 'bytearray(1 << 30)' && echo done > hog.txt"
    plan = {
        "name": "limits",
        "project": "limits",
        "phases": [
            {
                "id": "p",
                "tasks": [
                    {"id": "bomb", "run": bomb, "on_failure": "continue"},
                    {"id": "hog", "run": hog, "on_failure": "continue"},
                    {"id": "fine", "run": "echo fine > fine.txt"},
                ],
            }
        ],
    }
    write_plan(ws / "plan.yaml", plan)
    out = vigil("run", "plan.yaml", "--run-id", "lim", cwd=ws, env={"VIGIL_ISOLATION": "overlay"})
    view = status("lim", ws)
    states = {t["id"]: t["state"] for t in view["tasks"]}
    assert states["fine"] == "succeeded", out.stdout + out.stderr
    assert states["bomb"] == "failed"
    assert states["hog"] == "failed"
    assert (ws / "fine.txt").read_text() == "fine\n"
    assert not (ws / "bomb.txt").exists()
    assert not (ws / "hog.txt").exists()
