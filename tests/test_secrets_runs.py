"""No secret leaks: a step that prints its secret in every common encoding leaves no trace of
it in anything vigil persists or prints. Real runs of the ``vigil`` command.

What counts as expected: a file the step itself writes into the workspace is workspace
content. vigil commits it like any other change and keeps its bytes in the content store
(``.vigil/objects/<sha256>``) so the change can be rolled back or reviewed; it does not
inspect or rewrite what a step chooses to save. So the one place the value may appear is
that blob, whose name must be the hash of the workspace file the step wrote. Everything
vigil produces itself (journal, database and its WAL, logs, reports, audit log, command
output) must hold the value in none of its encodings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clitools import vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow

PRINT_ALL = r"""
import base64, json, os, sys, urllib.parse
t = os.environ["TOKEN"]
b = t.encode("utf-8", "surrogateescape")
out = sys.stdout.buffer
for line in (
    b,
    base64.b64encode(b), base64.urlsafe_b64encode(b), base64.b64encode(b).rstrip(b"="),
    base64.b64encode(b"x" + b), base64.b64encode(b"xy" + b),
    urllib.parse.quote(t, safe="").encode(), urllib.parse.quote_plus(t).encode(),
    json.dumps(t).encode(), json.dumps(t, ensure_ascii=False).encode("utf-8", "surrogateescape"),
    b.hex().encode(), b.hex().upper().encode(),
):
    out.write(b"leak:" + line + b"\n")
out.flush()
sys.stderr.buffer.write(b"to stderr too: " + b + b"\n")
"""


def forms(value: str) -> set[bytes]:
    """The value as it would leak: raw and in every encoding the step prints."""
    raw = value.encode("utf-8", "surrogateescape")
    found = {
        raw,
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        quote(value, safe="").encode(),
        quote_plus(value).encode(),
        json.dumps(value)[1:-1].encode(),
        json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8", "surrogateescape"),
        raw.hex().encode(),
        raw.hex().upper().encode(),
    }
    for prefix in (b"x", b"xy"):
        # A value inside a longer base64 stream: the characters it alone determines.
        k = len(prefix)
        text = base64.b64encode(prefix + raw).rstrip(b"=")
        found.add(text[-(-8 * k // 6) : 8 * (k + len(raw)) // 6])
    return {f for f in found if len(f) >= 6}


def plan(script: str) -> dict[str, Any]:
    return {
        "name": "secrets",
        "project": "shop",
        "phases": [
            {
                "id": "main",
                "tasks": [
                    {
                        "id": "leak",
                        "secrets": ["TOKEN"],
                        "run": f"python3 -c {shlex.quote(script)}",
                    },
                    {
                        # Fails with the value as the last line of output (kept as the reason).
                        "id": "fail",
                        "secrets": ["TOKEN"],
                        "run": f"python3 -c {shlex.quote(script)}; printf '%s\\n' \"$TOKEN\"; "
                        "exit 3",
                    },
                    {
                        "id": "save",
                        "secrets": ["TOKEN"],
                        "run": "printf '%s' \"$TOKEN\" > saved.txt",
                    },
                    {"id": "plain", "run": "echo no secret here"},
                ],
            }
        ],
    }


FULL = {
    "logs": ("logs", "r"),
    "logs leak": ("logs", "r", "leak"),
    "logs fail": ("logs", "r", "fail"),
    "report": ("report", "r"),
    "report json": ("report", "r", "--format", "json"),
    "status json": ("status", "r", "--format", "json"),
    "audit": ("audit", "export"),
}
# Each example of the property is a real run: read back only what differs from the files.
QUICK = {"logs leak": FULL["logs leak"], "report json": FULL["report json"]}


SOURCES = '[secrets]\nTOKEN = { env = "MY_TOKEN" }\n'
"""Where the secret comes from: vigil.toml, the person's file, never the plan."""


def leaks_after_run(ws: Path, value: str, commands: dict[str, tuple[str, ...]]) -> list[str]:
    """Run the plan with ``value`` as the secret; every place vigil left it."""
    (ws / "vigil.toml").write_text(SOURCES)
    write_plan(ws / "p.yaml", plan(PRINT_ALL))
    env = {"MY_TOKEN": value, "VIGIL_CONFIG_DIR": str(ws.parent / "config")}
    outputs = {"run": vigil("run", "p.yaml", "--run-id", "r", "-o", "json", cwd=ws, env=env)}
    assert outputs["run"].returncode == ExitCode.RUN_FAILED, outputs["run"].stderr
    for name, args in commands.items():
        outputs[name] = vigil(*args, cwd=ws, env=env)
        assert outputs[name].returncode == 0, (name, outputs[name].stderr)
    # The step really ran with the value (else a clean result would prove nothing).
    assert (ws / "saved.txt").read_bytes() == value.encode("utf-8", "surrogateescape")
    assert "leak:" in outputs["logs leak"].stdout

    saved_blob = hashlib.sha256((ws / "saved.txt").read_bytes()).hexdigest()
    wanted = forms(value)
    found: list[str] = []
    for path in sorted((ws / ".vigil").rglob("*")):
        if not path.is_file():
            continue
        if path.parent.parent.name == "objects" and path.parent.name + path.name == saved_blob:
            continue  # workspace content the step chose to write (see the module docstring)
        data = path.read_bytes()
        found += [f"{path.relative_to(ws)}: {f!r}" for f in wanted if f in data]
    for name, done in outputs.items():
        text = (done.stdout + done.stderr).encode("utf-8", "surrogateescape")
        found += [f"`vigil {name}`: {f!r}" for f in wanted if f in text]
    return found


VALUE = 's3cr3t-"v@lue"/+&=é ü\\tab'


def test_a_secret_printed_in_every_encoding_is_nowhere_vigil_writes(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    assert leaks_after_run(ws, VALUE, FULL) == []
    # The workspace file the step wrote holds the value: that is the step's own change.
    assert (ws / "saved.txt").read_text() == VALUE


def test_a_task_that_does_not_list_the_secret_does_not_receive_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    spy = {
        "name": "spy",
        "project": "shop",
        "phases": [{"id": "main", "tasks": [{"id": "spy", "run": "env > env.txt"}]}],
    }
    (ws / "vigil.toml").write_text(SOURCES)
    write_plan(ws / "spy.yaml", spy)
    env = {"MY_TOKEN": VALUE, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    assert vigil("run", "spy.yaml", cwd=ws, env=env).returncode == 0
    seen = (ws / "env.txt").read_text()
    assert VALUE not in seen and "MY_TOKEN" not in seen and "TOKEN=" not in seen


# Values a step might hold: quotes, escapes, non-ASCII, control characters, newlines.
secret_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=8,
    max_size=48,
).filter(lambda v: len(set(v)) >= 4)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(value=secret_values)
def test_no_secret_value_leaks_whatever_it_is(value: str) -> None:
    with tempfile.TemporaryDirectory(prefix="vigil-secret-") as tmp:
        ws = Path(tmp) / "ws"
        ws.mkdir()
        assert leaks_after_run(ws, value, QUICK) == []


def test_an_undeclared_secret_is_refused_before_the_run_exists(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(SOURCES)
    data = plan("print('never')")
    data["phases"][0]["tasks"][0]["secrets"] = ["TOKEN", "OTHER"]
    write_plan(ws / "p.yaml", data)
    env = {"MY_TOKEN": VALUE, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("run", "p.yaml", cwd=ws, env=env)
    assert done.returncode == ExitCode.USAGE and "VIGIL-SECRET-UNKNOWN" in done.stderr
    assert "OTHER" in done.stderr
    runs = vigil("runs", "--format", "json", cwd=ws, env=env)
    assert json.loads(runs.stdout) == []


def test_a_secret_that_cannot_be_read_stops_the_run_until_it_is_fixed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(SOURCES)
    write_plan(ws / "p.yaml", plan("print('ran')"))
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}  # MY_TOKEN is not set
    done = vigil("run", "p.yaml", "--run-id", "r", cwd=ws, env=env)
    assert done.returncode == ExitCode.USAGE and "VIGIL-SECRET-UNAVAILABLE" in done.stderr
    assert not (ws / "saved.txt").exists()  # no task started
    state = json.loads(vigil("status", "r", "--format", "json", cwd=ws, env=env).stdout)
    assert state["state"] == "interrupted"
    resumed = vigil("resume", "r", cwd=ws, env=env | {"MY_TOKEN": VALUE})
    assert resumed.returncode == ExitCode.RUN_FAILED, resumed.stderr  # `fail` fails on purpose
    assert (ws / "saved.txt").read_text() == VALUE


def test_a_secret_in_a_file_name_or_link_target_fails_the_attempt(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "vigil.toml").write_text(SOURCES)
    value = "n4me-s3cret-7f1"
    steps = {
        "name": "mkdir -p out && touch out/$TOKEN.txt",
        "split": 'a=$(printf %s "$TOKEN" | cut -c1-5); b=$(printf %s "$TOKEN" | cut -c6-);'
        ' mkdir -p "out/$a" && touch "out/$a/$b"',
        "link": "ln -s /nowhere/$TOKEN lnk",
        "b64": 'touch "$(printf %s "$TOKEN" | base64)"',
    }
    tasks = [{"id": k, "run": v, "secrets": ["TOKEN"]} for k, v in steps.items()]
    tasks.append({"id": "clean", "run": "echo ok > ok.txt", "secrets": ["TOKEN"]})
    write_plan(ws / "p.yaml", {"name": "p", "project": "shop", "phases": [
        {"id": "main", "tasks": tasks},
    ]})  # fmt: skip
    env = {"MY_TOKEN": value, "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("run", "p.yaml", "--run-id", "r", "-o", "json", cwd=ws, env=env)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    view = {t["id"]: t for t in json.loads(done.stdout)["tasks"]}
    for task in steps:
        assert view[task]["state"] == "failed", view[task]
        assert "VIGIL-SECRET-IN-PATH" in json.dumps(view[task]), view[task]
    assert view["clean"]["state"] == "succeeded"
    assert not (ws / "out").exists() and not (ws / "lnk").is_symlink()
    # The name reached nothing vigil keeps or prints.
    for path in (ws / ".vigil").rglob("*"):
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path
    for args in (("status", "r"), ("report", "r"), ("logs", "r")):
        assert value not in vigil(*args, cwd=ws, env=env).stdout
