"""Nothing a command starts outlives vigil's cleanup: what it leaves running in its process
group when it exits is killed, and a tagged process that ignores SIGTERM is killed when
its run is cleaned up (resume, cancel of a stuck attempt). Real processes, real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import uuid
from pathlib import Path

from clitools import alive
from enginetools import HANG
from vigil.executors.process import (
    TAG_VARIABLE,
    LogSink,
    end_tagged,
    run_process,
    tagged_processes,
)


def test_what_a_finished_command_left_in_its_group_is_killed(tmp_path: Path) -> None:
    sink = LogSink(tmp_path / "left.log")
    try:
        out = run_process(
            ["sh", "-c", "sleep 300 & echo left=$!"],
            env={"PATH": os.environ["PATH"]},
            cwd=tmp_path,
            sink=sink,
            timeout=None,
            stop=threading.Event(),
            tag=f"cleanup-{uuid.uuid4().hex}/left",
        )
    finally:
        sink.close()
    found = re.search(r"left=(\d+)", (tmp_path / "left.log").read_text())
    assert found, (tmp_path / "left.log").read_text()
    left = int(found.group(1))
    try:
        assert out.exit_code == 0 and out.survivors == ()
        assert not alive(left), "a process the command left behind outlived it"
    finally:
        if alive(left):
            os.kill(left, signal.SIGKILL)


def test_a_tagged_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    tag = f"cleanup-{uuid.uuid4().hex}/stubborn"
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
        env={"PATH": os.environ["PATH"], TAG_VARIABLE: tag},
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        found = end_tagged(tag, grace=0.2)
        assert proc.pid in found
        assert not tagged_processes(tag), "a tagged process outlived the cleanup"
        assert proc.wait(timeout=HANG) == -signal.SIGKILL  # SIGTERM was ignored
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
