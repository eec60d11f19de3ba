"""The ``vigil`` command as a person uses it: real processes, signals, exit codes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from clitools import alive, kill9, spawn, status, tagged, vigil, wait_for, write_plan
from enginetools import HANG
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(tmp_path: Path, backend: str) -> Path:
    """A workspace whose commands use each store in turn (see conftest ``backend``)."""
    path = tmp_path / "ws"
    path.mkdir()
    return path


def plan_of(*tasks: dict[str, object]) -> dict[str, object]:
    return {"name": "cli", "project": "cli", "phases": [{"id": "main", "tasks": list(tasks)}]}


def test_exit_codes_and_json(ws: Path) -> None:
    write_plan(ws / "ok.yaml", plan_of({"id": "a", "run": "true"}))
    write_plan(ws / "bad.yaml", plan_of({"id": "a", "run": "false"}))
    ok = vigil("run", "ok.yaml", "--format", "json", "--run-id", "r-ok", cwd=ws)
    assert ok.returncode == ExitCode.OK, ok.stderr
    view = json.loads(ok.stdout)
    assert view["id"] == "r-ok" and view["state"] == "succeeded"
    assert {"id", "plan", "state", "started_at", "ended_at", "tasks"} <= view.keys()
    task = view["tasks"][0]
    assert {"id", "phase", "state", "degraded", "attempts"} <= task.keys()
    assert {"number", "state", "exit_code", "started_at", "ended_at", "reason"} <= (
        task["attempts"][0].keys()
    )
    bad = vigil("run", "bad.yaml", cwd=ws)
    assert bad.returncode == ExitCode.RUN_FAILED
    missing = vigil("run", "nope.yaml", cwd=ws)
    assert missing.returncode == ExitCode.USAGE
    assert "VIGIL-" in missing.stderr and "Traceback" not in missing.stderr
    unknown = vigil("status", "no-such-run", cwd=ws)
    assert unknown.returncode == ExitCode.USAGE
    assert "VIGIL-RUN-NOT-FOUND" in unknown.stderr


def test_runs_logs_and_report(ws: Path) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "hello", "run": "echo hello-output"}))
    assert vigil("run", "p.yaml", "--run-id", "r1", cwd=ws).returncode == 0
    listing = json.loads(vigil("runs", "--format", "json", cwd=ws).stdout)
    assert [r["id"] for r in listing] == ["r1"]
    logs = vigil("logs", "r1", "hello", cwd=ws)
    assert "hello-output" in logs.stdout
    md = vigil("report", "r1", cwd=ws)
    assert "# Run r1: SUCCEEDED" in md.stdout
    js = json.loads(vigil("report", "r1", "--format", "json", cwd=ws).stdout)
    assert js["summary"]["succeeded"] == 1
    # The command installs the follow-up: the run wrote its report when it ended.
    written = ws / ".vigil" / "reports"
    assert (written / "r1.md").read_text().startswith("# Run r1: SUCCEEDED")
    assert json.loads((written / "r1.json").read_text()) == js


def test_status_of_a_large_run_lists_what_did_not_succeed(ws: Path) -> None:
    tasks: list[dict[str, object]] = [{"id": f"t{i}", "run": "true"} for i in range(59)]
    tasks.append({"id": "broken", "run": "exit 3", "on_failure": "continue"})
    write_plan(ws / "big.yaml", plan_of(*tasks))
    env = {"VIGIL_ISOLATION": "off"}
    vigil("run", "big.yaml", "--run-id", "big", "-j", "4", cwd=ws, env=env)
    out = vigil("status", "big", cwd=ws).stdout
    assert "60 tasks: 1 failed, 59 succeeded" in out
    assert "broken" in out and "t17" not in out.split()
    assert "59 succeeded tasks are not listed; `vigil status big --all`" in out
    every = vigil("status", "big", "--all", cwd=ws).stdout.split()
    assert {f"t{i}" for i in range(59)} <= set(every) and "broken" in every
    # JSON always holds every task.
    assert len(json.loads(vigil("status", "big", "-o", "json", cwd=ws).stdout)["tasks"]) == 60


def test_second_driver_gets_run_locked(ws: Path, backend: str) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "slow", "run": "sleep 300"}))
    first = spawn("run", "p.yaml", "--run-id", f"locked-{backend}", cwd=ws)
    try:
        wait_for(lambda: bool(tagged(f"locked-{backend}/slow/", ws)))
        second = vigil("resume", f"locked-{backend}", cwd=ws)
        assert second.returncode == ExitCode.REFUSED
        assert "VIGIL-RUN-LOCKED" in second.stderr
    finally:
        kill9(first)


def _pid_in(path: Path) -> bool:
    try:
        return path.read_text().strip().isdigit()
    except FileNotFoundError:
        return False


def test_kill9_takes_the_tasks_processes_along_and_resume_finishes(ws: Path, backend: str) -> None:
    script = (
        'if [ "$VIGIL_ATTEMPT" = 1 ]; then\n'
        "  (sleep 300 & echo $! > grandchild.pid; wait) &\n"
        "  echo $$ > child.pid\n"
        "  sleep 300\n"
        "else\n"
        # A zombie (dead, not yet reaped by init) does not count as alive; a process already
        # reaped has no stat file (the script runs under `bash -e -o pipefail`).
        "  gc=/proc/$(cat grandchild.pid)/stat\n"
        '  st=$({ sed "s/.*) //" "$gc" 2>/dev/null || true; } | cut -c1)\n'
        '  if [ -n "$st" ] && [ "$st" != Z ]; then echo still-alive; exit 9; fi\n'
        "  echo second > done\n"
        "fi\n"
    )
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": script}))
    # Without isolation the pid files written by attempt 1 stay visible to attempt 2.
    off = {"VIGIL_ISOLATION": "off"}
    proc = spawn("run", "p.yaml", "--run-id", f"k9-{backend}", cwd=ws, env=off)
    # Written, not only created: `echo $! > f` creates the file before it writes the pid.
    wait_for(lambda: _pid_in(ws / "grandchild.pid") and _pid_in(ws / "child.pid"))
    child = int((ws / "child.pid").read_text())
    kill9(proc)
    # The direct child dies with vigil (parent-death signal).
    wait_for(lambda: not alive(child), timeout=HANG)
    resumed = vigil("resume", f"k9-{backend}", cwd=ws, env=off)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    grandchild = int((ws / "grandchild.pid").read_text())
    assert not alive(grandchild)
    assert (ws / "done").read_text() == "second\n"
    attempts = status(f"k9-{backend}", ws)["tasks"][0]["attempts"]
    assert [a["state"] for a in attempts] == ["interrupted", "succeeded"]


def test_kill9_in_a_sandbox_takes_the_whole_attempt_along(ws: Path, backend: str) -> None:
    script = "(sleep 300 &) ; setsid sleep 300 & sleep 300"
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": script}))
    proc = spawn("run", "p.yaml", "--run-id", f"ns-{backend}", cwd=ws)
    wait_for(lambda: len(tagged(f"ns-{backend}/t/1", ws)) >= 4)
    kill9(proc)
    # No resume needed: the sandbox's pid namespace dies with vigil.
    wait_for(lambda: not tagged(f"ns-{backend}/", ws), timeout=HANG)


def test_ctrl_c_stops_gracefully_and_run_stays_resumable(ws: Path, backend: str) -> None:
    script = 'if [ "$VIGIL_ATTEMPT" = 1 ]; then sleep 300; fi; echo ok > done'
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": script}, {"id": "u", "run": "true"}))
    proc = spawn("run", "p.yaml", "--run-id", f"cc-{backend}", cwd=ws)
    wait_for(lambda: bool(tagged(f"cc-{backend}/t/", ws)))
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == ExitCode.CANCELLED, err
    assert not tagged(f"cc-{backend}/", ws)
    view = status(f"cc-{backend}", ws)
    # Nobody drives it now: it shows as interrupted, with the command that continues it.
    assert view["state"] == "interrupted" and view["resume"] == f"vigil resume cc-{backend}"
    t = next(x for x in view["tasks"] if x["id"] == "t")
    assert t["attempts"][0]["state"] == "interrupted"
    resumed = vigil("resume", f"cc-{backend}", cwd=ws)
    assert resumed.returncode == 0
    assert status(f"cc-{backend}", ws)["state"] == "succeeded"


def test_cancel_from_another_terminal(ws: Path, backend: str) -> None:
    script = "(sleep 300 & wait) & setsid sleep 300 & sleep 300"
    write_plan(
        ws / "p.yaml",
        plan_of({"id": "t", "run": script}, {"id": "later", "run": "true", "needs": ["t"]}),
    )
    proc = spawn("run", "p.yaml", "--run-id", f"cx-{backend}", cwd=ws)
    wait_for(lambda: len(tagged(f"cx-{backend}/t/1", ws)) >= 4)
    out = vigil("cancel", f"cx-{backend}", "--reason", "going home", cwd=ws)
    assert out.returncode == 0, out.stderr
    _, err = proc.communicate(timeout=HANG)
    assert proc.returncode == ExitCode.CANCELLED, err
    assert not tagged(f"cx-{backend}/", ws)
    view = status(f"cx-{backend}", ws)
    assert view["state"] == "cancelled"
    assert {t["id"]: t["state"] for t in view["tasks"]} == {"t": "cancelled", "later": "cancelled"}


def test_cancel_without_a_driver(ws: Path, backend: str) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "t", "run": "sleep 300"}))
    proc = spawn("run", "p.yaml", "--run-id", f"orphan-{backend}", cwd=ws)
    wait_for(lambda: bool(tagged(f"orphan-{backend}/t/", ws)))
    kill9(proc)
    out = vigil("cancel", f"orphan-{backend}", cwd=ws)
    assert out.returncode == 0, out.stderr
    assert status(f"orphan-{backend}", ws)["state"] == "cancelled"
    assert not tagged(f"orphan-{backend}/", ws)
    # `cancel` settled the run itself, so it wrote the report the killed driver could not.
    report = ws / ".vigil" / "reports" / f"orphan-{backend}.md"
    assert report.read_text().startswith(f"# Run orphan-{backend}: CANCELLED")


def test_resume_all(ws: Path) -> None:
    write_plan(
        ws / "p.yaml", plan_of({"id": "t", "run": 'test "$VIGIL_ATTEMPT" != 1 || sleep 300'})
    )
    for rid in ("ra", "rb"):
        proc = spawn("run", "p.yaml", "--run-id", rid, cwd=ws)
        wait_for(lambda rid=rid: bool(tagged(f"{rid}/t/", ws)))
        kill9(proc)
    out = vigil("resume", "--all", cwd=ws)
    assert out.returncode == 0, out.stdout + out.stderr
    assert status("ra", ws)["state"] == status("rb", ws)["state"] == "succeeded"


def test_plan_errors_are_reported_not_raised(ws: Path) -> None:
    (ws / "bad.yaml").write_text(
        "name: x\nproject: y\nphases:\n  - id: a\n    tasks:\n"
        "      - id: t\n        run: true\n        nedes: [q]\n"
    )
    out = vigil("plan", "check", "bad.yaml", cwd=ws)
    assert out.returncode == ExitCode.USAGE
    assert "bad.yaml:8:" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("example", ["examples/release.yaml", "examples/runbook.md"])
def test_the_examples_run_as_the_readme_says(ws: Path, example: str) -> None:
    root = Path(__file__).resolve().parent.parent
    out = vigil("run", str(root / example), "--workspace", str(ws), cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "succeeded" in out.stdout


def test_a_run_id_reused_in_another_workspace_is_left_alone(tmp_path: Path) -> None:
    """Run ids are unique per store, not per machine: resuming a crashed run in one
    workspace ends that run's leftovers, never the processes of a same-named run in
    another workspace."""
    off = {"VIGIL_ISOLATION": "off"}
    script = "sleep 300 & echo $! > child.pid; wait"
    spaces = []
    for name in ("a", "b"):
        ws = tmp_path / name
        ws.mkdir()
        write_plan(ws / "p.yaml", plan_of({"id": "t", "run": script}))
        spaces.append((ws, spawn("run", "p.yaml", "--run-id", "same", cwd=ws, env=off)))
    for ws, _ in spaces:
        wait_for(lambda ws=ws: (ws / "child.pid").exists() and (ws / "child.pid").read_text() != "")
    (ws_a, proc_a), (ws_b, proc_b) = spaces
    # The first driver dies; its step's child survives it (it left the process group).
    child_a = int((ws_a / "child.pid").read_text())
    child_b = int((ws_b / "child.pid").read_text())
    kill9(proc_a)
    resumed = spawn("resume", "same", cwd=ws_a, env=off)
    wait_for(lambda: not alive(child_a))
    assert alive(child_b), "resuming one workspace's run ended another workspace's step"
    assert proc_b.poll() is None
    for proc in (resumed, proc_b):
        proc.kill()
        proc.wait(timeout=HANG)
