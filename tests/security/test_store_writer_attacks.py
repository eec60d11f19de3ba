"""Attacks of a store writer on the signed journal (ADR 0008): none makes vigil act.

A writer of the store (SQLite file or PostgreSQL rows) cannot forge what vigil's own
processes sign. What it still controls are the four kinds appended unsigned
(``run.cancel_requested``, ``escalation.answered``, ``review.decided``, ``rollback.done``)
and everything a person is *shown* before deciding (folded without the check). Each test
below is an attack of that writer, done the way a persistent one would: with a trigger in
the store, so no race with the person's command is needed. Each asserts what must hold:
nothing the person rejected, cancelled or was not shown ships. Every attack runs on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_forged_journal import ASK_PLAN, REVIEW_PLAN, engine_of, first, rows, set_data

from clitools import kill9, spawn, status, vigil, wait_for, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow


def install_trigger(url: str, name: str, *, sqlite: str, plpgsql: str, timing: str) -> None:
    """A trigger on the events table: ``sqlite`` is the body of a SQLite trigger, ``plpgsql``
    that of a PostgreSQL trigger function (row level, ``timing`` INSERT)."""
    engine = engine_of(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql(f"CREATE TRIGGER {name} {timing} INSERT ON events {sqlite}")
            else:
                conn.exec_driver_sql(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    f"BEGIN {plpgsql} END $$"
                )
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {name} {timing} INSERT ON events "
                    f"FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
    finally:
        engine.dispose()


def question_of(url: str, run_id: str, task: str) -> dict[str, Any]:
    """The open question's row, as the attacker reads it from the store."""
    return first(url, run_id, "escalation.opened", task)


def asked(url: str, run_id: str) -> bool:
    """Whether the run's question is open yet (its store may not exist yet)."""
    try:
        return any(r["kind"] == "escalation.opened" for r in rows(url, run_id))
    except sa.exc.SQLAlchemyError:
        return False


def waiting_ask_run(ws: Path, env: dict[str, str]) -> None:
    write_plan(ws / "p.yaml", ASK_PLAN)
    waiting = vigil("run", "p.yaml", "--run-id", "ask", cwd=ws, env=env)
    assert waiting.returncode == ExitCode.WAITING, waiting.stdout + waiting.stderr


# ------------------------------------------------ an unsigned field of a signed answer


def test_a_rejection_stays_a_rejection(ws: Path, env: dict[str, str], store_url: str) -> None:
    waiting_ask_run(ws, env)
    # Every answer inserted from now on also says `"resolved": "approve"`; its statement,
    # signature and every signed event stay as vigil wrote them.
    install_trigger(
        store_url,
        "rt_resolved",
        timing="AFTER",
        sqlite="WHEN NEW.kind = 'escalation.answered' BEGIN UPDATE events SET data = "
        'substr(data, 1, length(data) - 1) || \', "resolved": "approve"}\' '
        "WHERE run_id = NEW.run_id AND seq = NEW.seq; END",
        plpgsql="IF NEW.kind = 'escalation.answered' THEN UPDATE events SET data = "
        'left(data, length(data) - 1) || \', "resolved": "approve"}\' '
        "WHERE run_id = NEW.run_id AND seq = NEW.seq; END IF; RETURN NULL;",
    )
    qid = question_of(store_url, "ask", "ask")["data"]["id"]
    rejected = vigil("escalations", "answer", qid, "--reject", "-m", "no", cwd=ws, env=env)
    assert rejected.returncode in (0, ExitCode.REFUSED), rejected.stdout + rejected.stderr
    assert not (ws / "shipped.txt").exists(), "the person rejected; the gated task ran"
    assert status("ask", ws, env)["state"] != "succeeded"


def test_control_a_rejection_without_a_writer(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    """The baseline of the attacks below: untouched, a rejection gives up, a cancel cancels."""
    waiting_ask_run(ws, env)
    qid = question_of(store_url, "ask", "ask")["data"]["id"]
    rejected = vigil("escalations", "answer", qid, "--reject", cwd=ws, env=env)
    assert rejected.returncode in (0, ExitCode.RUN_FAILED), rejected.stdout + rejected.stderr
    assert status("ask", ws, env)["state"] == "failed"
    assert not (ws / "shipped.txt").exists()


def test_control_a_cancel_without_a_writer(ws: Path, env: dict[str, str], store_url: str) -> None:
    waiting_ask_run(ws, env)
    qid = question_of(store_url, "ask", "ask")["data"]["id"]
    approved = vigil("escalations", "answer", qid, "--approve", "--no-resume", cwd=ws, env=env)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    cancelled = vigil("cancel", "ask", cwd=ws, env=env)
    assert cancelled.returncode in (0, ExitCode.CANCELLED), cancelled.stdout + cancelled.stderr
    assert status("ask", ws, env)["state"] == "cancelled"
    assert not (ws / "shipped.txt").exists()


TIMED_PLAN = {
    "name": "timed",
    "project": "shop",
    "phases": [
        {
            "id": "p",
            "tasks": [
                {
                    "id": "ask",
                    # Long enough that the rejection is in time on any machine: the driver
                    # acts on it at once, or the test's wait runs out (and it fails).
                    "approval": {"question": "Ship it?", "timeout": "10m", "on_timeout": "approve"},
                },
                {"id": "ship", "needs": ["ask"], "run": "echo shipped > shipped.txt"},
            ],
        }
    ],
}


def test_a_rejection_in_time_is_not_lost_to_the_timeout(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    write_plan(ws / "p.yaml", TIMED_PLAN)
    # The driver waits out the question's timeout: the person answers while it runs.
    driver = spawn("run", "p.yaml", "--run-id", "ask", cwd=ws, env=env)
    try:
        wait_for(lambda: asked(store_url, "ask"))
        # Answers a person appends (no `_n`) are dropped; the driver's own (signed) are kept.
        install_trigger(
            store_url,
            "rt_drop_answer",
            timing="BEFORE",
            sqlite="WHEN NEW.kind = 'escalation.answered' AND instr(NEW.data, '\"_n\":') = 0 "
            "BEGIN SELECT RAISE(IGNORE); END",
            plpgsql="IF NEW.kind = 'escalation.answered' AND position('\"_n\":' in NEW.data) = 0 "
            "THEN RETURN NULL; END IF; RETURN NEW;",
        )
        qid = question_of(store_url, "ask", "ask")["data"]["id"]
        rejected = vigil("escalations", "answer", qid, "--reject", cwd=ws, env=env)
        out = rejected.stdout + rejected.stderr
        assert "Traceback" not in out, out
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            kill9(driver)
    assert not (ws / "shipped.txt").exists(), f"rejected in time, shipped by timeout: {out}"
    assert status("ask", ws, env)["state"] == "failed", out


# ------------------------------------------------------- a cancel that never arrives


def test_a_cancel_runs_nothing(ws: Path, env: dict[str, str], store_url: str) -> None:
    waiting_ask_run(ws, env)
    qid = question_of(store_url, "ask", "ask")["data"]["id"]
    # The person approves, but only records it (the run is not driven yet) ...
    approved = vigil("escalations", "answer", qid, "--approve", "--no-resume", cwd=ws, env=env)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert not (ws / "shipped.txt").exists()
    # ... then thinks better of it and cancels. The store drops cancel requests.
    install_trigger(
        store_url,
        "rt_drop_cancel",
        timing="BEFORE",
        sqlite="WHEN NEW.kind = 'run.cancel_requested' BEGIN SELECT RAISE(IGNORE); END",
        plpgsql="IF NEW.kind = 'run.cancel_requested' THEN RETURN NULL; END IF; RETURN NEW;",
    )
    cancelled = vigil("cancel", "ask", cwd=ws, env=env)
    out = cancelled.stdout + cancelled.stderr
    assert "Traceback" not in out, out
    assert not (ws / "shipped.txt").exists(), f"`vigil cancel` ran the gated task: {out}"


SLOW_PLAN = {
    "name": "slow",
    "project": "shop",
    "phases": [
        {
            "id": "p",
            "tasks": [
                # Never ends by itself: only the cancel ends it (no race with the machine's speed).
                {"id": "build", "run": "sleep 600"},
                {"id": "ship", "needs": ["build"], "run": "echo shipped > shipped.txt"},
            ],
        }
    ],
}


def test_a_cancel_reaches_a_live_driver_whatever_the_summary_says(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    write_plan(ws / "p.yaml", SLOW_PLAN)
    driver = spawn("run", "p.yaml", "--run-id", "slow", cwd=ws, env=env)
    try:
        wait_for(lambda: started(store_url, "slow", "build"))
        set_run_state(store_url, "slow", "succeeded")
        cancelled = vigil("cancel", "slow", cwd=ws, env=env)
        out = cancelled.stdout + cancelled.stderr
        assert "Traceback" not in out, out
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            kill9(driver)
    assert not (ws / "shipped.txt").exists(), f"cancelled, and the next task ran: {out}"
    assert status("slow", ws, env)["state"] == "cancelled", out


def started(url: str, run_id: str, task: str) -> bool:
    try:
        found = rows(url, run_id)
    except sa.exc.SQLAlchemyError:
        return False
    return any(r["kind"] == "attempt.started" and r["data"]["task"] == task for r in found)


def set_run_state(url: str, run_id: str, state: str) -> None:
    from vigil.store.schema import runs

    engine = engine_of(url)
    try:
        with engine.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(state=state))
    finally:
        engine.dispose()


# ----------------------------------------------------- what a person is shown, then signs


def test_an_answer_approves_only_the_question_shown(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    waiting_ask_run(ws, env)
    opened = question_of(store_url, "ask", "ask")
    real = opened["data"]
    fake = {**real, "question": "Run the spell checker on the README?"}
    set_data(store_url, "ask", opened["seq"], fake)
    # When the answer comes in, the question is put back as vigil signed it.
    original = json.dumps(real).replace("'", "''")
    install_trigger(
        store_url,
        "rt_restore",
        timing="AFTER",
        sqlite="WHEN NEW.kind = 'escalation.answered' BEGIN UPDATE events SET data = "
        f"'{original}' WHERE run_id = NEW.run_id AND seq = {opened['seq']}; END",
        plpgsql="IF NEW.kind = 'escalation.answered' THEN UPDATE events SET data = "
        f"'{original}' WHERE run_id = NEW.run_id AND seq = {opened['seq']}; END IF; "
        "RETURN NULL;",
    )
    shown = vigil("escalations", "--format", "json", cwd=ws, env=env)
    if shown.returncode == 0:
        questions = {q["id"]: q["question"] for q in json.loads(shown.stdout)}
        if questions.get(real["id"]) == real["question"] or real["id"] not in questions:
            return  # the person saw the real question (or none): approving it is theirs
        answered = vigil("escalations", "answer", real["id"], "--approve", cwd=ws, env=env)
        out = answered.stdout + answered.stderr
        assert "Traceback" not in out, out
    else:
        assert "VIGIL-RUN-TAMPERED" in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    assert not (ws / "shipped.txt").exists(), "approved a question the person was not shown"


def test_an_approval_commits_only_the_changes_shown(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    write_plan(ws / "p.yaml", REVIEW_PLAN)
    held = vigil("run", "p.yaml", "--run-id", "rv", cwd=ws, env=env)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    done = first(store_url, "rv", "attempt.finished", "change")
    real = done["data"]
    shown_cs = json.loads(json.dumps(real["changeset"]))
    shown_cs["entries"][0]["path"] = "NOTES.txt"  # what the person will be shown
    set_data(store_url, "rv", done["seq"], {**real, "changeset": shown_cs})
    shown = vigil("review", "rv", "--format", "json", cwd=ws, env=env)
    if shown.returncode == 0:
        paths = [p["path"] for c in json.loads(shown.stdout) for p in c["paths"]]
        if "out.txt" in paths:
            return  # the person saw what is held
        # The person saw NOTES.txt; the writer puts the real changes back and waits.
        set_data(store_url, "rv", done["seq"], real)
        approved = vigil("review", "rv", "--approve", cwd=ws, env=env)
        out = approved.stdout + approved.stderr
        assert "Traceback" not in out, out
    else:
        assert "VIGIL-RUN-TAMPERED" in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    assert not (ws / "out.txt").exists(), "committed changes the person was not shown"
