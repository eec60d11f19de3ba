"""A task's ``rollback:`` command is a command of the task: ``vigil rollback RUN --all``
runs it in the task's sandbox, never on the host. Each attack is a hostile compensation
run end to end through the ``vigil`` command, on both stores: it cannot read the signing
key or the audit log, reach a host socket or the host's loopback, see the invoking
user's environment, act as root, or change the workspace. A well-behaved one still
succeeds, with its output in its log and its exit code in the audit log. Isolation
``off``, asked for explicitly, keeps the old behaviour: that is also the control showing
the probes would see a leak."""

from __future__ import annotations

import json
import os
import pwd
import uuid
from pathlib import Path
from typing import Any

import pytest
from sec_support import CONNECT, UnixServer, as_root, host_can_connect, needs_overlay

from clitools import send_step, vigil, write_plan
from vigil.errors import ExitCode
from vigil.layout import rollback_log
from vigil.workspace import tree_hash

# Built at run time: a probe that greps a tree holding this file must not match it.
TOKEN = "-".join(("tok", "invoker", uuid.uuid4().hex[:12]))
SECRET = "-".join(("sek", "rollback", uuid.uuid4().hex[:12]))


class Project:
    """A workspace, its plan and the environment every ``vigil`` command of a test gets.

    The user config directory (keys, grants) lies inside the workspace, which the sandbox
    shows: only its mask keeps a step out of it. As root the step's uid sees the
    workspace's files as its own (idmapped), so no file mode stands in the way either.
    """

    def __init__(self, tmp: Path, mode: str) -> None:
        self.ws = tmp / "ws"
        self.ws.mkdir()
        (self.ws / "keep.txt").write_text("keep\n")
        (self.ws / "a.txt").write_text("a\n")
        (self.ws / "connect.py").write_text(CONNECT)
        self.config = self.ws / "conf" / "vigil"
        self.plan = tmp / "plan.yaml"
        self.env = {"VIGIL_ISOLATION": mode, "VIGIL_CONFIG_DIR": str(self.config)}

    @property
    def key(self) -> Path:
        return self.config / "keys" / "signing.key"

    @property
    def audit_log(self) -> Path:
        return self.ws / ".vigil" / "audit" / "log.jsonl"

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return vigil(*args, cwd=self.ws, env={**self.env, **(env or {})})

    def run(self, *tasks: dict[str, Any], grant: str | None = None, **plan: Any) -> None:
        """Run a one-phase plan of ``tasks`` to success as run ``r``; ``secrets`` (name to
        source) go where a person declares them, `vigil.toml` ``[secrets]``."""
        sources = plan.pop("secrets", {})
        if sources:
            policy = self.ws / "vigil.toml"
            lines = [policy.read_text() if policy.exists() else "", "[secrets]"]
            lines += [f'{name} = {{ env = "{src["env"]}" }}' for name, src in sources.items()]
            policy.write_text("\n".join(lines) + "\n")
        write_plan(self.plan, {
            "name": "comp", "project": "comp", **plan,
            "phases": [{"id": "main", "tasks": list(tasks)}],
        })  # fmt: skip
        args = ["run", str(self.plan), "--run-id", "r", *(["--grant", grant] if grant else [])]
        done = self.cli(*args, env={"SRC_API_KEY": SECRET})
        assert done.returncode == ExitCode.OK, done.stdout + done.stderr

    def rollback(self, *, env: dict[str, str] | None = None) -> dict[str, Any]:
        """``vigil rollback r --all`` with JSON output; ``by_task`` holds each compensation."""
        done = self.cli("rollback", "r", "--all", "--format", "json", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        data["by_task"] = {c["task"]: c for c in data["compensations"]}
        return data

    def log(self, task: str) -> str:
        return rollback_log(self.ws / ".vigil", "r", task).read_text()

    def audit(self) -> list[dict[str, Any]]:
        done = self.cli("audit", "show", "--format", "json")
        assert done.returncode == 0, done.stderr
        entries: list[dict[str, Any]] = json.loads(done.stdout)
        return entries

    def init_key(self) -> str:
        made = self.cli("keys", "init")
        assert made.returncode == 0, made.stderr
        return self.key.read_text().strip()


@pytest.fixture(params=[pytest.param("overlay", marks=needs_overlay), "snapshot"])
def project(tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> Project:
    """On each store, in each isolation mode that keeps what the test checks."""
    return Project(tmp_path, request.param)


@pytest.fixture
def overlay(tmp_path: Path, backend: str) -> Project:
    """On each store, in the overlay sandbox (hidden paths, sockets, identity)."""
    return Project(tmp_path, "overlay")


def _key_probe(p: Project) -> str:
    """A compensation that tries every way to the key and the audit log it can name."""
    return (
        "set +e;"  # rollback: runs under bash -e, like run:
        f" cat {p.key} {p.audit_log} conf/vigil/keys/signing.key .vigil/audit/log.jsonl 2>&1;"
        f" ls -AR {p.config} {p.ws / '.vigil'} 2>&1;"
        f" find {p.ws} \\( -name signing.key -o -name log.jsonl \\) -printf 'found %p\\n'; true"
    )


def _saw_key_or_log(log: str, key: str, entry: str) -> list[str]:
    """What of the key and the audit log a probe's output shows (its errors aside)."""
    shown = [what for what in (key, key[:16], entry) if what in log]
    shown += [line for line in log.splitlines() if line.startswith("found ")]
    return shown + [line for line in log.splitlines() if line in ("signing.key", "log.jsonl")]


@needs_overlay
def test_a_compensation_cannot_read_the_signing_key_or_the_audit_log(overlay: Project) -> None:
    p = overlay
    key = p.init_key()
    p.run({"id": "t", "run": "echo made > out.txt", "rollback": _key_probe(p)})
    entry = p.audit_log.read_text().splitlines()[0]
    done = p.rollback()
    assert done["by_task"]["t"]["ok"] is True, done
    log = p.log("t")
    assert "No such file" in log, log  # the probe ran, and found nothing
    assert _saw_key_or_log(log, key, entry) == [], log
    assert p.key.read_text().strip() == key, "the key on the host changed"


@needs_overlay
@pytest.mark.parametrize("where", ["workspace", "tmp", "abstract"])
def test_a_compensation_reaches_no_host_unix_socket(
    overlay: Project, tmp_path: Path, where: str
) -> None:
    p = overlay
    address = {
        "workspace": str(p.ws / "h.sock"),
        "tmp": f"/tmp/vigil-comp-{uuid.uuid4().hex[:8]}.sock",
        "abstract": f"@vigil-comp-{uuid.uuid4().hex[:8]}",
    }[where]
    p.run({"id": "t", "run": "echo made > out.txt", "rollback": f"python3 connect.py {address}"})
    server = UnixServer(address)
    try:
        assert host_can_connect(address), "control: the host reaches the server"
        server.wait_for(1)
        done = p.rollback()
        comp = done["by_task"]["t"]
        assert comp["ok"] is False and comp["exit_code"] == 3, (comp, p.log("t"))
        assert "refused" in p.log("t") and "connected" not in p.log("t")
        assert server.accepted == 1, "the compensation reached the host's socket"
    finally:
        server.close()


@needs_overlay
def test_network_only_for_a_task_that_requires_it_and_only_while_its_grant_holds(
    overlay: Project, loopback: tuple[int, list[bytes]]
) -> None:
    p = overlay
    port, received = loopback
    p.init_key()
    made = p.cli("grant", "create", "--project", "comp", "--env", "dev", "--allow", "network")
    assert made.returncode == 0, made.stderr
    grant = made.stdout.strip()
    p.run(
        {"id": "closed", "run": "true", "rollback": send_step(port, "closed")},
        {"id": "open", "run": "true", "requires": ["network"], "rollback": send_step(port, "open")},
        grant=grant,
    )
    first = p.rollback()["by_task"]
    assert first["open"]["ok"] is True, (first, p.log("open"))
    assert first["closed"]["ok"] is False and first["closed"]["exit_code"] == 1, first
    assert received == [b"open"], "only the task granted network reaches the host's loopback"
    ran = [e for e in p.audit() if e["action"] == "rollback.compensate"]
    assert {(e["task"], e["reason"].split(": ")[-1]) for e in ran} == {
        ("open", "exit code 0"),
        ("closed", "exit code 1"),
    }

    # The grant is checked again when the compensation would run: revoked, it is refused,
    # recorded, and nothing runs.
    assert p.cli("grant", "revoke", grant).returncode == 0
    second = p.rollback()["by_task"]
    assert "VIGIL-GRANT-REVOKED" in second["open"]["refused"], second
    assert "exit_code" not in second["open"]
    assert received == [b"open"]
    denied = [e for e in p.audit() if e["decision"] == "deny" and e.get("task") == "open"]
    assert denied and denied[-1]["action"] == "capability.use", denied


def test_a_compensation_sees_the_tasks_environment_never_the_invokers(project: Project) -> None:
    p = project
    probe = (
        'echo "token=${DEPLOY_TOKEN:-unset} plan=$PLAN_VAR task=$TASK_VAR'
        ' rollback=$VIGIL_ROLLBACK run=$VIGIL_RUN_ID id=$VIGIL_TASK_ID attempt=$VIGIL_ATTEMPT";'
        ' echo "cwd=$PWD";'
        f' test "$API_KEY" = {SECRET} && echo "secret=$API_KEY"'
    )
    p.run(
        {"id": "t", "run": "true", "env": {"TASK_VAR": "tv"}, "secrets": ["API_KEY"],
         "rollback": probe},
        env={"PLAN_VAR": "pv"},
        secrets={"API_KEY": {"env": "SRC_API_KEY"}},
    )  # fmt: skip
    done = p.rollback(env={"DEPLOY_TOKEN": TOKEN, "SRC_API_KEY": SECRET})
    log = p.log("t")
    assert done["by_task"]["t"]["ok"] is True, (done, log)
    assert "token=unset plan=pv task=tv rollback=1 run=r id=t attempt=1" in log, log
    assert f"cwd={p.ws}\n" in log, log
    assert TOKEN not in log
    # The task's secret reaches its compensation, and is masked in its log.
    assert "secret=***" in log and SECRET not in log


def test_a_compensation_of_a_root_run_vigil_is_not_root(project: Project) -> None:
    p = project
    probe = "set +e; id -u; grep -E '^CapEff' /proc/self/status; cat /etc/shadow 2>&1; true"
    p.run({"id": "t", "run": "true", "rollback": probe})
    done = p.rollback()
    assert done["by_task"]["t"]["ok"] is True, done
    lines = p.log("t").splitlines()
    uid = int(lines[0])
    if p.env["VIGIL_ISOLATION"] == "snapshot":
        assert uid == os.getuid()  # the documented fallback: no sandbox, the caller's uid
        return
    assert lines[1].split()[1] == "0000000000000000", lines
    if as_root:
        # The workspace belongs to root, so steps (and compensations) run as nobody.
        assert uid == pwd.getpwnam("nobody").pw_uid
        shadow = Path("/etc/shadow").read_text().splitlines()
        assert not set(shadow) & set(lines), "the compensation read /etc/shadow"
    else:
        assert uid == os.getuid()  # the documented fallback: the caller, no capabilities


def test_workspace_writes_of_a_compensation_are_discarded_and_reported(project: Project) -> None:
    p = project
    before = tree_hash(p.ws, exclude=(".vigil", "conf"))
    p.run({
        "id": "t",
        "run": "echo made > out.txt",
        "rollback": "echo more >> a.txt && rm keep.txt && mkdir -p d && echo x > d/f"
        " && echo changed the workspace",
    })  # fmt: skip
    done = p.rollback()
    comp = done["by_task"]["t"]
    assert comp["ok"] is True and comp["exit_code"] == 0, (comp, p.log("t"))
    assert set(comp["discarded"]) == {"a.txt", "keep.txt", "d", "d/f"}, comp
    assert "changed the workspace" in p.log("t")
    assert tree_hash(p.ws, exclude=(".vigil", "conf")) == before, (
        "a compensation's change landed in the workspace"
    )
    # Said in the text output too (the second rollback runs the compensation again).
    text = p.cli("rollback", "r", "--all")
    assert text.returncode == 0, text.stderr
    assert "rollback command of t: ok" in text.stdout
    assert "changes to 4 workspace paths were discarded" in text.stdout, text.stdout
    assert tree_hash(p.ws, exclude=(".vigil", "conf")) == before


def test_a_compensation_that_changes_the_policy_fails_as_an_attempt_would(
    project: Project,
) -> None:
    p = project
    policy = p.ws / "vigil.toml"
    policy.write_text("# the project's policy\n")
    p.run({"id": "t", "run": "echo made > out.txt", "rollback": "echo '[x]' >> vigil.toml"})
    comp = p.rollback()["by_task"]["t"]
    assert comp["ok"] is False, comp
    if p.env["VIGIL_ISOLATION"] == "snapshot":  # writable there, refused at capture
        assert "VIGIL-PROTECTED-PATH" in comp["reason"], comp
    else:  # read-only in the sandbox
        assert comp["exit_code"] == 1 and "Read-only" in p.log("t"), (comp, p.log("t"))
    assert policy.read_text() == "# the project's policy\n"


def test_rollback_changes_nothing_when_a_compensation_cannot_be_set_up(
    tmp_path: Path, backend: str
) -> None:
    p = Project(tmp_path, "snapshot")
    p.run(
        {"id": "t", "run": "echo made > out.txt", "secrets": ["API_KEY"], "rollback": "true"},
        secrets={"API_KEY": {"env": "SRC_API_KEY"}},
    )
    ran = tree_hash(p.ws, exclude=(".vigil", "conf"))
    refused = p.cli("rollback", "r", "--all")  # SRC_API_KEY is not set now
    assert refused.returncode == ExitCode.USAGE, refused.stdout + refused.stderr
    assert "VIGIL-SECRET-UNAVAILABLE" in refused.stderr and "Traceback" not in refused.stderr
    assert tree_hash(p.ws, exclude=(".vigil", "conf")) == ran, (
        "files were restored although the compensation was refused"
    )
    assert not rollback_log(p.ws / ".vigil", "r", "t").exists()


def test_a_well_behaved_compensation_reports_ok_with_its_output_and_is_audited(
    project: Project,
) -> None:
    p = project
    word = f"undone-{uuid.uuid4().hex[:8]}"
    p.run(
        {"id": "first", "run": "echo 1 > one.txt", "rollback": f"echo {word}-first"},
        {"id": "second", "needs": ["first"], "run": "true", "rollback": f"echo {word}-second"},
    )
    done = p.rollback()
    assert [c["task"] for c in done["compensations"]] == ["second", "first"], "newest first"
    for task in ("first", "second"):
        assert done["by_task"][task] == {"task": task, "ok": True, "exit_code": 0, "discarded": []}
        assert f"{word}-{task}" in p.log(task)
    ran = [e for e in p.audit() if e["action"] == "rollback.compensate"]
    assert [(e["task"], e["decision"]) for e in ran] == [("second", "allow"), ("first", "allow")]
    assert all(e["reason"].endswith("exit code 0") for e in ran), ran


def test_isolation_off_keeps_the_old_behaviour_and_the_probes_see_it(
    tmp_path: Path, backend: str
) -> None:
    p = Project(tmp_path, "off")
    key = p.init_key()
    probe = _key_probe(p) + '; echo "token=${DEPLOY_TOKEN:-unset} uid=$(id -u)"; echo x > made.txt'
    p.run({"id": "t", "run": "true", "rollback": probe})
    entry = p.audit_log.read_text().splitlines()[0]
    done = p.rollback(env={"DEPLOY_TOKEN": TOKEN})
    comp = done["by_task"]["t"]
    assert comp["ok"] is True and comp["discarded"] == [], comp
    log = p.log("t")
    assert key in log and entry in log, "off: the compensation reads the host's files"
    assert f"token={TOKEN} uid={os.getuid()}" in log, "off: as the caller, with its environment"
    assert (p.ws / "made.txt").read_text() == "x\n", "off: and writes the real workspace"


def test_rollback_all_of_a_dry_run_runs_no_compensation(project: Project) -> None:
    """A dry run did nothing outside its throwaway sandboxes: its rollback: commands, which
    would act for real, never run."""
    p = project
    write_plan(p.plan, {
        "name": "comp", "project": "comp",
        "phases": [{"id": "main", "tasks": [
            {"id": "t", "run": "echo 1 > one.txt", "rollback": "echo undone > undone.txt"},
        ]}],
    })  # fmt: skip
    dry = p.cli("run", str(p.plan), "--run-id", "r", "--dry-run")
    assert dry.returncode == ExitCode.OK, dry.stdout + dry.stderr
    refused = p.cli("rollback", "r", "--all")
    assert refused.returncode == ExitCode.USAGE, refused.stdout + refused.stderr
    assert "dry run" in refused.stderr and "Traceback" not in refused.stderr
    assert not (p.ws / "undone.txt").exists() and not (p.ws / "one.txt").exists()
    assert not rollback_log(p.ws / ".vigil", "r", "t").exists(), "a compensation ran"
