"""What is valid in a plan but probably not what its author meant: warnings, not errors.

Two kinds, both about work that would run without the safeguards a reader expects:

- ``VIGIL-PLAN-AGENT-AUTO-APPROVE``: a plain ``run:`` step starts a coding agent's command
  line with its own approvals switched off (``claude --dangerously-skip-permissions``,
  ``codex --full-auto``, ``aider --yes``, ``gemini --yolo``, …). It runs, sandboxed like
  any step, but without what an ``agent:`` task adds (its budget, its prompt and context
  on the record, the review of what it changed). Use ``agent:``.
- ``VIGIL-PLAN-EXAMPLE-BLOCK``: in a Markdown runbook, the text just before a ``bash``
  block says it is an alternative or an example ("alternatively", "for example", "or:"),
  yet every such block runs. Mark the block ``{example}`` to keep it as text.

Both are reported by ``vigil plan check`` and when ``vigil run`` starts; neither stops a run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from vigil.errors import ExitCode, VigilError
from vigil.plan.models import Plan
from vigil.plan.problems import PlanProblem
from vigil.plan.sourcemap import SourceMap

AUTO_APPROVE = "VIGIL-PLAN-AGENT-AUTO-APPROVE"
EXAMPLE_BLOCK = "VIGIL-PLAN-EXAMPLE-BLOCK"


class AgentAutoApprove(VigilError):
    """Catalogued for `vigil explain`: a warning, never raised."""

    code = AUTO_APPROVE
    title = "a plain run: step starts a coding agent with its approvals switched off (warning)"
    remedy = "Make it an agent: task (docs/agents.md), or drop the switch."
    exit_code = ExitCode.OK


class ExampleBlock(VigilError):
    """Catalogued for `vigil explain`: a warning, never raised."""

    code = EXAMPLE_BLOCK
    title = "a runbook's text calls a bash block an alternative or an example (warning)"
    remedy = "Mark the block ```bash {example} if it only illustrates; it then never runs."
    exit_code = ExitCode.OK


@dataclass(frozen=True, order=True)
class PlanWarning(PlanProblem):
    """A warning at ``file:line:col`` with a stable code."""

    code: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.code}: {self.cause} (fix: {self.fix})"


# Agent command lines, and the switches of each that approve everything without asking.
AGENT_SWITCHES: dict[str, tuple[str, ...]] = {
    "claude": ("--dangerously-skip-permissions", "--permission-mode=bypassPermissions"),
    "codex": ("--full-auto", "--dangerously-bypass-approvals-and-sandbox", "--yolo"),
    "aider": ("--yes", "--yes-always", "-y"),
    "gemini": ("--yolo", "-y", "--approval-mode=yolo"),
    "qwen": ("--yolo", "-y", "--approval-mode=yolo"),
    "cursor-agent": ("--force", "-f"),
    "goose": ("--yes",),
    "opencode": ("--yes",),
    "copilot": ("--allow-all-tools",),
    "amp": ("--dangerously-allow-all",),
}
# The same programs started from their packages (`npx @openai/codex …`).
PACKAGES = {
    "@anthropic-ai/claude-code": "claude",
    "@openai/codex": "codex",
    "@google/gemini-cli": "gemini",
    "@qwen-code/qwen-code": "qwen",
    "aider-chat": "aider",
    "opencode-ai": "opencode",
    "@github/copilot": "copilot",
}
# Switches that say what they do whichever program takes them.
ANYWHERE = ("--dangerously-skip-permissions", "--dangerously-bypass-approvals-and-sandbox")
_SEPARATORS = frozenset({";", "&&", "||", "|", "&", "(", ")", "\n"})


def _words(script: str) -> list[str]:
    """The script's words, with command separators as words of their own."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unclosed quote: fall back to plain splitting
        return re.split(r"\s+", script)


_WRAPPERS = frozenset(
    {"env", "sudo", "npx", "uvx", "pnpx", "bunx", "exec", "time", "nohup", "command"}
)


def auto_approving(script: str) -> list[tuple[str, str]]:
    """Each agent program the script starts with an approve-everything switch, and it."""
    found: list[tuple[str, str]] = []
    words = _words(script)
    program: str | None = None
    at_command = True
    skip = False
    for i, word in enumerate(words):
        if word in _SEPARATORS or all(c in ";&|()" for c in word):
            program, at_command, skip = None, True, False
            continue
        name = PACKAGES.get(word.split("@latest")[0]) or word.rsplit("/", 1)[-1]
        if at_command:
            if skip or name in _WRAPPERS or re.match(r"[A-Za-z_][A-Za-z0-9_]*=", word):
                skip = False
                continue  # `env X=1 sudo npx claude …`: the program comes later
            if word.startswith("-"):  # a wrapper's own option (`uvx --from aider-chat aider`)
                skip = word in ("--from", "--package", "-p", "-u", "-g")
                continue
            program = name if name in AGENT_SWITCHES else None
            at_command = False
            continue
        joined = word
        if word in ("--approval-mode", "--permission-mode") and i + 1 < len(words):
            joined = f"{word}={words[i + 1]}"
        if joined in ANYWHERE or (program is not None and joined in AGENT_SWITCHES[program]):
            found.append((program or "a program", joined))
    return found


def agent_warnings(plan: Plan, source_map: SourceMap, filename: str) -> list[PlanWarning]:
    """``VIGIL-PLAN-AGENT-AUTO-APPROVE`` for each plain step that runs an agent unchecked."""
    out: list[PlanWarning] = []
    for k, phase in enumerate(plan.phases):
        for j, task in enumerate(phase.tasks):
            if not task.run:
                continue
            for program, switch in auto_approving(task.run):
                line, col = source_map.position(("phases", k, "tasks", j, "run"))
                out.append(
                    PlanWarning(
                        filename,
                        line,
                        col,
                        f"task '{task.id}' runs {program} with {switch} in a plain run: step, "
                        "outside the agent: safeguards (budget, prompt on the record, review)",
                        "make it an agent: task (docs/agents.md), or drop the switch",
                        AUTO_APPROVE,
                    )
                )
    return out


_ALTERNATIVE = re.compile(
    r"\b(alternatively|alternative(ly)?:|for example|for instance|e\.g\.|instead|"
    r"optionally|if you prefer|you (could|can) also|another way|either|or use|or run)\b|"
    r"(^|\n)\s*or[,:]?\s*$",
    re.IGNORECASE,
)


def looks_like_an_alternative(prose: str | None) -> str | None:
    """The words in the text before a block that say it is an alternative or an example."""
    if not prose:
        return None
    last = prose.strip().split("\n\n")[-1]
    found = _ALTERNATIVE.search(last)
    return found.group(0).strip() if found else None


def example_warning(filename: str, line: int, col: int, words: str) -> PlanWarning:
    """``VIGIL-PLAN-EXAMPLE-BLOCK`` for the block at ``line``."""
    return PlanWarning(
        filename,
        line,
        col,
        f"the text before this block says {words!r}, but every bash block of a runbook runs",
        "mark it ```bash {example} if it only shows an alternative; it then never runs",
        EXAMPLE_BLOCK,
    )
