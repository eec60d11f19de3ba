"""Running the real ``vigil`` command in tests."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

VIGIL = [sys.executable, "-m", "vigil.cli.main"]

PG_BASE_URL = os.environ.get(
    "VIGIL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""The PostgreSQL server the tests use; each test gets a fresh database on it."""

STORE_ENV: dict[str, str] = {}
"""Variables every command gets (set by the ``backend`` fixture: which store to use)."""


def store_url_of(ws: Path) -> str:
    """The store the commands of this test use in workspace ``ws``."""
    return STORE_ENV.get("VIGIL_DATABASE_URL") or f"sqlite:///{ws / '.vigil' / 'vigil.db'}"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(STORE_ENV)
    env.update(extra or {})
    return env


def vigil(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VIGIL, *args],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*VIGIL, *args],
        cwd=cwd,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def write_plan(path: Path, plan: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def status(run_id: str, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = vigil("status", run_id, "--format", "json", cwd=cwd, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def wait_for(predicate: Any, timeout: float = 120.0, interval: float = 0.05) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def tagged(prefix: str, workspace: Path) -> list[int]:
    """Live processes of runs in ``workspace`` whose tag, after the workspace's scope,
    starts with ``prefix`` (``RUN/``, ``RUN/TASK/``...): see :func:`vigil.layout.run_tag`.

    Only this workspace's: run ids repeat across tests, xdist workers and other checkouts'
    suites on the same machine, so a prefix alone could see (or wait for) their processes.
    """
    from vigil.executors.process import TAG_VARIABLE
    from vigil.layout import run_tag

    wanted = run_tag(workspace.resolve(), "").removesuffix("/") + prefix
    needle = f"{TAG_VARIABLE}=".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"/proc/{entry}/environ", "rb") as fh:
                items = fh.read().split(b"\0")
        except (OSError, IndexError):
            continue
        for item in items:
            if item.startswith(needle):
                tag = item[len(needle) :].decode(errors="replace")
                if tag.startswith(wanted):
                    found.append(int(entry))
    return found


def kill9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def send_step(port: int, word: str) -> str:
    """A step's command that sends ``word`` to the host's 127.0.0.1:``port``."""
    import shlex

    code = (
        f"import socket; s = socket.create_connection(('127.0.0.1', {port}), timeout=5); "
        f"s.sendall(b'{word}'); s.close()"
    )
    return f"python3 -c {shlex.quote(code)}"


def on_a_terminal(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """What ``vigil ARGS`` prints when its stdout is a terminal (a real pseudo-terminal),
    control sequences removed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*VIGIL, *args],
        cwd=cwd,
        env=cli_env({**(env or {}), "COLUMNS": "200", "TERM": "xterm"}),
        stdout=follower,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=120)
    os.close(leader)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
