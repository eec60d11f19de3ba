"""One attempt of one task, end to end: run the command, run its checks, judge the result.

This is the activity side of the engine: it performs effects and reports a typed
:class:`AttemptResult`; it never decides what happens next.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.engine import events as ev
from vigil.executors.process import LogSink, ProcessOutcome, run_process
from vigil.plan.models import Check

# Commands made only of these characters need no shell: they are exec'd directly, which
# saves a shell start per attempt (the way make does it).
_SIMPLE = re.compile(r"[A-Za-z0-9_./=:,+@%-]+( +[A-Za-z0-9_./=:,+@%-]+)*")
_BASH = shutil.which("bash")
# Words the shell gives its own meaning; such commands always go through the shell.
_SHELL_WORDS = frozenset(
    [
        "alias",
        "bg",
        "bind",
        "break",
        "builtin",
        "caller",
        "case",
        "cd",
        "command",
        "compgen",
        "complete",
        "continue",
        "declare",
        "dirs",
        "disown",
        "do",
        "done",
        "echo",
        "elif",
        "else",
        "enable",
        "esac",
        "eval",
        "exec",
        "exit",
        "export",
        "fc",
        "fg",
        "fi",
        "for",
        "function",
        "getopts",
        "hash",
        "help",
        "history",
        "if",
        "in",
        "jobs",
        "kill",
        "let",
        "local",
        "logout",
        "mapfile",
        "popd",
        "printf",
        "pushd",
        "pwd",
        "read",
        "readarray",
        "readonly",
        "return",
        "select",
        "set",
        "shift",
        "shopt",
        "source",
        "suspend",
        "test",
        "then",
        "time",
        "times",
        "trap",
        "type",
        "typeset",
        "ulimit",
        "umask",
        "unalias",
        "unset",
        "until",
        "wait",
        "while",
        ".",
        ":",
        "[",
        "[[",
        "]]",
        "{",
        "}",
        "!",
    ]
)


def shell_argv(script: str, path: str | None = None) -> list[str]:
    """The argv that runs ``script``: bash with errexit and pipefail, like CI runners."""
    text = script.strip()
    if "\n" not in text and _SIMPLE.fullmatch(text):
        words = text.split()
        head = words[0]
        if "=" not in head and head not in _SHELL_WORDS and shutil.which(head, path=path):
            return words
    if _BASH:
        return [_BASH, "-e", "-o", "pipefail", "-c", script]
    return ["/bin/sh", "-e", "-c", script]


@dataclass(frozen=True)
class AttemptSpec:
    """Everything needed to run one attempt, resolved from the plan."""

    run_id: str
    task_id: str
    attempt: int
    command: str
    script: str
    env: Mapping[str, str]
    cwd: Path
    timeout: float | None
    checks: Sequence[Check]
    log_path: Path


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended, ready to be journalled."""

    task_id: str
    attempt: int
    outcome: str
    exit_code: int | None
    reason: str
    duration: float
    extra: dict[str, Any] = field(default_factory=dict)

    def event(self) -> tuple[str, dict[str, Any]]:
        """The ``attempt.finished`` journal entry for this result."""
        return ev.attempt_finished(
            self.task_id,
            self.attempt,
            self.outcome,
            exit_code=self.exit_code,
            reason=self.reason,
            duration=self.duration,
            extra=self.extra,
        )


def process_tag(run_id: str, task_id: str, attempt: int) -> str:
    """The tag every process of this attempt carries."""
    return f"{run_id}/{task_id}/{attempt}"


def _stopped_outcome(stop_reason: str) -> str:
    return ev.CANCELLED if stop_reason == "cancel" else ev.INTERRUPTED


class StopSignal:
    """Asks running attempts to stop, and says why (``interrupt`` or ``cancel``)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        """Stop everything that is running, for ``reason``."""
        if not self.event.is_set():
            self.reason = reason
        self.event.set()


def execute_attempt(spec: AttemptSpec, stop: StopSignal) -> AttemptResult:
    """Run the attempt's command and, if it succeeds, its validation checks."""
    sink = LogSink(spec.log_path)
    tag = process_tag(spec.run_id, spec.task_id, spec.attempt)
    try:
        if not spec.cwd.is_dir():
            sink.note(f"working directory {spec.cwd} does not exist")
            return AttemptResult(
                spec.task_id,
                spec.attempt,
                ev.FAILED,
                None,
                f"working directory {spec.cwd.name!r} does not exist",
                0.0,
            )
        out = run_process(
            shell_argv(spec.script, spec.env.get("PATH")),
            env=spec.env,
            cwd=spec.cwd,
            sink=sink,
            timeout=spec.timeout,
            stop=stop.event,
            tag=tag,
        )
        total = out.duration
        failure = _judge(out, stop, what="command")
        if failure is not None:
            outcome, reason = failure
            return AttemptResult(spec.task_id, spec.attempt, outcome, out.exit_code, reason, total)
        for index, check in enumerate(spec.checks, 1):
            sink.note(f"validate {index}/{len(spec.checks)}: {check.name or check.run}")
            out = run_process(
                shell_argv(check.run, spec.env.get("PATH")),
                env=spec.env,
                cwd=spec.cwd,
                sink=sink,
                timeout=check.timeout or spec.timeout,
                stop=stop.event,
                tag=tag,
            )
            total += out.duration
            failure = _judge(out, stop, what=f"validation {check.name or _short(check.run)!r}")
            if failure is not None:
                outcome, reason = failure
                return AttemptResult(
                    spec.task_id,
                    spec.attempt,
                    outcome,
                    out.exit_code,
                    reason,
                    total,
                    {"validation_failed": index},
                )
        return AttemptResult(spec.task_id, spec.attempt, ev.SUCCEEDED, 0, "", total)
    finally:
        sink.close()


def _judge(out: ProcessOutcome, stop: StopSignal, *, what: str) -> tuple[str, str] | None:
    if out.stopped:
        return _stopped_outcome(stop.reason), f"{what} stopped: {stop.reason or 'stopped'}"
    if out.timed_out:
        return ev.TIMED_OUT, f"{what} timed out after {out.duration:.1f}s"
    if out.exit_code != 0:
        return ev.FAILED, f"{what} exited with code {out.exit_code}"
    return None


def _short(command: str, limit: int = 60) -> str:
    line = command.strip().splitlines()[0] if command.strip() else command
    return line if len(line) <= limit else line[: limit - 1] + "…"


def step_environment(
    base: Mapping[str, str], *layers: Mapping[str, str], run_id: str, task_id: str, attempt: int
) -> dict[str, str]:
    """The environment of a step: ``base``, then each layer, then vigil's own variables."""
    env = dict(base)
    for layer in layers:
        env.update(layer)
    env["VIGIL_RUN_ID"] = run_id
    env["VIGIL_TASK_ID"] = task_id
    env["VIGIL_ATTEMPT"] = str(attempt)
    return env


def host_environment() -> dict[str, str]:
    """The environment vigil itself was started with, minus its own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}


def quote(argv: Sequence[str]) -> str:
    """``argv`` as a shell would show it."""
    return shlex.join(argv)
