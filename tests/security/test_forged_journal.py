"""What vigil did cannot be rewritten through the store (issue 10, class 4, the journal).

A run's next move is folded from its journal, and whoever can write the store (a step
granted the network with a team store on trust auth, a local user) could append or edit
events: an attempt that never ran, a commit of changes held for review, a changeset
swapped between `vigil review` and `--approve`, pre-images edited before a rollback, an
approval task marked done. Each attack below does one of these as such a writer would,
with SQL or the store's own API; after each, the command that would act on it (`resume`,
`review --approve`, `rollback`) refuses with VIGIL-RUN-TAMPERED, the workspace is
unchanged, and the refusal is audited. Every attack runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_forged_decisions import REVIEW_PLAN
from test_sealed_runs import engine_of

from clitools import spawn, status, vigil, wait_for, write_plan
from vigil.engine import attest
from vigil.errors import ExitCode
from vigil.safety.keys import SigningKey, active_key
from vigil.store import open_store
from vigil.store.schema import events as events_table

pytestmark = pytest.mark.slow

ASK_PLAN = {
    "name": "ask",
    "project": "shop",
    "phases": [
        {
            "id": "p",
            "tasks": [
                {"id": "ask", "approval": {"question": "Ship it?"}},
                {"id": "ship", "needs": ["ask"], "run": "echo shipped > shipped.txt"},
            ],
        }
    ],
}

EDIT_PLAN = {
    "name": "edit",
    "project": "shop",
    "phases": [{"id": "p", "tasks": [{"id": "edit", "run": "echo new > f.txt"}]}],
}


def rows(url: str, run_id: str) -> list[dict[str, Any]]:
    engine = engine_of(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(
                sa.select(events_table.c.seq, events_table.c.kind, events_table.c.data)
                .where(events_table.c.run_id == run_id)
                .order_by(events_table.c.seq)
            )
            return [{"seq": r.seq, "kind": r.kind, "data": json.loads(r.data)} for r in found]
    finally:
        engine.dispose()


def has_event(url: str, run_id: str, kind: str) -> bool:
    with open_store(url) as store:  # migrated on open: the run may not have created it yet
        return any(e.kind == kind for e in store.events(run_id))


def set_data(url: str, run_id: str, seq: int, data: dict[str, Any]) -> None:
    engine = engine_of(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                events_table.update()
                .where(events_table.c.run_id == run_id, events_table.c.seq == seq)
                .values(data=json.dumps(data))
            )
    finally:
        engine.dispose()


def delete_event(url: str, run_id: str, seq: int) -> None:
    engine = engine_of(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                events_table.delete().where(
                    events_table.c.run_id == run_id, events_table.c.seq == seq
                )
            )
    finally:
        engine.dispose()


def append(url: str, run_id: str, kind: str, data: dict[str, Any]) -> None:
    with open_store(url) as store:
        store.append(run_id, [(kind, data)], at=time.time())


def first(url: str, run_id: str, kind: str, task: str | None = None) -> dict[str, Any]:
    for r in rows(url, run_id):
        if r["kind"] == kind and (task is None or r["data"].get("task") == task):
            return r
    raise AssertionError(f"no {kind} in {run_id}")


def audit_entries(ws: Path) -> list[dict[str, Any]]:
    text = (ws / ".vigil" / "audit" / "log.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def assert_refused(done: Any, ws: Path, env: dict[str, str], action: str) -> None:
    """The command refused as tampered, said so plainly, and the refusal is audited."""
    out = done.stdout + done.stderr
    assert done.returncode == ExitCode.REFUSED, out
    assert "VIGIL-RUN-TAMPERED" in out and "Traceback" not in out, out
    denied = [e for e in audit_entries(ws) if e["action"] == action and e["decision"] == "deny"]
    assert denied and "event" in denied[-1]["reason"], audit_entries(ws)[-3:]
    verified = vigil("audit", "verify", cwd=ws, env=env)
    assert verified.returncode == 0, verified.stderr


def forged_changeset(path: str) -> dict[str, Any]:
    """A changeset that creates ``path`` holding the empty blob (present in every store)."""
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    after = {"kind": "file", "mode": 0o644, "sha256": empty, "size": 0}
    return {"version": 1, "entries": [{"path": path, "before": None, "after": after}]}


# ---------------------------------------------------------------- attacks on a held run


def _commit_held(url: str, run_id: str) -> None:
    """Start the commit of held changes, as if a review had approved them."""
    append(url, run_id, "changeset.committing", {"task": "change", "attempt": 1})


def _commit_held_signed_by_attacker(url: str, run_id: str) -> None:
    """The same, numbered and signed as vigil signs, with the attacker's own key."""
    last = max(r["data"].get(attest.NUMBER, -1) for r in rows(url, run_id))
    signer = attest.JournalSigner(run_id, SigningKey.generate(), attest.Head(last + 1))
    with open_store(url) as store:
        signer.append(store, [("changeset.committing", {"task": "change", "attempt": 1})], at=1.0)


def _attempt_that_never_ran(url: str, run_id: str) -> None:
    """A second, successful attempt of the held task whose changes nobody validated."""
    append(url, run_id, "attempt.started", {"task": "change", "attempt": 2, "command": "main"})
    data = {"task": "change", "attempt": 2, "outcome": "succeeded", "exit_code": 0}
    append(
        url,
        run_id,
        "attempt.finished",
        {**data, "reason": "", "changeset": forged_changeset("evil.sh")},
    )


def _approval_marked_done(url: str, run_id: str) -> None:
    append(url, run_id, "task.finished", {"task": "change", "state": "succeeded"})


def _signed_event_replayed(url: str, run_id: str) -> None:
    done = first(url, run_id, "attempt.finished", "change")
    append(url, run_id, "attempt.finished", done["data"])


def _signed_event_deleted(url: str, run_id: str) -> None:
    delete_event(url, run_id, first(url, run_id, "attempt.started", "change")["seq"])


def _changes_swapped(url: str, run_id: str) -> None:
    """The held attempt's changeset replaced, its signature kept."""
    done = first(url, run_id, "attempt.finished", "change")
    set_data(url, run_id, done["seq"], {**done["data"], "changeset": forged_changeset("evil.sh")})


def _signature_moved(url: str, run_id: str) -> None:
    """Two signed events' payloads exchanged (each keeps its number and signature)."""
    a = first(url, run_id, "attempt.started", "change")
    b = first(url, run_id, "attempt.finished", "change")
    set_data(url, run_id, a["seq"], {**b["data"], attest.NUMBER: a["data"][attest.NUMBER]})


def _newest_batch_removed(url: str, run_id: str) -> None:
    """The newest signed batch cut off the end, so the run looks as it did before it."""
    journal = rows(url, run_id)
    sealed = [r["seq"] for r in journal if attest.SIGNATURE in r["data"]]
    for r in journal:
        if r["seq"] > sealed[-2]:
            delete_event(url, run_id, r["seq"])


HELD_ATTACKS: dict[str, Callable[[str, str], None]] = {
    "newest-batch-removed": _newest_batch_removed,
    "commit-held": _commit_held,
    "commit-held-attacker-key": _commit_held_signed_by_attacker,
    "attempt-never-ran": _attempt_that_never_ran,
    "task-marked-done": _approval_marked_done,
    "signed-event-replayed": _signed_event_replayed,
    "signed-event-deleted": _signed_event_deleted,
    "changes-swapped": _changes_swapped,
    "signature-moved": _signature_moved,
}


@pytest.mark.parametrize("attack", sorted(HELD_ATTACKS))
def test_a_rewritten_journal_is_not_resumed_nor_approved(
    ws: Path, env: dict[str, str], store_url: str, attack: str
) -> None:
    write_plan(ws / "p.yaml", REVIEW_PLAN)
    held = vigil("run", "p.yaml", "--run-id", "rv", cwd=ws, env=env)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    HELD_ATTACKS[attack](store_url, "rv")

    resumed = vigil("resume", "rv", cwd=ws, env=env)
    assert_refused(resumed, ws, env, "run.resume")
    approved = vigil("review", "rv", "--approve", cwd=ws, env=env)
    assert_refused(approved, ws, env, "review.approve")
    for name in ("out.txt", "evil.sh", "shipped.txt"):
        assert not (ws / name).exists(), f"{name} landed after the journal was rewritten"


def test_an_untouched_held_run_is_approved_with_the_changes_shown(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    """The control: the same run, not attacked, is reviewed by id and approved."""
    write_plan(ws / "p.yaml", REVIEW_PLAN)
    held = vigil("run", "p.yaml", "--run-id", "rv", cwd=ws, env=env)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    shown = vigil("review", "rv", "--format", "json", cwd=ws, env=env)
    assert shown.returncode == 0, shown.stderr
    [change] = [c for c in json.loads(shown.stdout) if c["held"]]
    assert change["changes"] in vigil("review", "rv", cwd=ws, env=env).stdout
    wrong = vigil("review", "rv", "--approve", "--changes", "0" * 24, cwd=ws, env=env)
    assert wrong.returncode == ExitCode.REFUSED and "VIGIL-REVIEW-CHANGED" in wrong.stderr
    assert not (ws / "out.txt").exists()
    ok = vigil("review", "rv", "--approve", "--changes", change["changes"][:12], cwd=ws, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert status("rv", ws, env)["state"] == "succeeded"
    assert (ws / "shipped.txt").read_text() == "reviewed\n"


def test_an_approval_task_marked_done_does_not_release_what_it_gates(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    write_plan(ws / "p.yaml", ASK_PLAN)
    waiting = vigil("run", "p.yaml", "--run-id", "ask", cwd=ws, env=env)
    assert waiting.returncode == ExitCode.WAITING, waiting.stdout + waiting.stderr
    append(store_url, "ask", "task.finished", {"task": "ask", "state": "succeeded"})
    resumed = vigil("resume", "ask", cwd=ws, env=env)
    assert_refused(resumed, ws, env, "run.resume")
    assert not (ws / "shipped.txt").exists()


def set_time(url: str, run_id: str, seq: int, at: float) -> None:
    engine = engine_of(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                events_table.update()
                .where(events_table.c.run_id == run_id, events_table.c.seq == seq)
                .values(at=at)
            )
    finally:
        engine.dispose()


def test_a_question_backdated_in_the_store_does_not_time_out_early(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    """An approval that approves itself after a day is not approved by moving its clock."""
    plan = json.loads(json.dumps(ASK_PLAN))
    plan["phases"][0]["tasks"][0]["approval"] |= {"timeout": "1d", "on_timeout": "approve"}
    write_plan(ws / "p.yaml", plan)
    # The driver waits for the timeout; Ctrl-C leaves the run interrupted, question open.
    driver = spawn("run", "p.yaml", "--run-id", "late", cwd=ws, env=env)
    try:
        wait_for(lambda: has_event(store_url, "late", "escalation.opened"))
    finally:
        driver.send_signal(signal.SIGINT)
        driver.communicate(timeout=120)
    opened = first(store_url, "late", "escalation.opened", "ask")
    set_time(store_url, "late", opened["seq"], time.time() - 3 * 86400)
    resumed = vigil("resume", "late", cwd=ws, env=env)
    assert_refused(resumed, ws, env, "run.resume")
    assert not (ws / "shipped.txt").exists()


# ------------------------------------------------------------- attacks before a rollback


def _preimage_swapped(url: str, run_id: str) -> None:
    """The recorded pre-image of f.txt pointed at the post-image (or another blob)."""
    done = first(url, run_id, "attempt.finished", "edit")
    data = done["data"]
    [entry] = data["changeset"]["entries"]
    entry["before"] = dict(entry["after"])
    set_data(url, run_id, done["seq"], data)


def _preimage_path_moved(url: str, run_id: str) -> None:
    """The change recorded against another path, so a rollback writes there."""
    done = first(url, run_id, "attempt.finished", "edit")
    data = done["data"]
    data["changeset"]["entries"][0]["path"] = "other.txt"
    set_data(url, run_id, done["seq"], data)


def _commit_forged_for_a_failed_attempt(url: str, run_id: str) -> None:
    append(url, run_id, "changeset.committed", {"task": "edit", "attempt": 1})
    append(url, run_id, "attempt.finished", {
        "task": "edit", "attempt": 1, "outcome": "succeeded", "exit_code": 0, "reason": "",
        "changeset": forged_changeset("f.txt"),
    })  # fmt: skip


ROLLBACK_ATTACKS: dict[str, Callable[[str, str], None]] = {
    "preimage-swapped": _preimage_swapped,
    "preimage-path-moved": _preimage_path_moved,
    "forged-commit-record": _commit_forged_for_a_failed_attempt,
}


@pytest.mark.parametrize("attack", sorted(ROLLBACK_ATTACKS))
def test_a_rollback_restores_only_what_vigil_recorded(
    ws: Path, env: dict[str, str], store_url: str, attack: str
) -> None:
    (ws / "f.txt").write_text("original\n")
    (ws / "other.txt").write_text("keep\n")
    write_plan(ws / "p.yaml", EDIT_PLAN)
    done = vigil("run", "p.yaml", "--run-id", "ed", cwd=ws, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ws / "f.txt").read_text() == "new\n"
    ROLLBACK_ATTACKS[attack](store_url, "ed")

    refused = vigil("rollback", "ed", cwd=ws, env=env)
    assert_refused(refused, ws, env, "rollback")
    assert (ws / "f.txt").read_text() == "new\n"
    assert (ws / "other.txt").read_text() == "keep\n"


def test_an_untouched_run_rolls_back(ws: Path, env: dict[str, str], store_url: str) -> None:
    (ws / "f.txt").write_text("original\n")
    write_plan(ws / "p.yaml", EDIT_PLAN)
    done = vigil("run", "p.yaml", "--run-id", "ed", cwd=ws, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    # Unsigned events of the kinds other processes append do not stop anything.
    append(store_url, "ed", "run.cancel_requested", {"reason": "late", "by": "someone"})
    back = vigil("rollback", "ed", cwd=ws, env=env)
    assert back.returncode == 0, back.stdout + back.stderr
    assert (ws / "f.txt").read_text() == "original\n"


def test_every_event_vigil_wrote_is_signed_by_the_starting_key(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    write_plan(ws / "p.yaml", REVIEW_PLAN)
    held = vigil("run", "p.yaml", "--run-id", "rv", cwd=ws, env=env)
    assert held.returncode == ExitCode.WAITING
    key = active_key(Path(env["VIGIL_CONFIG_DIR"]))
    journal = rows(store_url, "rv")
    numbers = [r["data"][attest.NUMBER] for r in journal]
    assert numbers == list(range(len(journal))), "every event vigil wrote is numbered, in order"
    signers = {
        r["data"][attest.SIGNATURE]["signer"] for r in journal if attest.SIGNATURE in r["data"]
    }
    assert signers == {key.public_hex}
