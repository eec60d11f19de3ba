"""Authority end to end: real runs of the ``vigil`` command under grants, expiry, revocation
and halts, in real sandboxes.

Keys and grants live in a private config directory outside ``/tmp`` (the sandbox mounts a
fresh ``/tmp``, which would hide any path there whether or not vigil means to hide it).
Tasks that must wait for the test block on a file in a sibling directory the sandbox can
read, so no pass/fail depends on how fast anything runs.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from clitools import send_step, spawn, status, tagged, vigil, wait_for, write_plan
from enginetools import HANG
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside /tmp: the config dir lives here, and so do test-to-step signals."""
    base = Path(tempfile.mkdtemp(prefix="vigil-auth-", dir="/var/tmp"))
    (base / "signals").mkdir()
    # Steps see only what is declared; a step running as another user must traverse it.
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(outside: Path) -> dict[str, str]:
    """The environment every vigil command of a test runs with; the signing key exists."""
    values = {"VIGIL_CONFIG_DIR": str(outside / "config")}
    done = vigil("keys", "init", cwd=outside, env=values)
    assert done.returncode == 0, done.stderr
    return values


@pytest.fixture
def ws(tmp_path: Path, outside: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    # The test signals steps through files: steps may read that directory (only).
    (path / "vigil.toml").write_text(f'[workspace]\nread_only_paths = ["{outside / "signals"}"]\n')
    return path


def cli(ws: Path, env: dict[str, str], *args: str) -> Any:
    return vigil(*args, cwd=ws, env=env)


def grant(ws: Path, env: dict[str, str], *args: str) -> str:
    done = cli(ws, env, "grant", "create", *args)
    assert done.returncode == 0, done.stderr
    return str(done.stdout.strip())


def plan_of(project: str, *tasks: dict[str, Any], name: str = "release") -> dict[str, Any]:
    return {"name": name, "project": project, "phases": [{"id": "main", "tasks": list(tasks)}]}


def audit(ws: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = cli(ws, env, "audit", "show", "--format", "json")
    assert done.returncode == 0, done.stderr
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    return entries


def runs(ws: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    done = cli(ws, env, "runs", "--format", "json")
    assert done.returncode == 0, done.stderr
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return listed


def files_of(ws: Path) -> dict[str, bytes]:
    """Every workspace file outside vigil's state directory, with its bytes."""
    return {
        str(p.relative_to(ws)): p.read_bytes()
        for p in sorted(ws.rglob("*"))
        if p.is_file() and ".vigil" not in p.relative_to(ws).parts
    }


def tasks_by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in view["tasks"]}


def wait_until(signal_dir: Path, name: str) -> str:
    """A shell loop that blocks until the test creates ``name`` in ``signal_dir``."""
    return f"while [ ! -e {shlex.quote(str(signal_dir / name))} ]; do sleep 0.05; done"


RELEASE = plan_of(
    "shop",
    {"id": "build", "run": "echo built > built.txt"},
    {"id": "ship", "needs": ["build"], "run": "echo shipped > shipped.txt", "requires": ["deploy"]},
    {
        "id": "promote",
        "needs": ["ship"],
        "run": "echo promoted > promoted.txt",
        "environment": "prod",
    },
)


# 1. no grant: refused before anything runs, with the command that fixes it -----------------


def test_a_privileged_plan_without_a_grant_is_refused_before_anything_runs(
    ws: Path, env: dict[str, str]
) -> None:
    write_plan(ws / "release.yaml", RELEASE)
    (ws / "data.txt").write_text("untouched\n")
    before = files_of(ws)

    refused = cli(ws, env, "run", "release.yaml", "--format", "json")
    assert refused.returncode == ExitCode.REFUSED, refused.stdout + refused.stderr
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "VIGIL-GRANT-REQUIRED"
    details = "\n".join(error["details"])
    # Each task and what it lacks, per environment.
    assert "dev: deploy for ship" in details
    assert "prod: run for promote" in details
    assert runs(ws, env) == []
    assert files_of(ws) == before
    assert not (ws / ".vigil" / "logs").exists()

    # The command shown is one grant for the whole run (a run takes a single --grant).
    index = error["details"].index("one grant for this run:")
    command = shlex.split(error["details"][index + 1])
    assert command[:3] == ["vigil", "grant", "create"]
    granted = cli(ws, env, *command[1:])
    assert granted.returncode == 0, granted.stderr
    grant_id = granted.stdout.strip()

    done = cli(ws, env, "run", "release.yaml", "--grant", grant_id, "--run-id", "r1")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert (ws / "shipped.txt").read_text() == "shipped\n"
    assert (ws / "promoted.txt").read_text() == "promoted\n"

    entries = audit(ws, env)
    denied_start = [e for e in entries if e["action"] == "run.start"]
    assert denied_start and denied_start[0]["decision"] == "deny"
    assert "VIGIL-GRANT-REQUIRED" in denied_start[0]["reason"]
    allowed = {
        (e["task"], e["capability"])
        for e in entries
        if e["run"] == "r1" and e["decision"] == "allow" and e["grant"] == grant_id
    }
    assert {("ship", "deploy"), ("promote", "run")} <= allowed
    assert ("build", "run") not in allowed  # nothing privileged there
    verified = cli(ws, env, "audit", "verify", "--format", "json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["ok"] and report["checkpoints"] >= 1  # the run's end is sealed


def test_the_refusal_printed_for_a_person_holds_the_command_on_one_line(
    ws: Path, env: dict[str, str]
) -> None:
    write_plan(ws / "release.yaml", RELEASE)
    refused = cli(ws, env, "run", "release.yaml")
    assert refused.returncode == ExitCode.REFUSED
    lines = [line.strip() for line in refused.stderr.splitlines()]
    command = next(line for line in lines if line.startswith("vigil grant create"))
    assert command.endswith("--plan release.yaml"), refused.stderr


# 2. expiry and revocation during the run -------------------------------------------------


def mid_run_plan(signal_dir: Path) -> dict[str, Any]:
    return plan_of(
        "shop",
        {"id": "slow", "run": wait_until(signal_dir, "go")},
        {
            "id": "ship",
            "needs": ["slow"],
            "run": "echo shipped > shipped.txt",
            "requires": ["deploy"],
            "retry": {"attempts": 3, "initial": "0.1s"},
        },
        {"id": "after", "needs": ["ship"], "run": "echo after > after.txt"},
        {"id": "other", "run": "echo other > other.txt"},
    )


def _ends_mid_run(
    ws: Path, env: dict[str, str], signals: Path, stop: Any, code: str, run_id: str = "mid"
) -> bool:
    """Start the run, let ``stop()`` void its grant while ``slow`` runs, then release it.

    False when the run was refused before ``slow`` started (a short grant that expired
    while the command was starting): the caller tries again with a longer one."""
    write_plan(ws / "p.yaml", mid_run_plan(signals))
    grant_id = stop.grant
    proc = spawn("run", "p.yaml", "--grant", grant_id, "--run-id", run_id, cwd=ws, env=env)
    try:
        wait_for(lambda: bool(tagged(f"{run_id}/slow/", ws)) or proc.poll() is not None)
        if proc.poll() is not None:
            out, err = proc.communicate()
            if isinstance(stop, _Expire) and "VIGIL-GRANT-EXPIRED" in out + err:
                return False
            raise AssertionError(out + err)
        stop()
        (signals / "go").touch()
        out, err = proc.communicate(timeout=HANG)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.RUN_FAILED, out + err
    view = tasks_by_id(status(run_id, ws, env))
    ship = view["ship"]
    assert ship["state"] == "failed"
    assert len(ship["attempts"]) == 1  # a refusal is not retried
    assert code in ship["attempts"][0]["reason"]
    assert view["after"]["state"] == "skipped"
    assert view["other"]["state"] == "succeeded"
    assert (ws / "other.txt").exists()
    assert not (ws / "shipped.txt").exists() and not (ws / "after.txt").exists()
    denied = [e for e in audit(ws, env) if e["run"] == run_id and e["decision"] == "deny"]
    assert [(e["task"], e["capability"]) for e in denied] == [("ship", "deploy")]
    assert code in denied[0]["reason"] and denied[0]["grant"] == grant_id
    assert cli(ws, env, "audit", "verify").returncode == 0
    return True


class _Expire:
    """Waits until a short grant has expired."""

    def __init__(self, ws: Path, env: dict[str, str], lifetime: str) -> None:
        args = ("--project", "shop", "--env", "dev", "--allow", "deploy", "--expires-in", lifetime)
        created = cli(ws, env, "grant", "create", *args, "-o", "json")
        assert created.returncode == 0, created.stderr
        shown = json.loads(created.stdout)
        self.grant = str(shown["id"])
        self.expires = datetime.fromisoformat(shown["expires_at"]).timestamp()

    def __call__(self) -> None:
        # Waiting for the clock is the point here, not a race: the outcome does not depend on it.
        time.sleep(max(0.0, self.expires - time.time() + 1.1))


class _Revoke:
    """Revokes a long grant from another process."""

    def __init__(self, ws: Path, env: dict[str, str]) -> None:
        self.ws, self.env = ws, env
        self.grant = grant(ws, env, "--project", "shop", "--env", "dev", "--allow", "deploy")

    def __call__(self) -> None:
        assert cli(self.ws, self.env, "grant", "revoke", self.grant).returncode == 0


def test_a_grant_expiring_mid_run_stops_the_next_privileged_task_only(
    ws: Path, env: dict[str, str], outside: Path
) -> None:
    # A short grant keeps the test short; where the command took longer to start than the
    # grant lived, the run is refused at its start check and tried with a longer grant.
    for lifetime in ("6s", "30s", "120s"):
        stop = _Expire(ws, env, lifetime)
        if _ends_mid_run(
            ws, env, outside / "signals", stop, "VIGIL-GRANT-EXPIRED", f"mid{lifetime}"
        ):
            return
    pytest.fail("every grant expired before the run passed its start check")


def test_a_grant_revoked_mid_run_stops_the_next_privileged_task_only(
    ws: Path, env: dict[str, str], outside: Path
) -> None:
    assert _ends_mid_run(ws, env, outside / "signals", _Revoke(ws, env), "VIGIL-GRANT-REVOKED")


# 3. grants that do not fit: refused with their own code before starting ------------------


def test_grants_that_do_not_fit_are_refused_with_their_own_code(
    ws: Path, env: dict[str, str]
) -> None:
    plan = plan_of(
        "shop",
        {"id": "stage", "run": "echo s > s.txt", "requires": ["deploy"], "environment": "staging"},
    )
    write_plan(ws / "p.yaml", plan)
    write_plan(ws / "other.yaml", {**plan, "name": "another plan"})
    cases = {
        "wrong project": (
            ["--project", "bank", "--env", "staging", "--allow", "deploy"],
            "VIGIL-GRANT-SCOPE",
            "project",
        ),
        "wrong environment": (
            ["--project", "shop", "--env", "prod", "--allow", "deploy"],
            "VIGIL-GRANT-SCOPE",
            "environment",
        ),
        "missing capability": (
            ["--project", "shop", "--env", "staging", "--allow", "push"],
            "VIGIL-GRANT-SCOPE",
            "deploy",
        ),
        "another plan": (
            ["--env", "staging", "--allow", "deploy", "--plan", "other.yaml"],
            "VIGIL-GRANT-PLAN",
            "plan",
        ),
    }
    for label, (args, code, word) in cases.items():
        grant_id = grant(ws, env, *args)
        refused = cli(ws, env, "run", "p.yaml", "--grant", grant_id, "--format", "json")
        assert refused.returncode == ExitCode.REFUSED, (label, refused.stdout, refused.stderr)
        error = json.loads(refused.stdout)["error"]
        assert error["code"] == code, (label, error)
        assert word in " ".join(error["details"]), (label, error)
    assert runs(ws, env) == []
    assert not (ws / "s.txt").exists()
    denials = [e for e in audit(ws, env) if e["action"] == "run.start"]
    assert len(denials) == len(cases) and all(e["decision"] == "deny" for e in denials)

    # The same plan with a grant that fits runs.
    fits = grant(ws, env, "--env", "staging", "--allow", "deploy", "--plan", "p.yaml")
    done = cli(ws, env, "run", "p.yaml", "--grant", fits)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr


# 4. halt ----------------------------------------------------------------------------------


def test_halt_stops_the_projects_run_and_refuses_new_ones_until_unhalted(
    ws: Path, env: dict[str, str], outside: Path
) -> None:
    signals = outside / "signals"
    write_plan(ws / "shop.yaml", plan_of("shop", {"id": "work", "run": "sleep 300"}))
    blocked = plan_of(
        "bank", {"id": "work", "run": wait_until(signals, "bank") + "; echo ok > bank.txt"}
    )
    write_plan(ws / "bank.yaml", blocked)
    write_plan(ws / "quick.yaml", plan_of("shop", {"id": "work", "run": "echo ok > shop.txt"}))
    shop = spawn("run", "shop.yaml", "--run-id", "shop-1", cwd=ws, env=env)
    bank = spawn("run", "bank.yaml", "--run-id", "bank-1", cwd=ws, env=env)
    try:
        wait_for(lambda: bool(tagged("shop-1/work/", ws)) and bool(tagged("bank-1/work/", ws)))
        halted = cli(ws, env, "halt", "--project", "shop", "--reason", "bad deploy, investigating")
        assert halted.returncode == 0, halted.stderr
        shop_out, shop_err = shop.communicate(timeout=HANG)
        assert shop.returncode == ExitCode.CANCELLED, shop_out + shop_err
        assert status("shop-1", ws, env)["state"] == "cancelled"
        wait_for(lambda: not tagged("shop-1/", ws))

        refused = cli(ws, env, "run", "quick.yaml", "--run-id", "shop-2")
        assert refused.returncode == ExitCode.REFUSED
        assert "VIGIL-HALTED" in refused.stderr and "bad deploy" in refused.stderr
        assert "shop-2" not in {r["id"] for r in runs(ws, env)}

        # Another project's run is untouched by the halt.
        assert bank.poll() is None
        (signals / "bank").touch()
        bank_out, bank_err = bank.communicate(timeout=HANG)
        assert bank.returncode == ExitCode.OK, bank_out + bank_err
        assert (ws / "bank.txt").exists()
    finally:
        for proc in (shop, bank):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert cli(ws, env, "unhalt", "--project", "shop").returncode == 0
    again = cli(ws, env, "run", "quick.yaml", "--run-id", "shop-3")
    assert again.returncode == ExitCode.OK, again.stdout + again.stderr
    assert (ws / "shop.txt").exists()
    actions = [(e["action"], e["decision"]) for e in audit(ws, env)]
    assert ("halt", "allow") in actions and ("unhalt", "allow") in actions
    assert actions.index(("halt", "allow")) < actions.index(("unhalt", "allow"))
    assert ("run.start", "deny") in actions  # the refused shop-2
    assert cli(ws, env, "audit", "verify").returncode == 0


# 7. network -------------------------------------------------------------------------------


def test_only_a_task_that_requires_network_under_a_grant_reaches_the_host(
    ws: Path, env: dict[str, str], loopback: tuple[int, list[bytes]]
) -> None:
    port, received = loopback
    write_plan(
        ws / "closed.yaml", plan_of("shop", {"id": "call", "run": send_step(port, "closed")})
    )
    closed = cli(ws, env, "run", "closed.yaml", "--run-id", "closed")
    assert closed.returncode == ExitCode.RUN_FAILED, closed.stdout + closed.stderr
    log = cli(ws, env, "logs", "closed", "call").stdout
    # Its own network namespace has a loopback with nobody listening.
    assert "ConnectionRefusedError" in log or "unreachable" in log, log
    assert received == []

    opened = plan_of(
        "shop", {"id": "call", "run": send_step(port, "open"), "requires": ["network"]}
    )
    write_plan(ws / "open.yaml", opened)
    refused = cli(ws, env, "run", "open.yaml")
    assert refused.returncode == ExitCode.REFUSED and "VIGIL-GRANT-REQUIRED" in refused.stderr
    grant_id = grant(ws, env, "--project", "shop", "--env", "dev", "--allow", "network")
    done = cli(ws, env, "run", "open.yaml", "--grant", grant_id, "--run-id", "open")
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    assert received == [b"open"]
