"""``${{ ... }}`` expressions: what a plan may compute from inputs, outputs and results.

Plans come from people and agents who may be hostile, and the values expressions read
(inputs, task outputs) come from anyone, so an expression is evaluated by Jinja2's
:class:`~jinja2.sandbox.SandboxedEnvironment` (no attribute access to Python internals,
no imports, bounded ``range``), never by ``eval``; multiplication and powers are capped
so that ``'x' * 10**12`` is an error, not an out-of-memory host. Only the expression
syntax is used (``compile_expression``): no statements, no template blocks. See
docs/adr/0010-expressions.md for why this evaluator.

An expression's value is always *data*: it becomes an environment variable's value, a
piece of a prompt, or the truth of an ``if:``. It is never pasted into a shell script's
text; a ``run:`` that holds ``${{`` is a plan error (:data:`EXPRESSION_IN_SCRIPT`).
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment

from vigil.errors import Category, ExitCode, VigilError

EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
"""One ``${{ ... }}`` in a text."""

STATUS_FUNCTIONS = ("success", "failure", "always", "cancelled")
"""The functions an ``if:`` may call, as in GitHub Actions."""

CONTEXTS = ("inputs", "needs", "matrix", "env", "vigil")
"""The names an expression can read."""

VIGIL_FACTS = ("run_id", "plan", "project")
"""The keys of the ``vigil`` context."""

MAX_VALUE_CHARS = 1_000_000
"""A value an expression builds (by ``*`` or ``**``) larger than this is refused."""


class ExpressionFailed(VigilError):
    """An expression could not be evaluated while the run was going."""

    code = "VIGIL-EXPRESSION"
    title = "an expression could not be evaluated"
    remedy = (
        "Fix the expression named in the message (see 'Expressions' in docs/plans.md); "
        "`vigil plan check` finds most mistakes before a run."
    )
    exit_code = ExitCode.RUN_FAILED
    category = Category.PERMANENT


def _too_long() -> ExpressionFailed:
    return ExpressionFailed(f"the value would be longer than {MAX_VALUE_CHARS}")


def _weight(value: Any, seen: dict[int, int] | None = None) -> int:
    """How long ``value`` reads as text, roughly: a list holding one list ten times weighs
    ten times as much, as its JSON does (shared parts are weighed once, counted each time)."""
    if isinstance(value, str):
        return len(value)
    if not isinstance(value, list | tuple | dict):
        return 1
    seen = {} if seen is None else seen
    if id(value) not in seen:
        seen[id(value)] = 0  # a list holding itself: its JSON fails, it is not huge
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        seen[id(value)] = 1 + sum(max(1, _weight(v, seen)) for v in items)
    return seen[id(value)]


_WIDTH = re.compile(r"\d{7,}")
"""A width or precision in a format string that alone makes a value too long."""


def _check_call_args(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """ExpressionFailed for a call that would build a value over MAX_VALUE_CHARS: a number
    that large as an argument (``'x'.ljust(10**9)``), a format string with such a width,
    or a ``join``, ``replace`` or ``expandtabs`` that multiplies lengths."""
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_VALUE_CHARS:
            raise _too_long()
    # Jinja2 hands out str.format wrapped (``__wrapped__`` is the bound method).
    bound = getattr(obj, "__wrapped__", obj)
    owner, name = getattr(bound, "__self__", None), getattr(bound, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in ("format", "format_map") and _WIDTH.search(owner):
        raise _too_long()
    size = len(owner)
    if name == "join" and args and isinstance(args[0], list | tuple | str):
        size = len(owner) * len(args[0]) + _weight(list(args[0]))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        size = len(owner) + (owner.count(args[0]) + (not args[0])) * _weight(args[1])
    elif name == "expandtabs" and args and isinstance(args[0], int):
        size = len(owner) + owner.count("\t") * args[0]
    if size > MAX_VALUE_CHARS:
        raise _too_long()


class _Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox, with what can build huge values capped: ``*`` and ``**``, ``%``
    formatting, and calls of the string methods that pad, join, replace or format."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise ExpressionFailed(f"the power {right} is too large")
            return operator.pow(left, right)
        if operator_ == "%":
            if isinstance(left, str):
                values = right if isinstance(right, tuple) else (right,)
                _check_call_args(None, values, {})
                if (
                    _WIDTH.search(left)
                    or _weight(list(values)) * max(1, left.count("%")) > MAX_VALUE_CHARS
                ):
                    raise _too_long()
            return super().call_binop(context, operator_, left, right)
        for side, other in ((left, right), (right, left)):
            if (
                isinstance(side, str | list | tuple)
                and isinstance(other, int)
                and _weight(side) * max(other, 0) > MAX_VALUE_CHARS
            ):
                raise _too_long()
        return operator.mul(left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_call_args(obj, args, kwargs)
        return super().call(context, obj, *args, **kwargs)


_ENV = _Sandbox(undefined=ChainableUndefined, autoescape=False)
# Plans have no filters (ADR 0010): ``|center(10**9)``, ``|join`` and the rest would each
# need a cap of their own, and no plan needs them.
_ENV.filters.clear()


def condition_source(text: str) -> str:
    """The expression of an ``if:``: ``${{ x }}`` and ``x`` mean the same, as in Actions."""
    stripped = text.strip()
    match = EXPRESSION.fullmatch(stripped)
    return match.group(1).strip() if match else stripped


def _hint(source: str) -> str:
    if "&&" in source or "||" in source:
        return "; write 'and' / 'or' instead of '&&' / '||'"
    if re.search(r"![^=]", source):
        return "; write 'not x' instead of '!x'"
    return ""


@functools.lru_cache(maxsize=4096)
def _compiled(source: str) -> Callable[..., Any]:
    return _ENV.compile_expression(source, undefined_to_none=False)


@functools.lru_cache(maxsize=4096)
def _parsed(source: str) -> nodes.Expr:
    parsed = _ENV.parse("{{ " + source + " }}")
    body = parsed.body[0]
    assert isinstance(body, nodes.Output)
    expr = body.nodes[0]
    assert isinstance(expr, nodes.Expr)
    return expr


def syntax_problem(source: str) -> str | None:
    """Why ``source`` is not an expression, or None."""
    if not source.strip():
        return "the expression is empty"
    try:
        _parsed(source)
        _compiled(source)
    except TemplateError as exc:
        return f"{exc.message or exc}{_hint(source)}"
    except AssertionError:
        return "this is not one expression"
    return None


@dataclass(frozen=True)
class Reference:
    """A context an expression reads: ``('needs', 'build', 'outputs', 'tag')``."""

    path: tuple[str, ...]


def _chain(node: nodes.Node) -> tuple[str, ...] | None:
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            parts.append(str(node.arg.value))
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def references(source: str) -> Iterator[Reference]:
    """The context paths ``source`` reads, longest first for each name."""
    expr = _parsed(source)
    seen: set[int] = set()
    kinds = (nodes.Getattr, nodes.Getitem, nodes.Name)
    candidates = [expr] if isinstance(expr, kinds) else []
    for node in [*candidates, *expr.find_all(kinds)]:
        if id(node) in seen:
            continue
        chain = _chain(node)
        if chain is None:
            continue
        inner: nodes.Node = node
        while isinstance(inner, nodes.Getattr | nodes.Getitem):
            inner = inner.node
            seen.add(id(inner))
        yield Reference(chain)


def calls(source: str) -> set[str]:
    """The names of the functions ``source`` calls (``success`` for ``success()``)."""
    expr = _parsed(source)
    found = [expr] if isinstance(expr, nodes.Call) else []
    found += list(expr.find_all(nodes.Call))
    return {
        c.node.name for c in found if isinstance(c, nodes.Call) and isinstance(c.node, nodes.Name)
    }


def uses_status(source: str) -> bool:
    """Whether a condition says itself when it runs (``failure()``, ``always()``, ...):
    without one, a condition holds only when every task it needs succeeded."""
    return bool(calls(source) & set(STATUS_FUNCTIONS))


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """The value of ``source`` in ``context``; ExpressionFailed on any error."""
    try:
        value = _compiled(source)(**context)
    except ExpressionFailed:
        raise
    except TemplateError as exc:
        raise ExpressionFailed(f"${{{{ {source} }}}}: {exc.message or exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError) as exc:
        raise ExpressionFailed(f"${{{{ {source} }}}}: {exc}") from None
    return None if isinstance(value, ChainableUndefined) else value


def as_text(value: Any) -> str:
    """How a value reads in an environment variable or a prompt (as in Actions:
    ``true``/``false``, an empty string for nothing, JSON for lists and mappings)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def substitute(text: str, context: Mapping[str, Any]) -> str:
    """``text`` with every ``${{ ... }}`` replaced by its value (as text)."""
    if "${{" not in text:
        return text
    return EXPRESSION.sub(lambda m: as_text(evaluate(m.group(1).strip(), context)), text)


def holds(source: str, context: Mapping[str, Any]) -> bool:
    """Whether the condition ``source`` is true in ``context``."""
    return bool(evaluate(source, context))


def expressions_in(text: str) -> list[tuple[int, str]]:
    """Each ``${{ ... }}`` of ``text``: its offset and its source."""
    return [(m.start(), m.group(1).strip()) for m in EXPRESSION.finditer(text)]


__all__ = [
    "CONTEXTS",
    "EXPRESSION",
    "STATUS_FUNCTIONS",
    "VIGIL_FACTS",
    "ExpressionFailed",
    "Reference",
    "as_text",
    "calls",
    "condition_source",
    "evaluate",
    "expressions_in",
    "holds",
    "references",
    "substitute",
    "syntax_problem",
    "uses_status",
]
