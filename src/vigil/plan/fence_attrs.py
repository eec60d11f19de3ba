"""The attributes of a runbook's code block: ```` ```bash {id=migrate needs=backup} ````.

The info string is read from the raw source line, not from markdown-it's unescaped
``info``, so that every attribute keeps its column for error messages and quoted values
keep their backslashes until we unescape them ourselves.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})

ATTRIBUTES = (
    "id",
    "name",
    "needs",
    "retry",
    "timeout",
    "on_failure",
    "validate",
    "fallback",
    "workdir",
    "requires",
    "environment",
    "secrets",
    "pass_env",
    "review",
)

FLAGS = ("example", "parallel")
"""Attributes written as a bare word: ``{example}`` keeps a block as text (it never runs);
``{parallel}`` runs a block beside the one before it instead of after it."""

_ATTR = re.compile(
    r"""(?P<key>[A-Za-z_][A-Za-z0-9_-]*)\s*=\s*
        (?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'{}]+)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Attribute:
    """One ``key=value`` with the 1-based columns of its key and of its value."""

    key: str
    value: str
    key_col: int
    value_col: int


@dataclass(frozen=True)
class AttributeProblem:
    """A mistake in the info string at a 1-based column."""

    col: int
    cause: str
    fix: str


@dataclass(frozen=True)
class FenceInfo:
    """The language of a code block and its attributes."""

    language: str
    attributes: tuple[Attribute, ...]
    problems: tuple[AttributeProblem, ...]
    flags: frozenset[str] = frozenset()


def _unquote(raw: str) -> str:
    if raw.startswith('"'):
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    if raw.startswith("'"):
        return raw[1:-1]
    return raw


def _fence_start(line: str, markup: str) -> int:
    found = line.find(markup)
    return found if found >= 0 else 0


def read_fence_info(line: str, markup: str) -> FenceInfo:
    """Parse the opening line of a fenced block (``markup`` is its backticks or tildes)."""
    start = _fence_start(line, markup) + len(markup)
    info = line[start:]
    stripped = info.lstrip()
    offset = start + (len(info) - len(stripped))  # 0-based column where the info begins
    language_match = re.match(r"[^\s{]*", stripped)
    language = language_match.group(0) if language_match else ""
    rest_start = offset + len(language)
    rest = line[rest_start:].rstrip()
    if not rest.strip() or language.lower() not in SHELL_LANGUAGES:
        return FenceInfo(language, (), ())
    body_start = rest_start + (len(rest) - len(rest.lstrip()))
    body = rest.strip()
    problems: list[AttributeProblem] = []
    if body.startswith("{"):
        if not body.endswith("}"):
            problems.append(
                AttributeProblem(
                    body_start + 1, "the attribute list is not closed", "end it with '}'"
                )
            )
            body = body[1:]
        else:
            body = body[1:-1]
        body_start += 1
    attributes: list[Attribute] = []
    flags: set[str] = set()
    seen: set[str] = set()
    pos = 0
    while pos < len(body):
        if body[pos].isspace() or body[pos] == ",":
            pos += 1
            continue
        match = _ATTR.match(body, pos)
        flag = re.match(r"[A-Za-z_][A-Za-z0-9_-]*(?=[\s,]|$)", body[pos:])
        if match is None and flag is not None and flag.group(0) in FLAGS:
            flags.add(flag.group(0))
            pos += flag.end()
            continue
        if match is None:
            word = re.match(r"\S+", body[pos:])
            shown = word.group(0) if word else body[pos:]
            problems.append(
                AttributeProblem(
                    body_start + pos + 1,
                    f"cannot read attribute {shown!r}",
                    'write key=value and quote values with spaces: name="Run migrations"; '
                    "the bare words allowed are 'example' and 'parallel'",
                )
            )
            pos += len(shown) or 1
            continue
        key = match.group("key")
        key_col = body_start + match.start("key") + 1
        if key not in ATTRIBUTES:
            close = difflib.get_close_matches(key, ATTRIBUTES, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.append(
                AttributeProblem(
                    key_col,
                    f"unknown code block attribute '{key}'",
                    f"{hint}allowed attributes: {', '.join(ATTRIBUTES)}",
                )
            )
        elif key in seen:
            problems.append(
                AttributeProblem(key_col, f"attribute '{key}' is given twice", "keep one of them")
            )
        else:
            seen.add(key)
            attributes.append(
                Attribute(
                    key,
                    _unquote(match.group("value")),
                    key_col,
                    body_start + match.start("value") + 1,
                )
            )
        pos = match.end()
    return FenceInfo(language, tuple(attributes), tuple(problems), frozenset(flags))
