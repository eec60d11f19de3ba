"""Text that reaches a terminal is shown, never obeyed.

Run and task ids, paths, plan names, reasons, escalation questions and step output can all
come from a hostile plan or step. Written raw to a terminal, an ESC sequence could rewrite
the screen, set the title, fake a hyperlink (OSC 8) or hide text; ``\\r`` and bidi
overrides can make a line read differently from what it says; rich markup such as
``[red]`` or ``[link=...]`` in a value would be obeyed by the console. So:

- :func:`printable` turns every control and bidi character into a visible escape;
- :func:`escape` also neutralises rich markup, for values put into a markup string;
- :class:`SafeConsole` (the CLI's consoles) parses markup only when a call asks for it
  (``markup=True``), escapes control characters in every text segment it writes and drops
  hyperlinks, so a renderer that forgets the helpers still prints nothing harmful.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Any, Final, TextIO

from rich.console import Console
from rich.markup import escape as _markup_escape
from rich.segment import Segment
from rich.text import Text

_BIDI: Final = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROL_MULTILINE: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")
_CONTROL_ONE_LINE: Final = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")
_NAMED: Final = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, multiline: bool = True) -> str:
    """``text`` with control characters (ESC, CR, BEL, C1, DEL, ...) and bidi controls
    shown as escapes such as ``\\x1b``; newlines and tabs stay when ``multiline``."""
    pattern = _CONTROL_MULTILINE if multiline else _CONTROL_ONE_LINE
    return pattern.sub(_visible, str(text))


def escape(value: object) -> str:
    """A value to put into a rich markup string: one line, printable, markup escaped."""
    return _markup_escape(printable(value, multiline=False))


def literal(value: object, *, style: str = "") -> Text:
    """A value as a rich ``Text`` (a table cell, a widget's content): never markup."""
    return Text(printable(value, multiline=False), style=style)


def for_terminal(text: str, stream: TextIO | None = None) -> str:
    """Step output or a diff about to be written to ``stream``: escaped when it is a
    terminal, unchanged when it is a file or a pipe (so ``> file`` keeps the bytes)."""
    target = stream or sys.stdout
    return printable(text) if target.isatty() else text


class SafeConsole(Console):
    """A rich console for untrusted text; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(**kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(self._sanitised(buffer))

    @staticmethod
    def _sanitised(buffer: Iterable[Segment]) -> Iterable[Segment]:
        for segment in buffer:
            text, style, control = segment
            if control:
                # Cursor movement and the like, made by rich itself (live views).
                yield segment
                continue
            if style is not None and style.link:
                style = style.update_link(None)
            yield Segment(printable(text), style, control)
