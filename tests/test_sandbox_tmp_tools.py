"""Programs installed under /tmp (a CI checkout's virtualenv) stay usable in the sandbox,
read-only, although the sandbox's /tmp is otherwise private and empty."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clitools import status, vigil, write_plan

pytestmark = pytest.mark.slow


def test_a_tool_under_tmp_on_path_runs_read_only(tmp_path: Path) -> None:
    assert str(tmp_path).startswith("/tmp/"), "the test needs its files under /tmp"
    tools = tmp_path / "tools" / "bin"
    tools.mkdir(parents=True)
    hello = tools / "say-hello"
    hello.write_text("#!/bin/sh\necho hello from a tool > greeting.txt\n")
    hello.chmod(0o755)
    (tmp_path / "tools" / "secret-scratch").write_text("private\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        ws / "p.yaml",
        {
            "name": "tools",
            "project": "tools",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "use", "run": "say-hello"},
                        {"id": "tamper", "run": f"echo evil > {hello}", "on_failure": "continue"},
                        {
                            "id": "peek",
                            "run": f"cat {tmp_path / 'tools' / 'secret-scratch'}",
                            "on_failure": "continue",
                        },
                    ],
                }
            ],
        },
    )
    env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    out = vigil("run", "p.yaml", "--run-id", "t", cwd=ws, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    states = {t["id"]: t["state"] for t in status("t", ws, env=env)["tasks"]}
    assert states == {"use": "succeeded", "tamper": "failed", "peek": "failed"}
    assert (ws / "greeting.txt").read_text() == "hello from a tool\n"
    assert "echo hello" in hello.read_text()
