"""The safety commands, run as the real ``vigil`` program."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clitools import vigil

PLAN = {
    "name": "release",
    "project": "shop",
    "phases": [
        {
            "id": "ship",
            "tasks": [
                {"id": "deploy", "run": "true", "requires": ["deploy"], "environment": "prod"},
            ],
        }
    ],
}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "release.yaml").write_text(yaml.safe_dump(PLAN))
    return workspace


def env(tmp_path: Path) -> dict[str, str]:
    return {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}


def run(ws: Path, *args: str) -> tuple[int, str, str]:
    done = vigil(*args, cwd=ws, env=env(ws.parent))
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow
def test_keys_grants_and_policy_end_to_end(ws: Path) -> None:
    assert run(ws, "keys", "init")[0] == 0
    code, _, err = run(ws, "keys", "init")
    assert code == 4 and "VIGIL-KEY-EXISTS" in err
    code, out, _ = run(ws, "keys", "show")
    assert code == 0 and len(out.strip()) == 64

    code, out, err = run(ws, "policy", "show", "--plan", "release.yaml", "-o", "json")
    assert code == 0, err
    shown = json.loads(out)
    assert {r["capability"] for r in shown["requirements"]} == {"run", "deploy"}
    command = shown["missing"][0]["command"]
    assert command.startswith("vigil grant create --project shop --env prod --allow deploy")

    code, out, err = run(ws, *command.split()[1:])
    assert code == 0, err
    grant_id = out.strip()
    code, out, _ = run(
        ws, "policy", "show", "--plan", "release.yaml", "--grant", grant_id, "-o", "json"
    )
    assert json.loads(out)["missing"] == []

    code, out, _ = run(ws, "grant", "attenuate", grant_id, "--allow", "deploy", "--env", "prod")
    child = out.strip()
    assert code == 0 and child.startswith("g-") and child != grant_id
    code, _, err = run(ws, "grant", "attenuate", child, "--allow", "push")
    assert code == 4 and "VIGIL-GRANT-SCOPE" in err

    code, out, _ = run(ws, "grant", "list", "--active", "-o", "json")
    assert {g["id"] for g in json.loads(out)} == {grant_id, child}
    assert run(ws, "grant", "revoke", grant_id)[0] == 0
    code, out, _ = run(ws, "grant", "list", "--active", "-o", "json")
    assert json.loads(out) == []
    code, out, _ = run(ws, "grant", "show", child, "-o", "json")
    assert json.loads(out)["status"] == "revoked"
    code, _, err = run(ws, "grant", "show", "g-000000000000")
    assert code == 2 and "VIGIL-GRANT-NOT-FOUND" in err


@pytest.mark.slow
def test_break_glass_rules_at_the_command_line(ws: Path) -> None:
    run(ws, "keys", "init")
    base = ["grant", "create", "--project", "shop", "--env", "prod", "--break-glass"]
    code, _, err = run(ws, *base, "--expires-in", "1h")
    assert code == 2 and "VIGIL-GRANT-BREAK-GLASS" in err
    code, _, err = run(ws, *base, "--reason", "outage", "--expires-in", "3h")
    assert code == 2 and "VIGIL-GRANT-BREAK-GLASS" in err
    code, out, err = run(ws, *base, "--reason", "outage", "--expires-in", "90m", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["break_glass"] == "outage"


@pytest.mark.slow
def test_halt_and_unhalt(ws: Path) -> None:
    assert run(ws, "halt", "--project", "shop", "--reason", "bad deploy")[0] == 0
    code, out, _ = run(ws, "unhalt", "--project", "shop")
    assert code == 0 and "unhalted shop" in out
    code, out, _ = run(ws, "unhalt", "--project", "shop")
    assert "was not halted" in out


@pytest.mark.slow
def test_audit_verify_show_and_export(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vigil.config import load_config
    from vigil.engine.audit import Auditor
    from vigil.safety.audit import audit_path

    run(ws, "keys", "init")
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(ws.parent / "config"))
    monkeypatch.delenv("VIGIL_DATABASE_URL", raising=False)
    path = audit_path(ws / ".vigil")
    auditor = Auditor(load_config(ws))  # seals each entry and records the head in the store
    for i in range(5):
        auditor.record(actor="a", action="deploy", decision="allow", run=f"r{i % 2}", reason=str(i))

    code, out, err = run(ws, "audit", "verify")
    assert code == 0 and "5 entries" in out, err
    code, out, _ = run(ws, "audit", "show", "--run", "r1", "-o", "json")
    assert [e["seq"] for e in json.loads(out)] == [2, 4]
    code, out, _ = run(ws, "audit", "export")
    assert out.encode() == path.read_bytes()

    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"allow"', b'"deny"')
    path.write_bytes(b"\n".join(lines))
    code, _, err = run(ws, "audit", "verify")
    assert code == 4 and "VIGIL-AUDIT-TAMPERED" in err and "seq 2" in err
    code, out, _ = run(ws, "audit", "verify", "-o", "json")
    assert code == 4 and json.loads(out)["first_bad_seq"] == 2


@pytest.mark.slow
def test_explain_knows_codes_from_every_subsystem(ws: Path) -> None:
    code, out, _ = run(ws, "explain", "vigil-grant-revoked")
    assert code == 0 and "VIGIL-GRANT-REVOKED" in out and "remedy" in out
    code, out, _ = run(ws, "explain", "VIGIL-RUN-LOCKED", "-o", "json")
    assert json.loads(out)["code"] == "VIGIL-RUN-LOCKED"
    code, _, err = run(ws, "explain", "VIGIL-NOPE")
    assert code == 2 and "VIGIL-USAGE" in err


def test_errors_doc_lists_every_code() -> None:
    from vigil.safety.catalog import errors_markdown, full_catalog

    text = errors_markdown()
    codes = full_catalog()
    assert {"VIGIL-GRANT-EXPIRED", "VIGIL-HALTED", "VIGIL-AUDIT-TAMPERED"} <= set(codes)
    for code in codes:
        assert f"`{code}`" in text
