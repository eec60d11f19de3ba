"""A step cannot exhaust the host, counted per attempt.

Where vigil can create cgroups (root on the cgroup v1 hierarchies, or a delegated cgroup
v2 subtree), all processes of an attempt together get ``max_processes`` and
``max_memory``, a hit fails the attempt with VIGIL-LIMIT whatever the step's exit status,
and the cgroup goes with the attempt. Where it cannot (an unprivileged user without
delegation, as CI runs these tests), the per-process rlimits remain, and ``vigil doctor``
says which of the two is in force.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
from sec_support import make_workspace, needs_overlay

from vigil.executors.process import LogSink, ProcessOutcome, run_process
from vigil.layout import run_tag
from vigil.workspace import OverlaySandbox, SandboxSettings, SandboxUnavailable
from vigil.workspace.cgroup import CGROUP_MEANING, RLIMIT_MEANING, enforcement

ENFORCED = enforcement()
needs_cgroups = pytest.mark.skipif(
    not ENFORCED.cgroups,
    reason=f"no cgroup can be made here ({ENFORCED.detail}); the rlimit fallback is tested",
)
needs_fallback = pytest.mark.skipif(
    ENFORCED.cgroups,
    reason=f"{ENFORCED.mechanism} enforces the limits here; the rlimit fallback is not in use",
)
pytestmark = needs_overlay

# Tries to start 10 * N children that wait on a pipe. At the first refused fork it says
# how many it got and exits 0 anyway, as a careless build script would: the limit hit
# must fail the attempt all the same. The children end with it.
FORK_BOMB = """
import os, sys
n = int(sys.argv[1])
r, w = os.pipe()
kids = 0
for _ in range(10 * n):
    try:
        pid = os.fork()
    except OSError as exc:
        print(kids, "refused", type(exc).__name__, flush=True)
        sys.exit(0)
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids += 1
print(kids, "all", flush=True)
"""

# Starts COUNT children that each allocate and touch SHARE of LIMIT MiB, then wait until
# all of them have answered (allocated, or died trying). Prints each child's exit status.
HOG = """
import subprocess, sys
count, share, limit = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
size = int(share * limit * 2**20)
child = f"import sys; b = bytearray({size}); print('held', flush=True); sys.stdin.read()"
kids = [
    subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for _ in range(count)
]
held = [k.stdout.readline().strip() == b"held" for k in kids]
for k in kids:
    k.stdin.close()
print("held", sum(held), "exits", *[k.wait() for k in kids], flush=True)
"""


def _descendants(pid: int) -> list[int]:
    """Live processes below ``pid``, found from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] not in (b"Z", b"X"):
            parents[int(entry)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        here = frontier.pop()
        kids = [p for p, parent in parents.items() if parent == here]
        found += kids
        frontier += kids
    return found


def _run(sandbox: OverlaySandbox, argv: list[str], log: Path) -> tuple[ProcessOutcome, str]:
    """Run ``argv`` in ``sandbox`` as an attempt's command runs; its outcome and output."""
    sink = LogSink(log)
    start = sink.position()
    spec = sandbox.command(argv, env={})
    try:
        out = run_process(
            spec.argv,
            env=spec.env,
            cwd=spec.cwd,
            sink=sink,
            timeout=None,
            stop=threading.Event(),
            tag=f"sec-cgroup/{os.getpid()}/{log.name}",
            supervisor=spec.supervisor,
            pass_fds=spec.pass_fds,
            started=spec.started,
        )
        return out, sink.read_since(start, limit=100_000)
    finally:
        sink.close()


@needs_cgroups
def test_a_fork_bomb_fails_with_vigil_limit_and_leaves_nothing(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_processes=16))
    mine = len(_descendants(os.getpid()))
    sandbox = ws.prepare("bomb")
    assert isinstance(sandbox, OverlaySandbox) and sandbox.cgroup is not None
    dirs = list(sandbox.cgroup.dirs.values())
    assert all(d.is_dir() for d in dirs)
    try:
        out, text = _run(sandbox, ["python3", "-c", FORK_BOMB, "16"], tmp_path / "bomb.log")
        hit = sandbox.limit_hit()
    finally:
        sandbox.discard()
    kids, how = text.split()[:2]
    assert how == "refused" and int(kids) < 16, text
    assert out.exit_code == 0  # the step swallowed the refusal; the limit still counts
    assert hit is not None and hit.code == "VIGIL-LIMIT"
    assert "max_processes = 16" in hit.cause and "max_memory" not in hit.cause
    assert "raise [workspace] max_processes in vigil.toml" in hit.remedy
    # The host is unaffected: the cgroup is gone (so it was empty), nothing of the bomb
    # is left below this test, which can itself start 3 * 16 processes at once.
    assert not any(d.exists() for d in dirs)
    assert len(_descendants(os.getpid())) == mine
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(48)]
    for proc in sleepers:
        proc.kill()
        proc.wait()


@needs_cgroups
def test_memory_of_several_processes_counts_together(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_memory="64M"))
    sandbox = ws.prepare("hog")
    assert isinstance(sandbox, OverlaySandbox)
    try:
        # The control: one process holding 40% of the limit is within it.
        one, one_text = _run(sandbox, ["python3", "-c", HOG, "1", "0.4", "64"], tmp_path / "1")
        after_one = sandbox.limit_hit()
        three, text = _run(sandbox, ["python3", "-c", HOG, "3", "0.4", "64"], tmp_path / "3")
        after_three = sandbox.limit_hit()
    finally:
        sandbox.discard()
    assert one.exit_code == 0 and one_text.split()[:4] == ["held", "1", "exits", "0"]
    assert after_one is None
    # Three such processes exceed it together: the kernel kills one, the attempt fails.
    assert three.exit_code == 0, text
    assert "-9" in text.split(), text
    assert after_three is not None and after_three.code == "VIGIL-LIMIT"
    assert 'max_memory = "64M" (67108864 bytes)' in after_three.cause
    assert "raise [workspace] max_memory in vigil.toml" in after_three.remedy


@needs_cgroups
def test_a_step_within_its_limits_succeeds_and_its_cgroup_goes(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_processes=16, max_memory="64M"))
    sandbox = ws.prepare("fine")
    assert isinstance(sandbox, OverlaySandbox) and sandbox.cgroup is not None
    dirs = list(sandbox.cgroup.dirs.values())
    try:
        script = "for i in 1 2 3 4; do sleep 0 & done; wait; python3 -c 'bytearray(8 << 20)'"
        out, text = _run(sandbox, ["sh", "-c", f"{script} && echo fine"], tmp_path / "fine")
        hit = sandbox.limit_hit()
        # No swap on top of the memory limit (this machine may have no swap to test with).
        memory = sandbox.cgroup.dirs["memory"]
        if (memory / "memory.memsw.limit_in_bytes").exists():
            assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == "67108864"
        if (memory / "memory.swap.max").exists():
            assert (memory / "memory.swap.max").read_text().strip() == "0"
    finally:
        sandbox.discard()
    assert out.exit_code == 0 and text.strip() == "fine", text
    assert hit is None
    assert not any(d.exists() for d in dirs)


@needs_cgroups
def test_discard_kills_what_is_left_in_the_cgroup(tmp_path: Path) -> None:
    """Whatever still runs in the attempt's cgroup when the attempt ends is killed, and the
    cgroup removed: here a process put there directly, outside any sandbox."""
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_processes=16))
    sandbox = ws.prepare("left")
    assert isinstance(sandbox, OverlaySandbox) and sandbox.cgroup is not None
    dirs = list(sandbox.cgroup.dirs.values())
    left = subprocess.Popen(["sleep", "600"])
    try:
        sandbox.cgroup.enter(left.pid)
        assert sandbox.cgroup.members() == [left.pid]
        sandbox.discard()
        assert left.wait() == -9
    finally:
        left.kill()
        left.wait()
    assert not any(d.exists() for d in dirs)


@needs_cgroups
def test_a_sandbox_that_cannot_enter_its_cgroup_never_runs_the_step(tmp_path: Path) -> None:
    """The step starts only once the sandbox is inside the attempt's cgroup; if vigil
    cannot put it there (here the cgroup vanished), the attempt fails with VIGIL-SANDBOX
    and nothing of the sandbox is left running."""
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_processes=16))
    sandbox = ws.prepare("gone")
    assert isinstance(sandbox, OverlaySandbox) and sandbox.cgroup is not None
    mine = len(_descendants(os.getpid()))
    for directory in sandbox.cgroup.dirs.values():
        directory.rmdir()
    try:
        with pytest.raises(SandboxUnavailable) as err:
            _run(sandbox, ["sh", "-c", "echo ran > ran.txt"], tmp_path / "gone.log")
        assert not (sandbox.upper / "ran.txt").exists()
    finally:
        sandbox.discard()
    assert err.value.code == "VIGIL-SANDBOX" and "cgroup" in err.value.cause
    assert len(_descendants(os.getpid())) == mine


@needs_cgroups
def test_through_the_engine_a_limit_hit_is_vigil_limit(tmp_path: Path) -> None:
    """[workspace] limits in vigil.toml reach the attempts' cgroups; each task that hits
    one fails with VIGIL-LIMIT in the journal and its log, naming the limit and the
    remedy; its sibling within the limits succeeds; no cgroup of the run is left."""
    from clitools import status, vigil, write_plan

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text('[workspace]\nmax_processes = 16\nmax_memory = "64M"\n')
    (ws / "bomb.py").write_text(FORK_BOMB)
    (ws / "hog.py").write_text(HOG)
    plan = {
        "name": "limits",
        "project": "limits",
        "phases": [
            {
                "id": "p",
                "tasks": [
                    {
                        "id": "bomb",
                        "run": "python3 bomb.py 16 > bomb.txt",
                        "on_failure": "continue",
                    },
                    {
                        "id": "hog",
                        "run": "python3 hog.py 3 0.4 64 > hog.txt",
                        "on_failure": "continue",
                    },
                    {"id": "fine", "run": "python3 hog.py 1 0.4 64 > fine.txt"},
                ],
            }
        ],
    }
    write_plan(ws / "plan.yaml", plan)
    out = vigil("run", "plan.yaml", "--run-id", "lim", cwd=ws, env={"VIGIL_ISOLATION": "overlay"})
    tasks = {t["id"]: t for t in status("lim", ws)["tasks"]}
    assert tasks["fine"]["state"] == "succeeded", out.stdout + out.stderr
    assert (ws / "fine.txt").read_text().split()[:2] == ["held", "1"]
    for task, limit in (("bomb", "max_processes = 16"), ("hog", 'max_memory = "64M"')):
        assert tasks[task]["state"] == "failed"
        attempt = tasks[task]["attempts"][-1]
        assert attempt["code"] == "VIGIL-LIMIT", attempt
        assert attempt["reason"].startswith("VIGIL-LIMIT: ") and limit in attempt["reason"]
        key = limit.split()[0]
        log = vigil("logs", "lim", task, cwd=ws).stdout
        assert f"remedy: Make the step use less, or raise [workspace] {key} in vigil.toml" in log
        assert not (ws / f"{task}.txt").exists()
    # Every attempt's cgroup went with it.
    scope = re.sub(r"[^A-Za-z0-9._-]+", "_", run_tag(ws.resolve(), "lim"))
    for hierarchy in ENFORCED.hierarchies:
        assert not [p for p in hierarchy.parent.iterdir() if scope in p.name]
    doctor = json.loads(vigil("doctor", "--format", "json", cwd=ws).stdout)
    assert doctor["limits"]["mechanism"] == ENFORCED.mechanism != "rlimits"
    assert doctor["limits"]["meaning"] == CGROUP_MEANING


@needs_fallback
def test_without_cgroups_rlimits_bound_each_process_and_doctor_says_so(tmp_path: Path) -> None:
    """The documented fallback: doctor names rlimits and what they mean, and the data
    limit still stops one process allocating more than max_memory; the hit is the step's
    own failure, not VIGIL-LIMIT."""
    from clitools import vigil

    project = tmp_path / "cli"
    project.mkdir()
    (project / "vigil.toml").write_text('[workspace]\nmax_memory = "64M"\n')
    out = vigil("doctor", "--format", "json", cwd=project)
    assert out.returncode == 0, out.stderr
    doctor = json.loads(out.stdout)
    assert doctor["limits"]["mechanism"] == "rlimits"
    assert doctor["limits"]["meaning"] == RLIMIT_MEANING
    assert "per process" in RLIMIT_MEANING and "the step's own failure" in RLIMIT_MEANING
    ws = make_workspace(tmp_path, settings=SandboxSettings(max_memory="64M"))
    sandbox = ws.prepare("rlimit")
    assert isinstance(sandbox, OverlaySandbox) and sandbox.cgroup is None
    try:
        big, big_text = _run(
            sandbox, ["python3", "-c", "b = bytearray(128 << 20); print('held')"], tmp_path / "b"
        )
        big_hit = sandbox.limit_hit()
        small, small_text = _run(
            sandbox, ["python3", "-c", "b = bytearray(16 << 20); print('held')"], tmp_path / "s"
        )
    finally:
        sandbox.discard()
    assert big.exit_code != 0 and "MemoryError" in big_text and "held" not in big_text
    assert big_hit is None
    assert small.exit_code == 0 and small_text.strip() == "held"
