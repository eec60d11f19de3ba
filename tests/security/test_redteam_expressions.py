"""Red team: what a hostile plan's ``${{ }}`` expression can make the driver build.

ADR 0010 caps ``*`` and ``**`` so that ``'x' * 10**12`` is an error, not an out-of-memory
host. Every other way of building a long value (``%`` and ``str.format`` widths, padding
methods, ``join``, ``replace``, ``expandtabs``, a list of lists multiplied, filters such as
``center``) must be refused the same way, before the value is built; and the sandbox
itself gives no way to Python's internals. The widths here are ten times the cap (10 MB
were one to be built), never enough to hurt the machine running the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import vigil, write_plan
from vigil.errors import ExitCode
from vigil.plan.expressions import MAX_VALUE_CHARS, ExpressionFailed, evaluate, syntax_problem

BIG = MAX_VALUE_CHARS * 10

BUILDERS = [
    f"'x' * {BIG}",
    f"'%{BIG}s' % ''",
    f"'%*s' % ({BIG}, '')",
    f"'%.{BIG}f' % 1.5",
    f"'{{:>{BIG}}}'.format('')",
    f"'{{0:{{1}}}}'.format('', {BIG})",
    f"'{{:>{{w}}}}'.format('', w={BIG})",
    f"'x'.ljust({BIG})",
    f"'x'.rjust({BIG})",
    f"'x'.center({BIG})",
    f"'1'.zfill({BIG})",
    "('x' * 999).join('y' * 999999)",
    "('a' * 999999).replace('a', 'bbbbbbbbbb')",
    "('\\t' * 999999).expandtabs(8)",
    "[('x' * 999999).split('x')] * 10",
    "[[('x' * 99999).split('x')] * 5] * 5",
]


@pytest.mark.parametrize("source", BUILDERS)
def test_a_value_longer_than_the_cap_is_refused_before_it_is_built(source: str) -> None:
    with pytest.raises(ExpressionFailed, match="longer than"):
        evaluate(source, {})


@pytest.mark.parametrize("source", [f"'x'|center({BIG})", "[1, 2]|join(',')", "'a'|string"])
def test_plans_have_no_filters(source: str) -> None:
    assert "No filter named" in (syntax_problem(source) or "")


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("'%s-%s' % ('a', 'b')", "a-b"),
        ("'%d%%' % 50", "50%"),
        ("'{:>5}'.format('a')", "    a"),
        ("'x'.ljust(3) ~ '|'", "x  |"),
        ("', '.join(['a', 'b'])", "a, b"),
        ("'a.b'.replace('.', '-')", "a-b"),
        ("['a'] * 3", ["a", "a", "a"]),
        ("'ab' * 2 == 'abab'", True),
    ],
)
def test_ordinary_expressions_still_work(source: str, value: object) -> None:
    assert evaluate(source, {}) == value


ESCAPES = [
    "''.__class__.__mro__[1].__subclasses__()",
    "cycler.__init__.__globals__.os.system('id')",
    "lipsum.__globals__['os'].popen('id').read()",
    "namespace.__init__.__globals__.__builtins__.open('/etc/hostname').read()",
    "range.__self__.__import__('os')",
    "dict.mro()[-1].__subclasses__()",
    "'{0.__class__.__base__.__subclasses__}'.format('')",
    "'%s' % ''.__class__",
    "joiner.__init__.__globals__",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_the_sandbox_gives_nothing_of_pythons_internals(source: str) -> None:
    try:
        value = evaluate(source, {})
    except ExpressionFailed:
        return
    text = json.dumps(value, default=repr)
    assert "class" not in text and "module" not in text and "function" not in text, text
    assert "uid=" not in text and "built-in" not in text, text


@pytest.mark.slow
def test_a_condition_that_builds_a_huge_value_fails_its_task_only(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    tasks = [
        {"id": "huge", "if": f"'{{:>{BIG}}}'.format('') != ''", "run": "touch huge-ran"},
        {"id": "wide", "env": {"W": f"${{{{ 'x'.ljust({BIG}) }}}}"}, "run": "touch wide-ran"},
        {"id": "fine", "run": "touch fine-ran"},
    ]
    plan = {"name": "x", "project": "x", "phases": [{"id": "p", "tasks": tasks}]}
    write_plan(ws / "p.yaml", plan)
    done = vigil("run", "p.yaml", "--run-id", "r1", cwd=ws)
    assert done.returncode == ExitCode.RUN_FAILED, done.stdout + done.stderr
    shown = json.loads(vigil("status", "r1", "--format", "json", cwd=ws).stdout)
    view = {t["id"]: t for t in shown["tasks"]}
    for task in ("huge", "wide"):
        assert view[task]["state"] == "failed"
        assert "longer than" in json.dumps(view[task]), view[task]
    assert (ws / "fine-ran").exists() and not (ws / "huge-ran").exists()
