"""Red team: the decision ledger (``.vigil/logs/RUN/decisions/``) and the journal head
(``.vigil/logs/RUN/journal.head``), the two files a run keeps on this machine beside the
store.

A step must not reach either. A decision planted in the ledger (by whoever can write the
state directory: a step in snapshot mode, another process of the user) is judged by its
signature like one from the store. A head that is not a regular file (a FIFO, a
directory, a link to ``/dev/zero``) must neither hang nor crash the commands that read or
write it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sec_support import needs_overlay
from test_forged_decisions import REVIEW_PLAN, audit_entries, key_of, verify_ok

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode
from vigil.safety.decisions import REVIEW_DECISION, sign_statement
from vigil.safety.keys import SigningKey

pytestmark = pytest.mark.slow


def held_review(ws: Path, env: dict[str, str], run_id: str = "rv") -> str:
    """A run whose task ``change`` is held for review; the id of its held changes."""
    write_plan(ws / "p.yaml", REVIEW_PLAN)
    held = vigil("run", "p.yaml", "--run-id", run_id, cwd=ws, env=env)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    shown = vigil("review", run_id, "--format", "json", cwd=ws, env=env)
    return str(json.loads(shown.stdout)[0]["changes"])


@pytest.mark.parametrize("attack", ["unsigned", "other-key", "other-changes", "not-a-file"])
def test_a_decision_planted_in_the_ledger_is_judged_by_its_signature(
    ws: Path, env: dict[str, str], attack: str
) -> None:
    held_id = held_review(ws, env)
    data: dict[str, Any] = {"task": "change", "approve": True, "by": "mallory", "comment": ""}
    signer = SigningKey.generate() if attack == "other-key" else key_of(env)
    subject = "change#1:" + ("0" * 24 if attack == "other-changes" else held_id)
    nonce = "f0f0f0f0f0f0f0f0"
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
        nonce = json.loads(data["statement"]["payload"])["nonce"]
    ledger = ws / ".vigil" / "logs" / "rv" / "decisions"
    ledger.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"kind": "review.decided", "data": data})
    if attack == "not-a-file":
        # A FIFO and a dangling link beside a real decision: neither may hang the driver
        # nor hide the decision next to them.
        os.mkfifo(ledger / "aaaa.json")
        os.symlink(ledger / "gone", ledger / "bbbb.json")
        (ledger / f"{nonce}.json").write_text(body)
        resumed = vigil("resume", "rv", cwd=ws, env=env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert status("rv", ws, env)["state"] == "succeeded"
        assert not any(ledger.iterdir()), "entries a driver cannot use are removed"
        return
    (ledger / f"{nonce}.json").write_text(body)
    resumed = vigil("resume", "rv", cwd=ws, env=env)
    assert resumed.returncode == ExitCode.WAITING, resumed.stdout + resumed.stderr
    assert not (ws / "out.txt").exists(), "a forged decision from the ledger committed"
    if attack != "unsigned":
        refusals = [e for e in audit_entries(ws) if e["action"] == "decision.refuse"]
        assert refusals and "VIGIL-DECISION-REFUSED" in refusals[-1]["reason"]
    verify_ok(ws, env)
    ok = vigil("review", "rv", "--approve", cwd=ws, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert status("rv", ws, env)["state"] == "succeeded"
    assert (ws / "shipped.txt").read_text() == "reviewed\n"


@pytest.mark.parametrize("kind", ["fifo", "directory", "link-to-dev-zero", "garbage"])
def test_a_journal_head_that_is_not_a_head_neither_hangs_nor_refuses_an_honest_run(
    ws: Path, env: dict[str, str], kind: str
) -> None:
    held_review(ws, env)
    head = ws / ".vigil" / "logs" / "rv" / "journal.head"
    assert head.stat().st_size == 128
    head.unlink()
    if kind == "fifo":
        os.mkfifo(head)  # read_text() and open(O_WRONLY) would wait for a writer forever
    elif kind == "directory":
        head.mkdir()
    elif kind == "link-to-dev-zero":
        os.symlink("/dev/zero", head)  # an endless read, if followed
    else:
        head.write_bytes(b"\x00" * 40 + b'{"count": "x"')
    # The hang guard is clitools' subprocess timeout; a hang fails the test there.
    ok = vigil("review", "rv", "--approve", cwd=ws, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert status("rv", ws, env)["state"] == "succeeded"
    assert (ws / "shipped.txt").read_text() == "reviewed\n"
    if kind != "garbage":  # never replaced through a link or written into a device
        assert (head.is_symlink() and os.readlink(head) == "/dev/zero") or not head.is_symlink()


@needs_overlay
def test_a_step_cannot_read_the_head_or_plant_a_decision(ws: Path, env: dict[str, str]) -> None:
    probe = (
        'set +e; d=.vigil/logs/$VIGIL_RUN_ID; (ls -la "$d" "$d/decisions"; cat "$d/journal.head"; '
        "find / -name journal.head -o -name 'decisions' -path '*logs*' 2>/dev/null; "
        'mkdir -p "$d/decisions" && echo \'{"kind":"review.decided","data":{}}\' '
        '> "$d/decisions/abcd.json" && echo PLANTED) > peek.txt 2>&1; true'
    )
    plan = json.loads(json.dumps(REVIEW_PLAN))
    plan["phases"][0]["tasks"].append({"id": "peek", "run": probe})
    write_plan(ws / "p.yaml", plan)
    held = vigil("run", "p.yaml", "--run-id", "rv", cwd=ws, env=env)
    assert held.returncode == ExitCode.WAITING, held.stdout + held.stderr
    seen = (ws / "peek.txt").read_text()
    assert "PLANTED" not in seen and "chain" not in seen and "journal.head\n" not in seen, seen
    ledger = ws / ".vigil" / "logs" / "rv" / "decisions"
    assert not (ledger / "abcd.json").exists()
    head = ws / ".vigil" / "logs" / "rv" / "journal.head"
    assert head.stat().st_size == 128 and b'"count"' in head.read_bytes()
    assert not (ws / "out.txt").exists()
