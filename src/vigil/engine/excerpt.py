"""The few lines of a failed command's output that say what went wrong. Pure.

A failed attempt records them (``log_excerpt``) from the end of its log, which was
redacted before it reached the disk, so the summary, the report and the postmortem can
quote the pytest summary instead of only the task's name. The heuristic, in order:

1. Only the end of the output is read (the caller passes its last 64 KiB); terminal
   escape sequences and other control characters are dropped, as are blank lines and
   vigil's own ``[vigil]`` notes.
2. A line is *telling* when it is a test runner's summary (``=== 2 failed, 10 passed in
   1.2s ===``, ``FAILED tests/...``, ``ERROR tests/...``, unittest's ``FAILED
   (failures=1)``), an error line (``error: ...``, ``Error: ...``, ``ERROR: ...``,
   ``fatal: ...``, ``npm ERR! ...``, a compiler's or type checker's ``file:3: error:``),
   or the last line of a Python traceback (``ValueError: bad input``).
3. The last :data:`MAX_LINES` telling lines are kept, in the order they were printed;
   when no line is telling, the last :data:`FALLBACK_LINES` lines are.
4. Each line is cut to :data:`MAX_WIDTH` characters.
"""

from __future__ import annotations

import re

MAX_LINES = 5
"""The most lines an excerpt holds."""

FALLBACK_LINES = 3
"""How many last lines stand in when none is telling."""

MAX_WIDTH = 200
"""The longest line kept, in characters."""

_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# Printed in exactly this case: "FAILED" in prose or a file named errors.py is no verdict.
_VERDICT = re.compile(
    # pytest's closing summary: "==== 2 failed, 10 passed in 1.20s ====".
    r"^=+ .*\b(?:failed|passed|errors?|xfailed|xpassed|skipped|deselected|no tests ran)\b.* =+$"
    # pytest's short summary lines and unittest's verdict.
    r"|^(?:FAILED|ERROR)\b"
    # The last line of a Python traceback: "ValueError: bad", "KeyboardInterrupt".
    r"|^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|Failure)(?::|$)"
)
# In any case: "error: x", "Error: x", "ERROR: x", "fatal: x", "npm ERR! x", and
# "src/app.py:3: error: x" (mypy, gcc, clang).
_ERROR = re.compile(
    r"^\s*(?:error|fatal|panic)(?:\[[^\]]*\])?\s*[:!]"
    r"|^npm ERR!"
    r"|:\d+(?::\d+)?:\s*(?:fatal )?error\b",
    re.IGNORECASE,
)


def clean(line: str) -> str:
    """``line`` without terminal escape sequences or other control characters."""
    return _CONTROL.sub("", _ESCAPES.sub("", line.replace("\t", "    "))).rstrip()


def _telling(line: str) -> bool:
    return bool(_VERDICT.search(line) or _ERROR.search(line))


def _cut(line: str) -> str:
    return line if len(line) <= MAX_WIDTH else line[: MAX_WIDTH - 3] + "..."


def key_lines(output: str) -> list[str]:
    """The lines of ``output`` worth quoting when its command failed (see the module)."""
    lines = [clean(raw) for raw in output.splitlines()]
    lines = [ln for ln in lines if ln.strip() and not ln.startswith("[vigil] ")]
    telling = [ln for ln in lines if _telling(ln)]
    chosen = telling[-MAX_LINES:] if telling else lines[-FALLBACK_LINES:]
    return [_cut(ln) for ln in chosen]
