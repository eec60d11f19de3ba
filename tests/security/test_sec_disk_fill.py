"""A step cannot fill the host's disk, nor leave behind a tree vigil cannot remove.

While a step runs, a watchdog stops it with VIGIL-LIMIT once what it wrote passes
``max_changeset_bytes`` (plus the slack of one check: see
``vigil.workspace.watchdog``) or the disk's free space falls under ``min_free_disk``:
the limit is no longer checked only after the step has filled the disk. A tree of any
depth is removed with the attempt (no recursion, one descriptor at a time), and a path
too long for vigil fails the attempt with VIGIL-LIMIT and a short message, never
VIGIL-INTERNAL.
"""

from __future__ import annotations

import os
import re
import resource
import threading
from pathlib import Path

import pytest

from clitools import status, vigil, write_plan
from sentinel import Sentinel
from test_workspace_support import overlay_available
from vigil.errors import LimitExceeded
from vigil.executors.process import LogSink, run_process
from vigil.workspace import Workspace
from vigil.workspace.limits import Limits
from vigil.workspace.removal import remove_tree

MODES = sorted({"overlay" if overlay_available() else "snapshot", "snapshot"})
MiB = 1 << 20
LIMIT_MIB = 16
# How far past the limit a step may get before the watchdog stops it: what it writes
# in one poll and one walk. Generous (a loaded machine, a fast disk); the step below
# tries to write 64 times the limit, so a watchdog that never fired still fails the test.
SLACK_MIB = 256
INTENDED_MIB = 64 * LIMIT_MIB
# Writes 1 MiB files, each flushed to the disk, and reports each one it finished.
WRITER = (
    f"i=0; while [ $i -lt {INTENDED_MIB} ]; do "
    "head -c 1048576 /dev/zero > fill$i && sync fill$i || exit 9; "
    'i=$((i+1)); echo "wrote $i"; done; echo finished'
)
DEEP = (
    "python3 -c '\n"
    "import os, sys\n"
    "name, depth = sys.argv[1], int(sys.argv[2])\n"
    'fd = os.open(".", os.O_RDONLY)\n'
    "for _ in range(depth):\n"
    "    os.mkdir(name, dir_fd=fd)\n"
    "    sub = os.open(name, os.O_RDONLY, dir_fd=fd)\n"
    "    os.close(fd)\n"
    "    fd = sub\n"
    "' {name} {depth}"
)


def _plan(ws: Path, run: str, retries: int = 1) -> None:
    task = {"id": "t", "run": run, "retry": {"attempts": retries, "initial": "10ms"}}
    write_plan(ws / "p.yaml", {"name": "p", "project": "p", "phases": [
        {"id": "a", "tasks": [task]}
    ]})  # fmt: skip


def _workspace(tmp_path: Path, toml: str) -> tuple[Path, dict[str, str]]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(f"[workspace]\n{toml}\n")
    return ws, {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}


def _attempt_logs(ws: Path, run_id: str) -> list[str]:
    logs = sorted((ws / ".vigil" / "logs" / run_id / "t").glob("*.log"))
    return [p.read_text(errors="replace") for p in logs]


def _left_behind(ws: Path) -> list[str]:
    attempts = ws / ".vigil" / "attempts"
    return sorted(p.name for p in attempts.iterdir()) if attempts.exists() else []


@pytest.mark.parametrize("mode", MODES)
def test_a_step_writing_far_past_the_limit_is_stopped_while_it_runs(
    tmp_path: Path, mode: str
) -> None:
    ws, env = _workspace(tmp_path, f'max_changeset_bytes = "{LIMIT_MIB}MiB"')
    env["VIGIL_ISOLATION"] = mode
    _plan(ws, WRITER)
    done = vigil("run", "p.yaml", "--run-id", "fill", cwd=ws, env=env, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    task = status("fill", ws, env)["tasks"][0]
    assert task["state"] == "failed"
    assert task["reason"].startswith("VIGIL-LIMIT: while the step ran"), task["reason"]
    (log,) = _attempt_logs(ws, "fill")
    assert "finished" not in log
    wrote = max((int(n) for n in re.findall(r"^wrote (\d+)$", log, re.M)), default=0)
    # Stopped once past the limit: the last whole MiB it reported is at least the limit.
    assert LIMIT_MIB <= wrote <= LIMIT_MIB + SLACK_MIB, log[-2000:]
    assert not any(p.name.startswith("fill") for p in ws.iterdir())
    assert _left_behind(ws) == []


def test_the_watchdogs_own_count_never_passes_the_limit_by_more_than_the_slack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same attack against the watchdog alone, as the engine drives it: the most it
    ever counted in the upper directory is within the limit plus the slack."""
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "ws"
    root.mkdir()
    limits = Limits(max_bytes=LIMIT_MIB * MiB, max_files=100_000, min_free=0)
    ws = Workspace(root, root / ".vigil", mode=MODES[0], limits=limits)
    sandbox = ws.prepare("watch")
    halt = threading.Event()
    try:
        with sandbox.lock(), ws.watch(sandbox, halt) as watch:
            spec = sandbox.command(["sh", "-c", WRITER], env={})
            out = run_process(
                spec.argv,
                env=spec.env,
                cwd=spec.cwd,
                sink=LogSink(tmp_path / "step.log"),
                timeout=None,
                stop=halt,
                tag="disk-fill-watch",
                supervisor=spec.supervisor,
                pass_fds=spec.pass_fds,
                started=spec.started,
            )
    finally:
        sandbox.discard()
    assert out.stopped and halt.is_set()
    assert isinstance(watch.exceeded, LimitExceeded) and watch.exceeded.code == "VIGIL-LIMIT"
    assert LIMIT_MIB * MiB < watch.peak <= (LIMIT_MIB + SLACK_MIB) * MiB
    assert "finished" not in (tmp_path / "step.log").read_text()


@pytest.mark.parametrize("mode", MODES)
def test_a_disk_running_out_of_space_stops_the_step(tmp_path: Path, mode: str) -> None:
    # A reserve no disk has: the free space is under it from the first check.
    ws, env = _workspace(tmp_path, 'min_free_disk = "1000PiB"')
    env["VIGIL_ISOLATION"] = mode
    _plan(ws, "echo started; sleep 300; echo done")
    done = vigil("run", "p.yaml", "--run-id", "free", cwd=ws, env=env, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    task = status("free", ws, env)["tasks"][0]
    assert task["reason"].startswith("VIGIL-LIMIT:") and "min_free_disk" in task["reason"]
    (log,) = _attempt_logs(ws, "free")
    assert "done" not in log
    assert _left_behind(ws) == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "depth"), [("dd", 3000), ("d" * 10, 800)])
def test_a_too_deep_tree_fails_with_vigil_limit_and_is_removed(
    tmp_path: Path, mode: str, name: str, depth: int
) -> None:
    ws, env = _workspace(tmp_path, "")
    env["VIGIL_ISOLATION"] = mode
    (ws / "keep.txt").write_text("kept\n")
    _plan(ws, DEEP.format(name=name, depth=depth), retries=2)
    done = vigil("run", "p.yaml", "--run-id", "deep", cwd=ws, env=env, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr
    task = status("deep", ws, env)["tasks"][0]
    reason = task["reason"]
    assert reason.startswith("VIGIL-LIMIT:") and "longer than 4095 bytes" in reason, reason
    assert "bytes]..." in reason and len(reason) < 400, reason  # the path is cut
    logs = _attempt_logs(ws, "deep")
    assert len(logs) == 2 and not any("VIGIL-INTERNAL" in log for log in logs)
    assert _left_behind(ws) == [], "an attempt's directory stayed on the disk"
    assert sorted(p.name for p in ws.iterdir()) == [".vigil", "keep.txt", "p.yaml", "vigil.toml"]


def test_remove_tree_removes_any_tree_a_step_can_make(tmp_path: Path) -> None:
    outside = Sentinel.make(tmp_path / "outside")
    top = tmp_path / "attempt"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for level in range(3000):
        os.mkdir("dd", dir_fd=fd)
        sub = os.open("dd", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = sub
        if level % 700 == 0:
            os.symlink(str(outside.root), "to-outside", dir_fd=fd)
            os.symlink(str(outside.root / "file.txt"), "to-file", dir_fd=fd)
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
            os.link(outside.root / "file.txt", "hard", dst_dir_fd=fd)
    os.close(fd)
    wide = top / "wide"
    wide.mkdir()
    for i in range(2000):
        (wide / f"d{i}").mkdir()
    locked = top / "locked" / "inner"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    os.chmod(locked, 0)  # no permission at all (vigil owns it: it may give itself some)
    os.chmod(top / "locked", 0o500)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Far fewer descriptors than levels: one per level would run out.
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        remove_tree(top)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not top.exists()
    outside.assert_unchanged()
    remove_tree(top)  # already gone: nothing to do
