"""What to tell a person about a failed task, shared by the summary of ``vigil run``, the
completion report and the postmortem. Pure.

A command that ran and exited non-zero on its own (a failing test suite, a compiler
error) said why in its output: the advice quotes it and points at the log. Retry,
``fallback`` and ``on_failure: continue`` are offered only where they can help: a
timeout, a command killed by a signal, a failure of vigil's own.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any


def plain_exit(state: str, exit_code: int | None, data: Mapping[str, Any]) -> bool:
    """Whether an attempt failed because its command exited non-zero by itself.

    Exit codes of 128 and above are how shells report a command killed by a signal
    (137: the OOM killer's SIGKILL); a ``code`` is a failure of vigil's own (a conflict
    at commit, a limit); ``no_network`` has advice of its own.
    """
    return (
        state == "failed"
        and exit_code is not None
        and 0 < exit_code < 128
        and not data.get("code")
        and not data.get("no_network")
    )


def excerpt(attempts: Sequence[Mapping[str, Any]]) -> list[str]:
    """The quoted lines of the last attempt that recorded any (see vigil.engine.excerpt)."""
    for a in reversed(attempts):
        lines = a.get("log_excerpt")
        if lines:
            return [str(line) for line in lines]
    return []


def exit_advice(task: str, exit_code: int, run_id: str) -> str:
    """For a task whose command exited ``exit_code`` on its own."""
    return (
        f"`{task}` exited with code {exit_code}: its output says why (the lines quoted here, "
        f"all of it with `vigil logs {run_id} {shlex.quote(task)}`). Fix that cause; a retry or a "
        "fallback would only run it again."
    )


def conflict_advice(conflict: Mapping[str, Any]) -> str:
    """For two tasks that ran at once and changed the same paths (``commit_conflicts``)."""
    first, second = conflict["tasks"]
    paths = list(conflict["paths"])
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return (
        f"`{first}` and `{second}` ran at the same time and both changed {shown} "
        "(VIGIL-CONFLICT): to run them one after the other, add to task "
        f"`{second}` the line `{conflict['yaml']}`."
    )


def code_fence(lines: Sequence[str]) -> str:
    """A Markdown fence longer than any run of backticks in ``lines`` (output is data)."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)
