"""Red team: step outputs (``$VIGIL_OUTPUT``) and the expressions that read them.

A hostile step controls every byte of its outputs file, and the file itself. It tries to
set the environment of the tasks after it (``PATH``, ``LD_PRELOAD``, ``BASH_ENV``), to
smuggle lines past a heredoc's delimiter, to crash the driver with a NUL, to have a value
evaluated as an expression, and to leak its secret through an output in another
encoding. A hostile plan tries to escape Jinja2's sandbox from an ``if:``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from clitools import status, vigil, write_plan
from vigil.errors import ExitCode

pytestmark = pytest.mark.slow


def plan_of(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "o", "project": "o", "phases": [{"id": "p", "tasks": list(tasks)}]}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def tasks_of(run_id: str, ws: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {t["id"]: t for t in status(run_id, ws, env)["tasks"]}


def test_output_names_never_become_the_next_steps_environment(ws: Path) -> None:
    produce = {
        "id": "produce",
        "run": (
            'printf "%s\\n" "PATH=/evil" "LD_PRELOAD=/tmp/evil.so" "BASH_ENV=/tmp/evil.sh" '
            '"VIGIL_OUTPUT=/tmp/elsewhere" "A=B=C" "note<<END" "PATH=/evil-in-heredoc" '
            '"ENV=/tmp/x" "END" "END=after" >> "$VIGIL_OUTPUT"; '
            "printf 'touch pwned-bash-env\\n' > /tmp/evil.sh"
        ),
    }
    # Needs the outputs, names none of them: none may reach its environment.
    consume = {"id": "consume", "needs": "produce", "run": "env > seen.env; touch consumed"}
    write_plan(ws / "p.yaml", plan_of(produce, consume))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    outputs = tasks_of("r1", ws)["produce"]["outputs"]
    # Parsed as GitHub Actions does: the first '=' splits, the heredoc holds its lines.
    assert outputs["A"] == "B=C" and outputs["PATH"] == "/evil"
    assert outputs["note"] == "PATH=/evil-in-heredoc\nENV=/tmp/x" and outputs["END"] == "after"
    seen = dict(
        line.split("=", 1) for line in (ws / "seen.env").read_text().splitlines() if "=" in line
    )
    assert "/evil" not in seen["PATH"]
    assert not {"LD_PRELOAD", "BASH_ENV", "ENV", "A", "note", "END"} & set(seen)
    assert seen.get("VIGIL_OUTPUT", "/run/vigil/output") != "/tmp/elsewhere"
    assert not list(ws.glob("pwned*"))


def test_a_nul_in_an_output_fails_the_step_that_wrote_it(ws: Path) -> None:
    produce = {"id": "produce", "run": "printf 'x=a\\000b\\nsafe=1\\n' > \"$VIGIL_OUTPUT\""}
    consume = {
        "id": "consume",
        "needs": "produce",
        "env": {"V": "${{ needs.produce.outputs.x }}"},
        "run": 'printf "%s" "$V" > got.txt',
    }
    other = {"id": "other", "run": "touch other-ran"}
    write_plan(ws / "p.yaml", plan_of(produce, consume, other))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stdout + done.stderr
    view = tasks_of("r1", ws)
    assert view["produce"]["state"] == "failed"
    reason = view["produce"]["attempts"][-1]["reason"]
    assert "VIGIL-OUTPUT-MALFORMED" in reason and "NUL" in reason, reason
    assert view["consume"]["state"] == "skipped"
    assert "VIGIL-INTERNAL" not in json.dumps(view)
    assert (ws / "other-ran").exists() and not (ws / "got.txt").exists()


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ('rm -f "$VIGIL_OUTPUT"; mkdir "$VIGIL_OUTPUT"', "not a regular file"),
        ('rm -f "$VIGIL_OUTPUT"; ln -s /dev/zero "$VIGIL_OUTPUT"', "VIGIL-OUTPUT-MALFORMED"),
        ('truncate -s 1T "$VIGIL_OUTPUT"', "VIGIL-LIMIT"),
        ('rm -f "$VIGIL_OUTPUT"; ln -s /proc/self/environ "$VIGIL_OUTPUT"', "MALFORMED"),
    ],
)
def test_an_output_file_swapped_for_something_endless_is_refused(
    ws: Path, script: str, says: str
) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "swap", "run": script}))
    # clitools' subprocess timeout is the hang guard: /dev/zero or a sparse terabyte
    # read to its end would never finish.
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stdout + done.stderr
    attempt = tasks_of("r1", ws)["swap"]["attempts"][-1]
    assert says in attempt["reason"], attempt


SSTI = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "${{ cycler.__init__.__globals__.os.system('touch pwned-output') }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


def test_an_output_is_never_evaluated_as_an_expression(ws: Path) -> None:
    for k, payload in enumerate(SSTI):  # a script may not hold '${{': files hold them
        (ws / f"payload-{k}").write_text(f"o{k}={payload}\n")
    produce = {"id": "produce", "run": 'cat payload-* >> "$VIGIL_OUTPUT"'}
    consume = {
        "id": "consume",
        "needs": "produce",
        "env": {f"O{k}": f"${{{{ needs.produce.outputs.o{k} }}}}" for k in range(len(SSTI))},
        "run": "; ".join(f'printf "%s" "$O{k}" > got-{k}' for k in range(len(SSTI))),
    }
    gate = {
        "id": "gate",
        "needs": "produce",
        "if": f"needs.produce.outputs.o1 == {json.dumps(SSTI[1])}",
        "run": "touch gate-ran",
    }
    write_plan(ws / "p.yaml", plan_of(produce, consume, gate))
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    for k, payload in enumerate(SSTI):
        assert (ws / f"got-{k}").read_text() == payload
    assert (ws / "gate-ran").exists()  # compared as text, and equal
    assert not list(ws.glob("pwned*"))


ESCAPES = [
    "''.__class__.__mro__[1].__subclasses__()",
    "cycler.__init__.__globals__.os.system('touch /tmp/pwned-by-if')",
    "lipsum.__globals__['os'].system('touch /tmp/pwned-by-if')",
    "namespace.__init__.__globals__.__builtins__.open('/etc/hostname').read()",
    "range.__self__.__import__('os').system('touch /tmp/pwned-by-if')",
    "self.__init__.__globals__.__builtins__",
    "dict.mro()[-1].__subclasses__()",
    "'{0.__class__.__base__.__subclasses__}'.format('')",
]


@pytest.mark.parametrize("condition", ESCAPES)
def test_a_condition_cannot_leave_jinjas_sandbox(ws: Path, tmp_path: Path, condition: str) -> None:
    marker = Path("/tmp/pwned-by-if")
    marker.unlink(missing_ok=True)
    gated = {"id": "gated", "if": condition, "run": "touch gated-ran"}
    write_plan(ws / "p.yaml", plan_of({"id": "first", "run": "true"}, gated))
    done = vigil("run", "p.yaml", "--run-id", "r1", "--format", "json", cwd=ws)
    assert "Traceback" not in done.stderr
    assert not marker.exists(), "an if: ran code on the host"
    shown = vigil("status", "r1", "--format", "json", cwd=ws)
    view = {t["id"]: t for t in json.loads(shown.stdout)["tasks"]} if shown.returncode == 0 else {}
    gate = view.get("gated", {})
    # Refused as a plan error, failed with VIGIL-EXPRESSION, or skipped as false: never
    # anything of Python's internals in a reason, never VIGIL-INTERNAL.
    text = json.dumps(view) + done.stdout + done.stderr
    assert "VIGIL-INTERNAL" not in text and "<class" not in text and "builtin" not in text
    assert done.returncode in (ExitCode.OK, ExitCode.USAGE, ExitCode.RUN_FAILED), text
    assert gate.get("state") != "succeeded" or condition.startswith("'{0")


def test_a_secret_in_an_output_is_masked_in_its_encodings_too(ws: Path) -> None:
    (ws / "vigil.toml").write_text('[secrets]\nTOKEN = { env = "MY_TOKEN" }\n')
    value = "s3cr3t-0utput-v4lue-XYZ"
    leak = {
        "id": "leak",
        "secrets": ["TOKEN"],
        "run": (
            'printf "raw=%s\\n" "$TOKEN" >> "$VIGIL_OUTPUT"; '
            'printf "b64=%s\\n" "$(printf %s "$TOKEN" | base64)" >> "$VIGIL_OUTPUT"; '
            'printf "hex=%s\\n" "$(printf %s "$TOKEN" | od -An -tx1 | tr -d " \\n")" '
            '>> "$VIGIL_OUTPUT"; printf "multi<<E\\nx\\n%s\\nE\\n" "$TOKEN" >> "$VIGIL_OUTPUT"'
        ),
    }
    write_plan(ws / "p.yaml", plan_of(leak))
    env = {"MY_TOKEN": value, "VIGIL_CONFIG_DIR": str(ws.parent / "config")}
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws, env=env)
    assert done.returncode == ExitCode.OK, done.stderr
    view = status("r1", ws, env)
    outputs = next(t for t in view["tasks"] if t["id"] == "leak")["outputs"]
    assert set(outputs) == {"raw", "b64", "hex", "multi"}
    forms = [value, base64.b64encode(value.encode()).decode(), value.encode().hex()]
    text = json.dumps(view)
    stored = b"".join(p.read_bytes() for p in (ws / ".vigil").rglob("*") if p.is_file())
    for form in forms:
        assert form not in text and form.encode() not in stored, form


@pytest.mark.parametrize("env", [{"A=B": "x"}, {"": "x"}, {"OK": "a\u0000b"}, {"N\u0000UL": "x"}])
def test_a_plan_env_the_kernel_cannot_pass_is_a_plan_error(ws: Path, env: dict[str, str]) -> None:
    write_plan(ws / "p.yaml", plan_of({"id": "t", "env": env, "run": "touch ran"}))
    done = vigil("run", "p.yaml", "--run-id", "r1", "--format", "json", cwd=ws)
    assert done.returncode == ExitCode.USAGE, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "VIGIL-INTERNAL" not in done.stdout
    assert not (ws / "ran").exists()
