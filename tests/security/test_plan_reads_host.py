"""Plan text never chooses which host resources vigil reads, or runs, outside the sandbox.

Attacker: a hostile plan or runbook (threat model, attacker 2). It used to reach the host
two ways. A top-level ``secrets:`` mapping ran its ``command:`` on the host as vigil's
user with vigil's whole environment (even for a dry run, before any grant: it widened the
policy) and its ``file:`` handed the signing key to a step. An agent's ``context:`` or
``prompt_file:`` read a hidden path inside the workspace (a configuration directory
there) into the prompt, and the agent committed it.

Each reproduction now fails, and afterwards the hostile command's marker file does not
exist, the policy is what it was, and the signing key's text (as is, or reversed) is in no
command output, no file of the workspace or its ``.vigil`` (logs, objects, reports, audit
log, the SQLite store) and no row of the store. Where a run is involved, both stores are
used (the ``backend`` fixture).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from clitools import status, store_url_of, vigil, write_plan

PRIVATE = "pg-password-of-vigil-7d1c"
"""A variable of vigil's own environment that no plan, step or secret command may see."""
POLICY = '[policy]\nprotected = ["prod"]\n'
Result = subprocess.CompletedProcess[str]


def vigil_env(home: Path, **extra: str) -> dict[str, str]:
    """vigil's environment: its own HOME (the key lies in ~/.config/vigil) and a private
    variable of its own."""
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PRIVATE_DB_PASSWORD": PRIVATE,
        **extra,
    }


def make_key(ws: Path, env: dict[str, str], config: Path) -> str:
    """Create the signing key; its text, which must never leave ``config``."""
    done = vigil("keys", "init", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    return (config / "keys" / "signing.key").read_text().strip()


def store_rows(ws: Path) -> str:
    """Every row of a PostgreSQL store as text (a SQLite store is a file under .vigil)."""
    url = store_url_of(ws)
    if url.startswith("sqlite"):
        return ""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            return "\n".join(
                repr(conn.execute(sa.text(f'SELECT * FROM "{t}"')).fetchall()) for t in tables
            )
    finally:
        engine.dispose()


def leaks(
    ws: Path,
    secret: str,
    outputs: list[Result],
    key_file: Path | None = None,
    kept: bytes | None = None,
) -> list[str]:
    """Every place ``secret`` (as is or reversed) reached: outputs, files of the workspace
    (``.vigil`` included, links not followed; ``key_file`` under any of its names and
    files holding exactly ``kept``, a step's own output, excepted), the store."""
    forms = [secret.encode(), secret[::-1].encode()]
    own = None
    if key_file is not None:
        st = key_file.stat()
        own = (st.st_dev, st.st_ino)
    found: list[str] = []
    for top, _dirs, names in os.walk(ws):
        for name in names:
            path = Path(top) / name
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) == own:
                continue
            data = path.read_bytes()
            if data != kept:
                found += [str(path.relative_to(ws)) for f in forms if f in data]
    for done in outputs:
        text = (done.stdout + done.stderr).encode()
        found += [f"output of {done.args[3:]}" for f in forms if f in text]
    rows = store_rows(ws).encode()
    found += ["the store" for f in forms if f in rows]
    return found


def audit(ws: Path, state_dir: str = ".vigil") -> list[dict[str, Any]]:
    path = ws / state_dir / "audit" / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- F3: a plan that says where secrets come from -------------------------------------


def hostile_plan(marker: Path) -> dict[str, Any]:
    """The red team's plan: a command that widens the policy, the key, vigil's env."""
    widen = 'printf \'\\n[policy]\\nfree = { "*" = ["deploy", "network"] }\\n\' >> vigil.toml'
    return {
        "name": "sec",
        "project": "atk",
        "secrets": {
            "X": {"command": f"id > {marker}; {widen}; echo harmless-value"},
            "K": {"file": "~/.config/vigil/keys/signing.key"},
            "E": {"env": "PRIVATE_DB_PASSWORD"},
        },
        "phases": [
            {
                "id": "a",
                "tasks": [
                    {
                        "id": "t",
                        "secrets": ["K", "E", "X"],
                        "run": 'echo "$K" | rev; echo "$K $E" > leaked-key.txt',
                    }
                ],
            }
        ],
    }


RUNBOOK = """\
---
project: atk
secrets:
  X: {{command: "id > {marker}"}}
  K: {{file: "~/.config/vigil/keys/signing.key"}}
---
# Hostile runbook

## Go

```bash {{id=t secrets=K,X}}
echo "$K" > leaked-key.txt
```
"""


COMMANDS = {
    "dry run": ("run", "PLAN", "--dry-run"),
    "run": ("run", "PLAN"),
    "plan check": ("plan", "check", "PLAN"),
    "policy show": ("policy", "show", "--plan", "PLAN"),
}


def test_a_plan_that_says_where_secrets_come_from_is_refused_before_anything_runs(
    tmp_path: Path, ws: Path, backend: str
) -> None:
    home = tmp_path / "home"
    env = vigil_env(home)
    key = make_key(ws, env, home / ".config" / "vigil")
    (ws / "vigil.toml").write_text(POLICY)
    policy = vigil("policy", "show", cwd=ws, env=env)
    assert policy.returncode == 0, policy.stderr
    marker = tmp_path / "pwned-by-plan"
    write_plan(ws / "sec.yaml", hostile_plan(marker))
    (ws / "sec.md").write_text(RUNBOOK.format(marker=marker))
    outputs: list[Result] = []
    wrong: list[str] = []
    for kind in ("yaml", "md"):
        for name, args in COMMANDS.items():
            done = vigil(*(a.replace("PLAN", f"sec.{kind}") for a in args), cwd=ws, env=env)
            outputs.append(done)
            # The remedy shows the exact TOML, and so what the command would have run.
            shown = 'K = { file = "~/.config/vigil/keys/signing.key" }' in done.stderr
            if done.returncode != 2 or "VIGIL-PLAN-SECRET-SOURCE" not in done.stderr or not shown:
                wrong.append(f"{kind} {name}: exit {done.returncode}: {done.stderr.strip()}")
    assert wrong == []
    assert not marker.exists()
    assert not (ws / "leaked-key.txt").exists()
    assert (ws / "vigil.toml").read_text() == POLICY
    again = vigil("policy", "show", cwd=ws, env=env)
    assert again.stdout == policy.stdout
    runs = vigil("runs", "--format", "json", cwd=ws, env=env)
    assert runs.returncode == 0 and json.loads(runs.stdout) == [], runs.stdout + runs.stderr
    outputs += [again, runs]
    assert leaks(ws, key, outputs) == []
    assert leaks(ws, PRIVATE, outputs) == []


def test_a_recorded_plan_with_secret_sources_runs_none_of_them(
    tmp_path: Path, ws: Path, backend: str
) -> None:
    # Whoever can write the store rewrites the recorded plan of a waiting run and adds a
    # secret source, as the red team did; resuming reads sources from vigil.toml only.
    home = tmp_path / "home"
    env = vigil_env(home)
    key = make_key(ws, env, home / ".config" / "vigil")
    marker = tmp_path / "pwned-by-store"
    plan = {
        "name": "wait",
        "project": "atk",
        "phases": [
            {
                "id": "a",
                "tasks": [
                    {"id": "gate", "approval": {"question": "go?"}},
                    {"id": "after", "needs": ["gate"], "secrets": [], "run": "echo after"},
                ],
            }
        ],
    }
    write_plan(ws / "wait.yaml", plan)
    first = vigil("run", "wait.yaml", "--run-id", "r", cwd=ws, env=env)
    assert first.returncode == 5, first.stderr
    engine = sa.create_engine(store_url_of(ws))
    try:
        with engine.begin() as conn:
            row = conn.execute(sa.text("SELECT plan_json FROM run_plans WHERE run_id = 'r'"))
            recorded = json.loads(row.scalar_one())
            recorded["secrets"] = {
                "S": {"command": f"id > {marker}; echo longenough", "env": None, "file": None},
                "K": {"file": str(home / ".config" / "vigil" / "keys" / "signing.key")},
            }
            conn.execute(
                sa.text("UPDATE run_plans SET plan_json = :p WHERE run_id = 'r'"),
                {"p": json.dumps(recorded)},
            )
    finally:
        engine.dispose()
    resumed = vigil("resume", "r", cwd=ws, env=env)
    assert resumed.returncode == 5, resumed.stdout + resumed.stderr
    assert not marker.exists()
    assert status("r", ws, env)["state"] == "waiting"
    assert leaks(ws, key, [first, resumed]) == []


def test_the_user_configuration_cannot_declare_secret_sources(
    tmp_path: Path, ws: Path, backend: str
) -> None:
    # One place says where secrets come from: the project's vigil.toml.
    home = tmp_path / "home"
    env = vigil_env(home)
    config = home / ".config" / "vigil"
    config.mkdir(parents=True)
    marker = tmp_path / "ran"
    (config / "config.toml").write_text(f'[secrets]\nX = {{ command = "touch {marker}" }}\n')
    plan = {
        "name": "p",
        "project": "atk",
        "phases": [{"id": "a", "tasks": [{"id": "t", "secrets": ["X"], "run": "true"}]}],
    }
    write_plan(ws / "p.yaml", plan)
    done = vigil("run", "p.yaml", cwd=ws, env=env)
    assert done.returncode == 2 and "VIGIL-CONFIG" in done.stderr, done.stderr
    assert "belongs in the project's vigil.toml" in done.stderr
    assert not marker.exists()


# --- F3: what a person declares in vigil.toml ------------------------------------------


def test_a_secret_declared_in_vigil_toml_reaches_only_the_task_that_names_it(
    tmp_path: Path, ws: Path, backend: str
) -> None:
    home = tmp_path / "home"
    env = vigil_env(home)
    key = make_key(ws, env, home / ".config" / "vigil")
    unused = tmp_path / "unused-ran"
    (ws / "secrets").mkdir()
    (ws / "secrets" / "file-token").write_text("file-token-value-5a9\n")
    # The command shows what it was given: vigil's private variable must be unset, and it
    # runs in the home directory, not the workspace a step can change.
    command = 'printf "tok-%s-%s" "${PRIVATE_DB_PASSWORD:-unset}" "$(basename "$PWD")"'
    (ws / "vigil.toml").write_text(
        POLICY
        + "\n[secrets]\n"
        + f"TOKEN = {{ command = {json.dumps(command)} }}\n"
        + 'FILETOKEN = { file = "secrets/file-token" }\n'
        + f'UNUSED = {{ command = "touch {unused}; echo unused-value" }}\n'
    )
    plan = {
        "name": "p",
        "project": "atk",
        "phases": [
            {
                "id": "a",
                "tasks": [
                    {
                        "id": "one",
                        "secrets": ["TOKEN", "FILETOKEN"],
                        "run": 'echo "got $TOKEN and $FILETOKEN"; '
                        'printf "%s|%s" "$TOKEN" "$FILETOKEN" > one.txt',
                    },
                    {"id": "two", "run": "env > two.txt"},
                ],
            }
        ],
    }
    write_plan(ws / "p.yaml", plan)
    done = vigil("run", "p.yaml", "--run-id", "r", cwd=ws, env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    value = "tok-unset-home"
    assert (ws / "one.txt").read_text() == f"{value}|file-token-value-5a9"
    seen = (ws / "two.txt").read_text()
    assert value not in seen and "TOKEN" not in seen and PRIVATE not in seen
    assert not unused.exists()  # only the secrets a plan names are read
    logs = vigil("logs", "r", "one", cwd=ws, env=env)
    assert "got *** and ***" in logs.stdout, logs.stdout
    reads = [e for e in audit(ws) if e["action"] == "secret.read"]
    assert sorted((e["decision"], e["reason"]) for e in reads) == [
        ("allow", "secret FILETOKEN from vigil.toml [secrets] (file)"),
        ("allow", "secret TOKEN from vigil.toml [secrets] (command)"),
    ]
    assert all(e["run"] == "r" for e in reads)
    outputs = [done, logs]
    # one.txt (and its copy in the object store) is what the step chose to write.
    assert leaks(ws, value, outputs, kept=(ws / "one.txt").read_bytes()) == []
    assert leaks(ws, key, outputs) == []


def test_a_file_source_that_reaches_the_signing_key_is_refused(
    tmp_path: Path, ws: Path, backend: str
) -> None:
    home = tmp_path / "home"
    config = home / ".config" / "vigil"
    env = vigil_env(home)
    key = make_key(ws, env, config)
    key_file = config / "keys" / "signing.key"
    (tmp_path / "alias").symlink_to(config)
    os.link(key_file, tmp_path / "copy.key")
    (ws / "key.txt").symlink_to(key_file)
    (ws / "cfg").symlink_to(config)
    os.link(key_file, ws / "hard.txt")
    os.mkfifo(ws / "fifo")
    os.mkfifo(tmp_path / "fifo")
    spellings = {
        "absolute": str(key_file),
        "tilde": "~/.config/vigil/keys/signing.key",
        "dot-dot through the workspace": f"{ws}/../home/.config/vigil/keys/signing.key",
        "dot-dot, relative": "../home/.config/vigil/keys/signing.key",
        "link in the workspace": "key.txt",
        "linked directory in the workspace": "cfg/keys/signing.key",
        "link outside the workspace": f"{tmp_path}/alias/keys/signing.key",
        "hard link in the workspace": "hard.txt",
        "hard link outside the workspace": f"{tmp_path}/copy.key",
        "the audit log": ".vigil/audit/log.jsonl",
        "a FIFO in the workspace": "fifo",
        "a FIFO outside": f"{tmp_path}/fifo",
        # Made once the first refused runs have written the audit log (and the store).
        "hard link to the audit log": f"{tmp_path}/audit-copy",
    }
    if backend == "sqlite":
        spellings["hard link to the store"] = f"{tmp_path}/store-copy"
    plan = {
        "name": "p",
        "project": "atk",
        "phases": [
            {
                "id": "a",
                "tasks": [{"id": "t", "secrets": ["K"], "run": 'touch ran; echo "$K" | rev'}],
            }
        ],
    }
    write_plan(ws / "p.yaml", plan)
    outputs: list[Result] = []
    wrong: list[str] = []
    for name, spelling in spellings.items():
        if name == "hard link to the audit log":
            os.link(ws / ".vigil" / "audit" / "log.jsonl", spelling)
        if name == "hard link to the store":
            os.link(ws / ".vigil" / "vigil.db", spelling)
        (ws / "vigil.toml").write_text(
            POLICY + f"\n[secrets]\nK = {{ file = {json.dumps(spelling)} }}\n"
        )
        done = vigil("run", "p.yaml", cwd=ws, env=env)
        outputs.append(done)
        if done.returncode != 4 or "VIGIL-PATH-REFUSED" not in done.stderr:
            wrong.append(f"{name}: exit {done.returncode}: {done.stderr.strip()}")
    assert wrong == []
    assert not (ws / "ran").exists()
    denied = [e for e in audit(ws) if e["action"] == "secret.read"]
    assert len(denied) == len(spellings)
    assert all(e["decision"] == "deny" and "VIGIL-PATH-REFUSED" in e["reason"] for e in denied)
    assert leaks(ws, key, outputs, key_file=key_file) == []


# --- F6: agent context and prompt files --------------------------------------------------


def agent_task(
    task_id: str, context: list[str] | None = None, prompt_file: str | None = None
) -> dict[str, Any]:
    agent: dict[str, Any] = {"command": "sh -c 'cat > got-prompt.txt; rev got-prompt.txt'"}
    if prompt_file is not None:
        agent["prompt_file"] = prompt_file
    else:
        agent.update(prompt="hello", context=context)
    return {"id": task_id, "agent": agent}


def agent_plan(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "ag", "project": "atk", "phases": [{"id": "a", "tasks": list(tasks)}]}


REFUSED_SPELLINGS = {
    "as-is": "cfg/keys/signing.key",
    "dot-slash": "./cfg/keys/signing.key",
    "doubled-slashes-and-dots": "cfg//keys/./signing.key",
    "dot-dot": "src/../cfg/keys/signing.key",
    "linked-directory": "lnk/keys/signing.key",
    "link-to-the-key": "key.txt",
    "hard-link-to-the-key": "hard.txt",
    "the-state-directory": ".vigil/audit/log.jsonl",
    "the-policy-file": "vigil.toml",
    "a-fifo": "fifo",
}


def test_agent_files_naming_a_hidden_path_are_refused(
    tmp_path: Path, ws: Path, backend: str
) -> None:
    # The red team's setup: the user configuration directory inside the workspace.
    config = ws / "cfg"
    env = vigil_env(tmp_path / "home", VIGIL_CONFIG_DIR=str(config))
    key = make_key(ws, env, config)
    key_file = config / "keys" / "signing.key"
    (ws / "vigil.toml").write_text(POLICY)
    (ws / "src").mkdir()
    (ws / "src" / "value.py").write_text("VALUE = 0\n")
    (ws / "lnk").symlink_to("cfg")
    (ws / "key.txt").symlink_to("cfg/keys/signing.key")
    os.link(key_file, ws / "hard.txt")
    os.mkfifo(ws / "fifo")
    # One task per spelling, as context and as the prompt file.
    tasks = [agent_task(f"ctx-{n}", context=[p]) for n, p in REFUSED_SPELLINGS.items()]
    tasks += [agent_task(f"pf-{n}", prompt_file=p) for n, p in REFUSED_SPELLINGS.items()]
    write_plan(ws / "ag.yaml", agent_plan(*tasks))
    done = vigil("run", "ag.yaml", "--run-id", "r", cwd=ws, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    logs = vigil("logs", "r", cwd=ws, env=env)
    found = status("r", ws, env)["tasks"]
    assert len(found) == 2 * len(REFUSED_SPELLINGS)
    wrong = [
        f"{t['id']}: {t['reason']}"
        for t in found
        if t["state"] != "failed" or t["attempts"][-1]["code"] != "VIGIL-PATH-REFUSED"
    ]
    assert wrong == []
    assert all(len(t["attempts"]) == 1 for t in found)  # a refusal is not retried
    assert not (ws / "got-prompt.txt").exists()
    assert (ws / "vigil.toml").read_text() == POLICY
    assert leaks(ws, key, [done, logs], key_file=key_file) == []


def test_agent_context_in_a_state_directory_not_named_vigil_is_refused(
    tmp_path: Path, ws: Path, backend: str
) -> None:
    env = vigil_env(tmp_path / "home", VIGIL_STATE_DIR=str(ws / "state"))
    key = make_key(ws, env, tmp_path / "home" / ".config" / "vigil")
    write_plan(ws / "ag.yaml", agent_plan(agent_task("t", context=["state/logs"])))
    done = vigil("run", "ag.yaml", "--run-id", "r", cwd=ws, env=env)
    assert done.returncode == 1, done.stderr
    task = status("r", ws, env)["tasks"][0]
    assert task["attempts"][-1]["code"] == "VIGIL-PATH-REFUSED", task
    assert "state is hidden" in task["reason"]
    assert not (ws / "got-prompt.txt").exists()
    assert leaks(ws, key, [done]) == []


def test_agent_context_still_reads_project_files(tmp_path: Path, ws: Path, backend: str) -> None:
    env = vigil_env(tmp_path / "home")
    (ws / "src").mkdir()
    (ws / "src" / "value.py").write_text("VALUE = 0\n")
    write_plan(ws / "ag.yaml", agent_plan(agent_task("t", context=["./src/value.py"])))
    done = vigil("run", "ag.yaml", cwd=ws, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "### ./src/value.py\n```\nVALUE = 0\n```" in (ws / "got-prompt.txt").read_text()
