"""A task without the network that fails for want of it is told so, with the fix; a plan
check lists the grants a run needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import vigil, write_plan
from test_workspace_support import overlay_available
from vigil.engine.offline import symptom

LOOKUP = "python3 -c \"import socket; socket.getaddrinfo('pypi.org', 443)\""
CONNECT = "python3 -c \"import socket; socket.create_connection(('10.255.255.1', 80), 5)\""


@pytest.mark.skipif(not overlay_available(), reason="needs userns + overlayfs")
def test_an_offline_failure_is_explained_in_summary_report_and_postmortem(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        tmp_path / "p.yaml",
        {
            "name": "n",
            "project": "n",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "install", "run": LOOKUP},
                        {
                            "id": "upload",
                            "run": CONNECT,
                            "on_failure": "continue",
                        },
                        {
                            "id": "broken",
                            "run": "echo 'assert 1 == 2'; exit 3",
                            "on_failure": "continue",
                        },
                    ],
                }
            ],
        },
    )
    out = vigil("run", str(tmp_path / "p.yaml"), "--run-id", "o1", cwd=ws)
    assert out.returncode == 1, out.stdout + out.stderr
    said = " ".join(out.stdout.split())
    for task, seen in (("install", "name resolution"), ("upload", "Network is unreachable")):
        assert f"`{task}` has no network" in said and seen in said
        assert f"add `requires: [network]` to task `{task}`" in said
    assert "`broken` has no network" not in said
    report = json.loads(vigil("report", "o1", "--format", "json", cwd=ws).stdout)
    advice = [r for r in report["recommendations"] if "has no network" in r]
    assert len(advice) == 2 and all("requires: [network]" in r for r in advice)
    md = vigil("report", "o1", cwd=ws).stdout
    assert "`install` has no network" in md
    pm = vigil("postmortem", "o1", cwd=ws).stdout
    change = pm.split("## What to change", 1)[1].split("##", 1)[0]
    first = change.strip().splitlines()[0]
    assert first.startswith("- `install` has no network") and "requires: [network]" in first
    # Neither a fallback nor a retry would give it the network.
    assert "`install` is critical and has no `fallback`" not in change
    assert "`install` failed on its only attempt" not in change
    status = json.loads(vigil("status", "o1", "--format", "json", cwd=ws).stdout)
    install = next(t for t in status["tasks"] if t["id"] == "install")
    assert "name resolution" in install["attempts"][-1]["no_network"]


def test_plan_check_lists_the_grants_a_run_needs(tmp_path: Path) -> None:
    write_plan(
        tmp_path / "p.yaml",
        {
            "name": "n",
            "project": "shop",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "fetch", "run": "true", "requires": ["network"]},
                        {"id": "build", "run": "true"},
                    ],
                },
                {
                    "id": "ship",
                    "environment": "prod",
                    "tasks": [{"id": "deploy", "run": "true", "requires": ["deploy"]}],
                },
            ],
        },
    )
    out = vigil("plan", "check", "p.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "dev: network (tasks fetch)" in out.stdout
    assert "prod: run, deploy (tasks deploy)" in out.stdout  # prod guards any run
    assert "vigil grant create --project shop" in out.stdout
    data = json.loads(vigil("plan", "check", "p.yaml", "--format", "json", cwd=tmp_path).stdout)
    needed = {g["environment"]: g for g in data["grants_needed"]}
    assert needed["dev"]["tasks"] == ["fetch"] and needed["dev"]["capabilities"] == ["network"]
    assert "deploy" in needed["prod"]["capabilities"]
    assert data["grant_command"].startswith("vigil grant create --project shop")
    write_plan(
        tmp_path / "q.yaml",
        {
            "name": "q",
            "project": "q",
            "phases": [{"id": "p", "tasks": [{"id": "t", "run": "true"}]}],
        },
    )
    quiet = vigil("plan", "check", "q.yaml", cwd=tmp_path)
    assert "grants: none needed" in quiet.stdout


@pytest.mark.parametrize(
    "line",
    [
        "socket.gaierror: [Errno -3] Temporary failure in name resolution",
        "curl: (6) Could not resolve host: pypi.org",
        "WARNING: Retrying ... NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection"
        " object>: Failed to establish a new connection: [Errno 101] Network is unreachable')",
        "npm ERR! request to https://registry.npmjs.org/x failed, reason: getaddrinfo EAI_AGAIN",
        "fatal: unable to access 'https://github.com/x/y/': Could not resolve host: github.com",
        "ConnectionRefusedError: [Errno 111] Connection refused",
    ],
)
def test_the_usual_clients_offline_messages_are_recognised(line: str) -> None:
    assert symptom(f"collecting\n{line}\nexit 1\n") == line.strip()[:157] + (
        "..." if len(line.strip()) > 160 else ""
    )


def test_ordinary_failures_are_not_taken_for_a_missing_network() -> None:
    assert symptom("FAILED tests/test_x.py::test_y - assert 1 == 2\n1 failed in 0.1s\n") is None
