"""A person's decision cannot be forged through the store (issue 10, class 4).

Each attack writes a decision straight into the run store, as a step that reached the
store would: unsigned, signed by another key, replayed from another run, taken from
another question, altered after signing, or expired. After each, the run is driven again
and the invariant is checked: the decision was not acted on (the run still waits, the
gated task did not run), the audit log shows the refusal, and the log still verifies.
Every attack runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from clitools import spawn, status, vigil, wait_for, write_plan
from vigil.errors import ExitCode
from vigil.safety.decisions import ESCALATION_ANSWER, REVIEW_DECISION, sign_statement
from vigil.safety.keys import SigningKey, active_key
from vigil.store import open_store

pytestmark = pytest.mark.slow

ASK_PLAN = {
    "name": "people",
    "project": "shop",
    "phases": [
        {
            "id": "p",
            "tasks": [
                {"id": "ask", "approval": {"question": "Ship it?"}},
                {"id": "other", "approval": {"question": "And this?"}},
                {"id": "ship", "needs": ["ask"], "run": "echo shipped > shipped.txt"},
            ],
        }
    ],
}


def key_of(env: dict[str, str]) -> SigningKey:
    return active_key(Path(env["VIGIL_CONFIG_DIR"]))


def forge(url: str, run_id: str, kind: str, data: dict[str, Any]) -> None:
    """Write one event into the run's journal as anything with store access could."""
    with open_store(url) as store:
        store.append(run_id, [(kind, data)], at=time.time())


def journal(url: str, run_id: str, kind: str) -> list[dict[str, Any]]:
    with open_store(url) as store:
        return [dict(e.data) for e in store.events(run_id) if e.kind == kind]


def audit_entries(ws: Path) -> list[dict[str, Any]]:
    text = (ws / ".vigil" / "audit" / "log.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def verify_ok(ws: Path, env: dict[str, str]) -> None:
    done = vigil("audit", "verify", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr


def open_question(ws: Path, env: dict[str, str], task: str) -> dict[str, Any]:
    out = vigil("escalations", "--format", "json", cwd=ws, env=env)
    assert out.returncode == 0, out.stderr
    found = [q for q in json.loads(out.stdout) if q["task"] == task]
    assert len(found) == 1, found
    question: dict[str, Any] = found[0]
    return question


def start_waiting(ws: Path, env: dict[str, str], run_id: str) -> None:
    write_plan(ws / "p.yaml", ASK_PLAN)
    done = vigil("run", "p.yaml", "--run-id", run_id, cwd=ws, env=env)
    assert done.returncode == ExitCode.WAITING, done.stdout + done.stderr


def answer_data(question: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": question["id"],
        "task": question["task"],
        "decision": "approve",
        "value": None,
        "comment": "",
        "by": "mallory",
        **extra,
    }


def signed(key: SigningKey, run_id: str, question: dict[str, Any], **kw: Any) -> dict[str, str]:
    return sign_statement(
        key,
        kind=ESCALATION_ANSWER,
        project="shop",
        run=run_id,
        subject=question["subject"],
        task=question["task"],
        answer={"decision": "approve", "value": None, "comment": ""},
        by="mallory",
        **kw,
    )


def assert_refused_and_still_waiting(
    ws: Path, env: dict[str, str], run_id: str, task: str, why: str
) -> None:
    resumed = vigil("resume", run_id, cwd=ws, env=env)
    assert resumed.returncode == ExitCode.WAITING, resumed.stdout + resumed.stderr
    view = status(run_id, ws, env)
    states = {t["id"]: t["state"] for t in view["tasks"]}
    assert view["state"] == "waiting" and states[task] == "waiting", states
    assert not (ws / "shipped.txt").exists(), "a forged decision was acted on"
    refusals = [e for e in audit_entries(ws) if e["action"] == "decision.refuse"]
    assert refusals and refusals[-1]["decision"] == "deny", audit_entries(ws)[-3:]
    assert "VIGIL-DECISION-REFUSED" in refusals[-1]["reason"] and why in refusals[-1]["reason"]
    accepted = [e for e in audit_entries(ws) if e["action"] == "decision.accept"]
    assert not [e for e in accepted if e["run"] == run_id], accepted
    verify_ok(ws, env)
    # Driving again neither acts on it nor audits the same refusal twice.
    again = vigil("resume", run_id, cwd=ws, env=env)
    assert again.returncode == ExitCode.WAITING
    assert len([e for e in audit_entries(ws) if e["action"] == "decision.refuse"]) == len(refusals)


ATTACKS = [
    "unsigned",
    "other-key",
    "other-run",
    "other-question",
    "other-words",
    "altered",
    "expired",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forged_answer_is_refused_audited_and_not_acted_on(
    ws: Path, env: dict[str, str], store_url: str, attack: str
) -> None:
    start_waiting(ws, env, "victim")
    question = open_question(ws, env, "ask")
    key = key_of(env)
    why = ""
    if attack == "unsigned":
        data, why = answer_data(question), "carries no signed statement"
    elif attack == "other-key":
        stranger = SigningKey.generate()
        data = answer_data(question, statement=signed(stranger, "victim", question))
        why = "not trusted"
    elif attack == "other-run":
        # A genuine answer of another run of the same plan, replayed onto this one.
        start_waiting(ws, env, "donor")
        donor_q = next(
            q
            for q in json.loads(vigil("escalations", "-o", "json", cwd=ws, env=env).stdout)
            if q["run"] == "donor" and q["task"] == "ask"
        )
        done = vigil("escalations", "answer", donor_q["id"], "--reject", cwd=ws, env=env)
        assert done.returncode == 0, done.stderr
        (genuine,) = journal(store_url, "donor", "escalation.answered")
        data = {**genuine, "id": question["id"]}
        why = "signed for run 'donor'"
    elif attack == "other-question":
        other = open_question(ws, env, "other")
        data = answer_data(question, statement=signed(key, "victim", other))
        why = "signed for subject"
    elif attack == "other-words":
        # Signed by the person for this question's id, but for other words than it asks.
        stmt = signed(key, "victim", {**question, "subject": f"{question['id']}:{'0' * 24}"})
        data, why = answer_data(question, statement=stmt), "signed for subject"
    elif attack == "altered":
        # Signed as a rejection, submitted as an approval.
        stmt = sign_statement(
            key,
            kind=ESCALATION_ANSWER,
            project="shop",
            run="victim",
            subject=question["subject"],
            task="ask",
            answer={"decision": "reject", "value": None, "comment": ""},
            by="mallory",
        )
        data, why = answer_data(question, statement=stmt), "other than what was signed"
    else:
        stmt = signed(key, "victim", question, now=time.time() - 7200)
        data, why = answer_data(question, statement=stmt), "expired"
    forge(store_url, "victim", "escalation.answered", data)
    assert_refused_and_still_waiting(ws, env, "victim", "ask", why)
    # The person's own answer still works afterwards, end to end.
    done = vigil("escalations", "answer", question["id"], "--approve", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    assert (ws / "shipped.txt").exists()
    accepted = [e for e in audit_entries(ws) if e["action"] == "decision.accept"]
    assert accepted and accepted[-1]["run"] == "victim" and accepted[-1]["task"] == "ask"
    verify_ok(ws, env)


def test_a_forged_answer_seen_by_a_live_driver_is_refused(
    ws: Path, env: dict[str, str], store_url: str, outside: Path
) -> None:
    signals = outside / "signals"
    signals.mkdir()
    gate = signals / "go"
    # The step sees the gate's directory only when it is declared (the sandbox's root is
    # built from an allowlist).
    (ws / "vigil.toml").write_text(f'[workspace]\nread_only_paths = ["{signals}"]\n')
    plan = {
        "name": "live",
        "project": "shop",
        "phases": [
            {
                "id": "p",
                "tasks": [
                    {"id": "ask", "approval": {"question": "Ship it?"}},
                    {"id": "ship", "needs": ["ask"], "run": "echo shipped > shipped.txt"},
                    # Keeps the driver alive (polling the journal) until the test says so.
                    {"id": "hold", "run": f"while [ ! -e {gate} ]; do sleep 0.05; done"},
                ],
            }
        ],
    }
    write_plan(ws / "p.yaml", plan)
    proc = spawn("run", "p.yaml", "--run-id", "live", cwd=ws, env=env)
    try:
        wait_for(lambda: journal(store_url, "live", "escalation.opened"), timeout=120)
        (opened,) = journal(store_url, "live", "escalation.opened")
        forge(
            store_url,
            "live",
            "escalation.answered",
            answer_data({"id": opened["id"], "task": "ask"}),
        )
        wait_for(lambda: journal(store_url, "live", "decision.refused"), timeout=120)
        gate.write_text("")
        proc.communicate(timeout=120)
    finally:
        gate.write_text("")
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == ExitCode.WAITING
    assert not (ws / "shipped.txt").exists()
    refusals = [e for e in audit_entries(ws) if e["action"] == "decision.refuse"]
    assert len(refusals) == 1 and refusals[0]["run"] == "live"
    verify_ok(ws, env)


PLAIN_PLAN = {**ASK_PLAN, "phases": [{"id": "p", "tasks": [{"id": "t", "run": "true"}]}]}

REVIEW_PLAN = {
    "name": "rev",
    "project": "shop",
    "phases": [
        {
            "id": "p",
            "tasks": [
                {"id": "change", "run": "echo reviewed > out.txt", "review": "required"},
                {"id": "uses", "needs": ["change"], "run": "cat out.txt > shipped.txt"},
            ],
        }
    ],
}


@pytest.mark.parametrize("attack", ["unsigned", "other-key", "other-attempt", "other-changes"])
def test_a_forged_review_approval_is_refused(
    ws: Path, env: dict[str, str], store_url: str, attack: str
) -> None:
    write_plan(ws / "p.yaml", REVIEW_PLAN)
    held = vigil("run", "p.yaml", "--run-id", "rv", cwd=ws, env=env)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    data: dict[str, Any] = {"task": "change", "approve": True, "by": "mallory", "comment": ""}
    # A real approval is signed for the attempt and the id of the changes it holds.
    shown = vigil("review", "rv", "--format", "json", cwd=ws, env=env)
    held_id = json.loads(shown.stdout)[0]["changes"]
    subject, signer = f"change#1:{held_id}", key_of(env)
    if attack == "other-key":
        signer = SigningKey.generate()
    if attack == "other-attempt":
        subject = f"change#7:{held_id}"
    if attack == "other-changes":  # signed by the person, for changes other than those held
        subject = "change#1:" + "0" * 24
    if attack != "unsigned":
        data["statement"] = sign_statement(
            signer,
            kind=REVIEW_DECISION,
            project="shop",
            run="rv",
            subject=subject,
            task="change",
            answer={"approve": True, "comment": ""},
            by="mallory",
        )
    forge(store_url, "rv", "review.decided", data)
    resumed = vigil("resume", "rv", cwd=ws, env=env)
    assert resumed.returncode == ExitCode.WAITING, resumed.stdout + resumed.stderr
    assert not (ws / "out.txt").exists(), "a forged review committed held changes"
    refusals = [e for e in audit_entries(ws) if e["action"] == "decision.refuse"]
    assert refusals and "VIGIL-DECISION-REFUSED" in refusals[-1]["reason"]
    verify_ok(ws, env)
    ok = vigil("review", "rv", "--approve", cwd=ws, env=env)
    assert ok.returncode == 0, ok.stderr
    assert status("rv", ws, env)["state"] == "succeeded"
    assert (ws / "shipped.txt").read_text() == "reviewed\n"


def test_deleting_a_halt_from_the_store_does_not_lift_it(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    write_plan(ws / "p.yaml", PLAIN_PLAN)
    done = vigil("halt", "--project", "shop", "--reason", "incident", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    with open_store(store_url) as store:
        (row,) = store.halts()
        assert row.statement and json.loads(row.statement)["signer"] == key_of(env).public_hex
        assert store.clear_halt("shop")  # the unsigned "unhalt" a step could do
    refused = vigil("run", "p.yaml", "--run-id", "after", cwd=ws, env=env)
    assert refused.returncode == ExitCode.REFUSED and "VIGIL-HALTED" in refused.stderr
    starts = [e for e in audit_entries(ws) if e["action"] == "run.start"]
    assert starts[-1]["decision"] == "deny" and "VIGIL-HALTED" in starts[-1]["reason"]
    verify_ok(ws, env)
    # The signed unhalt of a person with the key lifts it.
    assert vigil("unhalt", "--project", "shop", cwd=ws, env=env).returncode == 0
    ran = vigil("run", "p.yaml", "--run-id", "later", cwd=ws, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_an_unsigned_halt_row_is_honoured(ws: Path, env: dict[str, str], store_url: str) -> None:
    # Stopping is never a privilege: a halt nobody signed still stops the project.
    write_plan(ws / "p.yaml", PLAIN_PLAN)
    with open_store(store_url) as store:
        store.set_halt("shop", "written by a step", "mallory", time.time())
    refused = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws, env=env)
    assert refused.returncode == ExitCode.REFUSED and "VIGIL-HALTED" in refused.stderr
    verify_ok(ws, env)
