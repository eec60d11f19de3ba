"""The ``run`` action: a shell command or multi-line script."""

from __future__ import annotations

import re
import shutil

from vigil.actions.base import ActionResult, AttemptContext

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


class RunAction:
    """Runs ``script`` (the task's ``run``, or its ``fallback``) in the attempt's sandbox."""

    def __init__(self, script: str) -> None:
        self.script = script

    def execute(self, ctx: AttemptContext) -> ActionResult:
        """Run the script; success is exit code 0."""
        out = ctx.run(shell_argv(self.script, ctx.path))
        if out.stopped:
            return ActionResult(False, None, "command stopped", stopped=True)
        if out.timed_out:
            return ActionResult(
                False, None, f"command timed out after {out.duration:.1f}s", timed_out=True
            )
        if out.exit_code != 0:
            return ActionResult(False, out.exit_code, f"command exited with code {out.exit_code}")
        return ActionResult(True, 0)
