"""Values from people and steps are data, never code (issue 13's injection class).

GitHub Actions' best-known vulnerability is an expression pasted into a script: a branch
name or an issue title holding ``"; rm -rf ~; echo "`` runs as shell. In vigil a value
reaches a step only as an environment variable: each hostile input and output below
must arrive byte for byte in the variable, and nothing it tries to run may run. The
recorded inputs are signed with the run, so rewriting them in the store stops a resume;
and the outputs file a step can replace with a link or a FIFO is read as data or refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_sealed_runs import rewrite, row

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow

PAYLOADS = [
    '"; rm -rf ~; echo "',
    "$(touch pwned-subshell)",
    "`touch pwned-backtick`",
    "'; touch pwned-quote; echo '",
    "x\ntouch pwned-newline\n",
    "${{ inputs.a }}{{ 7*7 }}{% raw %}",
    "$HOME ${PATH} \\ \\n %s %n",
]


def _home(tmp: Path) -> dict[str, str]:
    """A HOME with a canary in it: were ``rm -rf ~`` ever run outside the sandbox's own
    home, the canary would be gone."""
    home = tmp / "home"
    home.mkdir()
    (home / "canary").write_text("alive")
    return {"HOME": str(home)}


def _pwned(ws: Path) -> list[str]:
    return sorted(p.name for p in ws.iterdir() if p.name.startswith("pwned"))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def test_hostile_inputs_reach_the_step_as_data_only(workspace: Path, tmp_path: Path) -> None:
    inputs = {f"p{k}": {"type": "string"} for k in range(len(PAYLOADS))}
    inputs["a"] = {"type": "string", "default": "INJECTED"}
    writes = "; ".join(f'printf "%s" "$P{k}" > got-{k}' for k in range(len(PAYLOADS)))
    task = {
        "id": "use",
        "env": {f"P{k}": f"${{{{ inputs.p{k} }}}}" for k in range(len(PAYLOADS))},
        "run": writes,
    }
    plan = {
        "name": "inj",
        "project": "inj",
        "inputs": inputs,
        "phases": [{"id": "p", "tasks": [task]}],
    }
    write_plan(workspace / "p.yaml", plan)
    args = [a for k, v in enumerate(PAYLOADS) for a in ("--input", f"p{k}={v}")]
    env = _home(tmp_path)
    done = vigil("run", "p.yaml", *args, "--run-id", "r1", cwd=workspace, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    for k, payload in enumerate(PAYLOADS):
        assert (workspace / f"got-{k}").read_bytes() == payload.encode(), k
    assert _pwned(workspace) == []
    assert (tmp_path / "home" / "canary").read_text() == "alive"
    assert status("r1", workspace, env)["inputs"]["p0"] == PAYLOADS[0]


def test_hostile_outputs_reach_the_next_step_as_data_only(workspace: Path, tmp_path: Path) -> None:
    produce_lines = []
    for k, payload in enumerate(PAYLOADS):
        produce_lines.append(f"printf '%s\\n' 'o{k}<<VIGIL_EOF_{k}' >> \"$VIGIL_OUTPUT\"")
        (workspace / f"payload-{k}").write_text(payload)
        produce_lines.append(f'cat payload-{k} >> "$VIGIL_OUTPUT"')
        produce_lines.append(f"printf '\\n%s\\n' 'VIGIL_EOF_{k}' >> \"$VIGIL_OUTPUT\"")
    produce = {"id": "produce", "run": "\n".join(produce_lines)}
    consume = {
        "id": "consume",
        "needs": "produce",
        "env": {f"O{k}": f"${{{{ needs.produce.outputs.o{k} }}}}" for k in range(len(PAYLOADS))},
        "run": "; ".join(f'printf "%s" "$O{k}" > got-{k}' for k in range(len(PAYLOADS))),
    }
    gate = {
        "id": "gate",
        "needs": "produce",
        "if": "needs.produce.outputs.o1 == '$(touch pwned-subshell)'",
        "run": "touch gate-ran",
    }
    plan = {
        "name": "inj",
        "project": "inj",
        "inputs": {"a": {"type": "string", "default": "INJECTED"}},
        "phases": [{"id": "p", "tasks": [produce, consume, gate]}],
    }
    write_plan(workspace / "p.yaml", plan)
    env = _home(tmp_path)
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=workspace, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    for k, payload in enumerate(PAYLOADS):
        # A heredoc value ends before the newline that precedes its delimiter.
        assert (workspace / f"got-{k}").read_bytes() == payload.encode(), k
    # The condition compared the value as data, and it matched.
    assert (workspace / "gate-ran").exists()
    assert _pwned(workspace) == []
    assert (tmp_path / "home" / "canary").read_text() == "alive"


def test_an_output_file_replaced_by_a_link_or_a_fifo_is_refused(
    workspace: Path, tmp_path: Path
) -> None:
    host = tmp_path / "host-secret.txt"
    host.write_text("stolen=host-data\n")
    tasks = [
        {"id": "link", "run": f'rm -f "$VIGIL_OUTPUT"; ln -s {host} "$VIGIL_OUTPUT"'},
        {"id": "fifo", "run": 'rm -f "$VIGIL_OUTPUT"; mkfifo "$VIGIL_OUTPUT"'},
        {"id": "gone", "run": 'rm -f "$VIGIL_OUTPUT"'},
    ]
    plan = {"name": "f", "project": "f", "phases": [{"id": "p", "tasks": tasks}]}
    write_plan(workspace / "p.yaml", plan)
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=workspace, timeout=300)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    view = {t["id"]: t for t in status("r1", workspace)["tasks"]}
    assert view["link"]["state"] == "failed"
    assert "VIGIL-OUTPUT-MALFORMED" in view["link"]["attempts"][0]["reason"]
    assert view["fifo"]["state"] == "failed"
    assert "not a regular file" in view["fifo"]["attempts"][0]["reason"]
    assert view["gone"]["state"] == "succeeded" and view["gone"]["outputs"] == {}
    assert "host-data" not in json.dumps(status("r1", workspace))


PLAN_WAITING: dict[str, Any] = {
    "name": "sealed-inputs",
    "project": "shop",
    "inputs": {"target": {"type": "string", "required": True}},
    "phases": [
        {
            "id": "p",
            "tasks": [
                {"id": "ask", "approval": {"question": "Ship it?"}},
                {"id": "noisy", "needs": ["ask"], "run": "touch noisy.txt"},
                {
                    "id": "ship",
                    "needs": ["ask"],
                    "env": {"T": "${{ inputs.target }}"},
                    "run": 'printf "%s" "$T" > shipped.txt',
                },
            ],
        }
    ],
}


def _approve(ws: Path, env: dict[str, str], run_id: str) -> None:
    listed = json.loads(vigil("escalations", "-o", "json", cwd=ws, env=env).stdout)
    ask = next(e for e in listed if e["run"] == run_id)
    answered = vigil(
        "escalations", "answer", ask["id"], "--approve", "--no-resume", cwd=ws, env=env
    )
    assert answered.returncode == 0, answered.stderr


@pytest.mark.parametrize("attack", ["rewritten", "added", "removed", "skip-removed"])
def test_inputs_and_left_out_tasks_rewritten_in_the_store_stop_the_resume(
    attack: str, ws: Path, env: dict[str, str], store_url: str
) -> None:
    write_plan(ws / "plan.yaml", PLAN_WAITING)
    for run_id in ("victim", "other"):
        started = vigil(
            "run", "plan.yaml", "-i", "target=staging", "--skip", "noisy", "--run-id", run_id,
            cwd=ws, env=env,
        )  # fmt: skip
        assert started.returncode == ExitCode.WAITING, started.stderr
        _approve(ws, env, run_id)
    options = json.loads(row(store_url, "victim")["options"])
    assert options["inputs"] == {"target": "staging"}
    assert options["left_out"] == {"noisy": "left out by --skip"}
    if attack == "skip-removed":
        del options["left_out"]
    elif attack == "rewritten":
        options["inputs"]["target"] = "prod"
    elif attack == "added":
        options["inputs"]["extra"] = "x"
    else:
        del options["inputs"]
    rewrite(store_url, "victim", options=json.dumps(options))
    resumed = vigil("resume", "victim", cwd=ws, env=env)
    assert resumed.returncode == ExitCode.REFUSED, resumed.stdout + resumed.stderr
    assert "VIGIL-RUN-TAMPERED" in resumed.stderr
    assert not (ws / "shipped.txt").exists()
    other = vigil("resume", "other", cwd=ws, env=env)
    assert other.returncode == ExitCode.OK, other.stderr
    assert (ws / "shipped.txt").read_text() == "staging"
    assert not (ws / "noisy.txt").exists()


def test_the_outputs_directory_counts_against_the_attempts_disk_limit(workspace: Path) -> None:
    (workspace / "vigil.toml").write_text('[workspace]\nmax_changeset_bytes = "2M"\n')
    fill = (
        'd=$(dirname "$VIGIL_OUTPUT"); i=0\n'
        'while [ "$i" -lt 400 ]; do head -c 1048576 /dev/zero > "$d/junk-$i"; i=$((i+1)); done\n'
    )
    plan = {"name": "fill", "project": "fill", "phases": [{"id": "p", "tasks": [
        {"id": "fill", "run": fill, "timeout": "10m"}]}]}  # fmt: skip
    write_plan(workspace / "p.yaml", plan)
    env = {"VIGIL_ISOLATION": "overlay"}  # the mode that binds the directory in
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=workspace, env=env, timeout=900)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    task = status("r1", workspace, env)["tasks"][0]
    assert task["attempts"][0]["reason"].startswith("VIGIL-LIMIT"), task["attempts"][0]


def test_hostile_matrix_values_reach_the_step_as_data_only(workspace: Path, tmp_path: Path) -> None:
    """A matrix value is data too: it reaches its expansion's step byte for byte through
    ``env:``, runs nothing, and its expansion's id (a log directory's name) holds no path
    separator, space or quote."""
    include = [{"n": k, "v": payload} for k, payload in enumerate(PAYLOADS)]
    task = {
        "id": "each",
        "matrix": {"include": include},
        "env": {"V": "${{ matrix.v }}", "N": "${{ matrix.n }}"},
        "run": 'printf "%s" "$V" > "got-$N"',
    }
    plan = {
        "name": "inj",
        "project": "inj",
        "inputs": {"a": {"type": "string", "default": "INJECTED"}},
        "phases": [{"id": "p", "tasks": [task]}],
    }
    write_plan(workspace / "p.yaml", plan)
    env = _home(tmp_path)
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=workspace, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    for k, payload in enumerate(PAYLOADS):
        assert (workspace / f"got-{k}").read_bytes() == payload.encode(), k
    assert _pwned(workspace) == []
    assert (tmp_path / "home" / "canary").read_text() == "alive"
    ids = [t["id"] for t in status("r1", workspace, env)["tasks"]]
    assert len(ids) == len(PAYLOADS)
    assert ids[0] == "each[n=0,v=___rm_-rf____echo__]"
    for tid in ids:
        assert not set(tid) & set("/\\ \"'$`\n;~")
    logs = workspace / ".vigil" / "logs" / "r1"
    assert sorted(p.name for p in logs.iterdir() if p.is_dir()) == sorted(ids)
