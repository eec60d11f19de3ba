"""A task's outputs: the ``name=value`` lines its step wrote to ``$VIGIL_OUTPUT``.

The format is GitHub Actions' ``$GITHUB_OUTPUT``, so steps written for one work with the
other::

    version=1.2.3
    notes<<EOF
    first line
    second line
    EOF

A line is ``NAME=VALUE``, or ``NAME<<DELIMITER`` followed by the value's lines and a line
holding only the delimiter (whichever of ``=`` and ``<<`` comes first decides). Empty
lines are ignored; a later value of a name replaces an earlier one. A NUL character (no
environment variable can hold one) or anything else is
:class:`OutputsMalformed`, which fails the attempt with the line it is about.
"""

from __future__ import annotations

import re

from vigil.errors import Category, ExitCode, VigilError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")
MAX_OUTPUTS = 1000
"""More names than this in one attempt's outputs is a mistake, not a result."""


class OutputsMalformed(VigilError):
    """What a step wrote to ``$VIGIL_OUTPUT`` is not ``name=value`` lines."""

    code = "VIGIL-OUTPUT-MALFORMED"
    title = "a step wrote something other than outputs to $VIGIL_OUTPUT"
    remedy = (
        'Write one NAME=VALUE per line to "$VIGIL_OUTPUT", or NAME<<EOF, the lines, '
        "then EOF for a value of several lines (as $GITHUB_OUTPUT)."
    )
    category = Category.PERMANENT
    exit_code = ExitCode.RUN_FAILED


def parse_outputs(data: bytes) -> dict[str, str]:
    """The outputs in ``data``; OutputsMalformed naming the first bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OutputsMalformed(f"$VIGIL_OUTPUT is not UTF-8 text (byte {exc.start})") from None
    if "\0" in text:
        # A value reaches later steps as an environment variable, which cannot hold one.
        raise OutputsMalformed(f"$VIGIL_OUTPUT holds a NUL character (byte {data.index(0)})")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    outputs: dict[str, str] = {}
    k = 0
    while k < len(lines):
        number, line = k + 1, lines[k].removesuffix("\r")
        k += 1
        if not line.strip():
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if heredoc != -1 and (eq == -1 or heredoc < eq):
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            if not delimiter:
                raise OutputsMalformed(f"$VIGIL_OUTPUT line {number}: '{name}<<' has no delimiter")
            body: list[str] = []
            while k < len(lines) and lines[k].removesuffix("\r") != delimiter:
                body.append(lines[k].removesuffix("\r"))
                k += 1
            if k >= len(lines):
                raise OutputsMalformed(
                    f"$VIGIL_OUTPUT line {number}: the value of '{name}' never ends: no line "
                    f"holds only its delimiter {delimiter!r}"
                )
            k += 1
            value = "\n".join(body)
        elif eq != -1:
            name, value = line[:eq], line[eq + 1 :]
        else:
            shown = line if len(line) <= 60 else line[:59] + "…"
            raise OutputsMalformed(
                f"$VIGIL_OUTPUT line {number} is not NAME=VALUE or NAME<<DELIMITER: {shown!r}"
            )
        if NAME.fullmatch(name) is None:
            shown = name if len(name) <= 60 else name[:59] + "…"
            raise OutputsMalformed(
                f"$VIGIL_OUTPUT line {number}: {shown!r} is not an output name (letters, "
                "digits, '_', '-', starting with a letter or '_')"
            )
        outputs[name] = value
        if len(outputs) > MAX_OUTPUTS:
            raise OutputsMalformed(f"$VIGIL_OUTPUT holds more than {MAX_OUTPUTS} outputs")
    return outputs


__all__ = ["MAX_OUTPUTS", "OutputsMalformed", "parse_outputs"]
