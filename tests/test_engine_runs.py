"""Runs end to end through the library: real subprocesses, real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from enginetools import Harness, make_plan, one_phase
from vigil.report import build_report, load_state


@pytest.fixture
def h(tmp_path: Path, sqlite_store_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("VIGIL_DATABASE_URL", sqlite_store_url)
    harness = Harness(tmp_path / "workspace", sqlite_store_url)
    yield harness
    harness.store.close()


@pytest.fixture
def hb(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A harness on each backend."""
    monkeypatch.setenv("VIGIL_DATABASE_URL", store_url)
    harness = Harness(tmp_path / "workspace", store_url)
    yield harness
    harness.store.close()


def test_failure_blocks_only_dependents(hb: Harness) -> None:
    plan = one_phase(
        {"id": "a", "run": "exit 3"},
        {"id": "b", "run": "touch b", "needs": ["a"]},
        {"id": "b2", "run": "touch b2", "needs": ["b"]},
        {"id": "c", "run": "sleep 0.2; touch c"},
        {"id": "d", "run": "touch d", "needs": ["c"]},
    )
    out = hb.run(plan)
    assert out.state == "failed"
    states = {t["id"]: t["state"] for t in hb.view(out.run_id)["tasks"]}
    assert states == {
        "a": "failed",
        "b": "skipped",
        "b2": "skipped",
        "c": "succeeded",
        "d": "succeeded",
    }
    assert (hb.workspace / "c").exists() and (hb.workspace / "d").exists()
    assert not (hb.workspace / "b").exists()
    a = hb.task(out.run_id, "a")
    assert a["attempts"][0]["exit_code"] == 3
    assert hb.task(out.run_id, "b")["blocked_by"] == "a"


def test_non_critical_failure_keeps_the_run_green(hb: Harness) -> None:
    plan = one_phase(
        {"id": "lint", "run": "false", "on_failure": "continue"}, {"id": "ok", "run": "true"}
    )
    out = hb.run(plan)
    assert out.state == "succeeded"
    assert hb.task(out.run_id, "lint")["state"] == "failed"


@pytest.mark.slow
def test_retry_backoff_delays_grow(hb: Harness) -> None:
    # A failed attempt's files are discarded, so the attempt number tells retries apart.
    script = 'test "$VIGIL_ATTEMPT" -ge 4'
    plan = one_phase(
        {
            "id": "flaky",
            "run": script,
            "retry": {"attempts": 4, "initial": 0.2, "factor": 2, "jitter": 0},
        }
    )
    out = hb.run(plan)
    assert out.state == "succeeded"
    _, state = load_state(hb.store, out.run_id)
    attempts = state.tasks["flaky"].attempts
    assert [a.state for a in attempts] == ["failed", "failed", "failed", "succeeded"]
    gaps = [
        b.started_at - a.ended_at for a, b in itertools.pairwise(attempts) if a.ended_at is not None
    ]
    for gap, expected in zip(gaps, [0.2, 0.4, 0.8], strict=True):
        assert gap >= expected - 0.01, (gaps, expected)
    assert gaps[0] < gaps[1] < gaps[2]
    report = build_report(hb.view(out.run_id))
    assert any("flaky" in r and "Flaky" in r for r in report["recommendations"])


def test_retry_only_on_listed_exit_codes(hb: Harness) -> None:
    plan = one_phase(
        {"id": "t", "run": "exit 7", "retry": {"attempts": 3, "initial": 0, "on": [75]}},
        {
            "id": "u",
            "run": 'test "$VIGIL_ATTEMPT" -ge 2',
            "retry": {"attempts": 3, "initial": 0, "on": [1]},
        },
    )
    out = hb.run(plan)
    assert len(hb.task(out.run_id, "t")["attempts"]) == 1
    assert len(hb.task(out.run_id, "u")["attempts"]) == 2


def test_fallback_marks_degraded(hb: Harness) -> None:
    plan = one_phase(
        {
            "id": "deploy",
            "run": "false",
            "fallback": "echo fallback > used",
            "retry": {"attempts": 2, "initial": 0},
        }
    )
    out = hb.run(plan)
    assert out.state == "succeeded"
    t = hb.task(out.run_id, "deploy")
    assert t["degraded"] is True
    assert [a["command"] for a in t["attempts"]] == ["main", "main", "fallback"]
    assert (hb.workspace / "used").read_text() == "fallback\n"
    report = build_report(hb.view(out.run_id))
    assert report["summary"]["degraded"] == 1


@pytest.mark.parametrize("isolation", ["overlay", "off"])
def test_timeout_ends_the_whole_process_tree(
    h: Harness, isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vigil.executors.process import tagged_processes
    from vigil.layout import run_tag

    monkeypatch.setenv("VIGIL_ISOLATION", isolation)
    script = "(sleep 300 & echo $! > gc.new && mv gc.new grandchild.pid; wait) & sleep 300"
    # The timeout must strike after the grandchild started. Where a loaded machine had not
    # even started it within the bound, the test tries again with a longer one: the
    # machine's speed changes how long the test takes, not its outcome.
    for bound in ("1s", "5s", "30s", "120s"):
        plan = one_phase({"id": "hang", "run": script, "timeout": bound})
        out = h.run(plan, run_id=f"timeout-{isolation}-{bound}")
        assert out.state == "failed"
        t = h.task(out.run_id, "hang")
        assert t["attempts"][0]["state"] == "timed_out"
        assert not tagged_processes(run_tag(h.workspace.resolve(), out.run_id)), (
            "a process of the timed-out task outlived it"
        )
        pid_file = h.workspace / "grandchild.pid"
        if isolation == "overlay":
            assert not pid_file.exists(), "a failed attempt's file landed"
            return
        if pid_file.exists():
            assert not _alive(int(pid_file.read_text()))
            return
    pytest.fail("the grandchild never started before the timeout, whatever the timeout")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_validation_decides_success(hb: Harness) -> None:
    plan = one_phase(
        {"id": "gen", "run": "echo hi > out.txt", "validate": ["grep -q hi out.txt"]},
        {"id": "bad", "run": "echo bye > other.txt", "validate": ["grep -q hi other.txt"]},
    )
    out = hb.run(plan)
    assert hb.task(out.run_id, "gen")["state"] == "succeeded"
    bad = hb.task(out.run_id, "bad")
    assert bad["state"] == "failed"
    assert "validation" in bad["attempts"][0]["reason"]


def test_phase_validation_blocks_the_next_phase(hb: Harness) -> None:
    plan = make_plan(
        [
            {
                "id": "build",
                "tasks": [{"id": "b", "run": "true"}],
                "validate": ["test -f artifact"],
            },
            {"id": "deploy", "tasks": [{"id": "d", "run": "touch deployed"}]},
        ]
    )
    out = hb.run(plan)
    assert out.state == "failed"
    view = hb.view(out.run_id)
    assert [p["state"] for p in view["phases"]] == ["failed", "failed"]
    assert hb.task(out.run_id, "d")["state"] == "skipped"
    assert not (hb.workspace / "deployed").exists()


def test_phase_validation_passes_then_next_phase_runs(hb: Harness) -> None:
    plan = make_plan(
        [
            {
                "id": "build",
                "tasks": [{"id": "b", "run": "touch artifact"}],
                "validate": "test -f artifact",
            },
            {"id": "deploy", "tasks": [{"id": "d", "run": "test -f artifact && touch deployed"}]},
        ]
    )
    out = hb.run(plan)
    assert out.state == "succeeded"
    assert (hb.workspace / "deployed").exists()


def test_critical_failure_stops_later_phases_but_not_its_own(hb: Harness) -> None:
    plan = make_plan(
        [
            {"id": "build", "tasks": [{"id": "x", "run": "false"}, {"id": "y", "run": "touch y"}]},
            {"id": "deploy", "tasks": [{"id": "d", "run": "touch deployed"}]},
        ]
    )
    out = hb.run(plan)
    assert out.state == "failed"
    assert (hb.workspace / "y").exists()
    assert not (hb.workspace / "deployed").exists()


def test_run_id_is_idempotent(hb: Harness) -> None:
    plan = one_phase({"id": "once", "run": "echo ran >> ran.txt"})
    first = hb.run(plan, run_id="nightly-1")
    second = hb.run(plan, run_id="nightly-1")
    assert first.state == second.state == "succeeded"
    assert second.resumed
    assert (hb.workspace / "ran.txt").read_text() == "ran\n"


def test_steps_get_vigil_variables_and_plan_env(hb: Harness) -> None:
    plan = make_plan(
        [
            {
                "id": "p",
                "tasks": [
                    {
                        "id": "env",
                        "run": "env | grep -E '^(VIGIL_|GREETING|LOCAL)' | sort > env.txt",
                        "env": {"LOCAL": "yes"},
                    }
                ],
            }
        ],
        env={"GREETING": "hello"},
    )
    out = hb.run(plan, run_id="envrun")
    lines = (hb.workspace / "env.txt").read_text().splitlines()
    assert "VIGIL_RUN_ID=envrun" in lines
    assert "VIGIL_TASK_ID=env" in lines
    assert "VIGIL_ATTEMPT=1" in lines
    assert "GREETING=hello" in lines and "LOCAL=yes" in lines
    assert out.state == "succeeded"


def test_parallel_tasks_really_overlap(hb: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # A barrier, not a stopwatch: each task waits until all four have started, which can
    # only happen if they run at the same time (a serial run would time out and fail).
    monkeypatch.setenv("VIGIL_ISOLATION", "off")  # the barrier lives in the shared tree
    barrier = (
        'mkdir -p bar && touch "bar/$VIGIL_TASK_ID"; '
        "while [ $(ls bar | wc -l) -lt 4 ]; do sleep 0.05; done"
    )
    plan = one_phase(*[{"id": f"t{i}", "run": barrier, "timeout": "120s"} for i in range(4)])
    out = hb.run(plan, max_parallel=4)
    assert out.state == "succeeded", hb.view(out.run_id)


@pytest.mark.slow
def test_max_parallel_limits_concurrency(hb: Harness) -> None:
    plan = one_phase(*[{"id": f"t{i}", "run": "sleep 0.2"} for i in range(4)])
    out = hb.run(plan, max_parallel=1)
    _, state = load_state(hb.store, out.run_id)
    spans = sorted(
        (ts.attempts[0].started_at, ts.attempts[0].ended_at or 0) for ts in state.tasks.values()
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end


def test_logs_are_captured_and_capped(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_LOG_MAX_BYTES", str(64 * 1024))
    script = "for i in $(seq 1 20000); do echo line-$i; done; echo THE-END"
    plan = one_phase({"id": "noisy", "run": script})
    out = h.run(plan)
    log = h.config.state_dir / "logs" / out.run_id / "noisy" / "1.log"
    text = log.read_text()
    assert "line-1\n" in text
    assert "THE-END" in text
    assert log.stat().st_size < 200_000


def test_bad_workdir_fails_the_task_not_the_run_engine(hb: Harness) -> None:
    plan = one_phase({"id": "w", "run": "true", "workdir": "missing"}, {"id": "ok", "run": "true"})
    out = hb.run(plan)
    assert hb.task(out.run_id, "w")["state"] == "failed"
    assert hb.task(out.run_id, "ok")["state"] == "succeeded"
