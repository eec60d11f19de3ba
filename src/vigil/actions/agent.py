"""The ``agent`` action: a coding agent CLI working on the attempt's sandbox.

vigil renders the task's prompt, hands it to the agent command (on stdin, as the last
argument, or in a file in the sandbox's private ``/tmp``) and runs the command through
``ctx.run``, so everything the agent changes lands in the attempt's changeset and
nothing it prints or writes can reach the plan, the policy or the grants: the result is
data the engine judges. Review is the engine's: after the action it runs ``validate``,
``acceptance`` and ``quality`` in the same sandbox, captures the changeset and asks
:func:`spec_gate` and :func:`quality_gate`; a failed check becomes the next round's
``prior`` through :func:`build_prior`, up to ``max_fix_rounds`` rounds.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

import pathspec

from vigil.actions.base import ActionResult, AttemptContext, PriorRound
from vigil.actions.prompt import PromptError, build_prompt
from vigil.actions.specs import AgentConfig, AgentSpec, PassPrompt
from vigil.errors import ExitCode, VigilError
from vigil.plan.models import Plan
from vigil.safety.redact import Redactor
from vigil.words import plural

PROMPT_FILE_VARIABLE = "VIGIL_PROMPT_FILE"
PROMPT_FILE_PLACEHOLDER = "{prompt_file}"
# Linux refuses a single argument longer than 128 KiB (MAX_ARG_STRLEN).
MAX_ARG_PROMPT = 120_000
DEFAULT_PRIOR_LIMIT = 4000
# Writes the prompt (stdin) to $0 in the sandbox's private /tmp, runs the agent with an
# empty stdin, and removes the file, keeping the agent's exit status.
_FILE_WRAPPER = 'umask 077; cat > "$0" || exit 125; "$@" </dev/null; s=$?; rm -f "$0"; exit $s'


class AgentUnknown(VigilError):
    code = "VIGIL-AGENT-UNKNOWN"
    title = "a task uses an agent that vigil.toml does not define"
    remedy = "Define it under [agents.NAME] in vigil.toml, or give the task a `command:`."
    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class AgentInvocation:
    """What runs in the sandbox: argv, what goes to stdin, extra env, a time limit."""

    argv: list[str]
    stdin: bytes | None
    env: dict[str, str]
    timeout: float | None


def resolve_agent(spec: AgentSpec, agents: Mapping[str, AgentConfig]) -> AgentConfig:
    """The agent a task runs: its inline ``command`` or the named ``[agents.NAME]``."""
    if spec.use is not None:
        if spec.use not in agents:
            known = ", ".join(sorted(agents)) or "none"
            raise AgentUnknown(f"agent {spec.use!r} is not defined (defined: {known})")
        named = agents[spec.use]
        if spec.pass_prompt is not None:
            return named.model_copy(update={"pass_prompt": spec.pass_prompt})
        return named
    return AgentConfig(command=spec.command or "", pass_prompt=spec.pass_prompt or "stdin")


def check_agents(plan: Plan, agents: Mapping[str, AgentConfig]) -> None:
    """Every ``agent: {use: NAME}`` in ``plan`` names a defined agent; before a run starts."""
    for _, task in plan.tasks():
        if task.agent is not None:
            resolve_agent(task.agent, agents)


def agent_secret_names(spec: AgentSpec, agents: Mapping[str, AgentConfig]) -> tuple[str, ...]:
    """Plan secrets the named agent receives, besides the task's own ``secrets``."""
    return resolve_agent(spec, agents).secrets if spec.use is not None else ()


def agent_capabilities(spec: AgentSpec, agents: Mapping[str, AgentConfig]) -> tuple[str, ...]:
    """Capabilities the agent needs (``requires`` of ``[agents.NAME]``)."""
    return resolve_agent(spec, agents).requires if spec.use is not None else ()


def prompt_path(run_id: str, task_id: str, attempt: int) -> str:
    """Where the prompt file goes: the sandbox's private /tmp, unique per attempt."""
    key = hashlib.sha256(f"{run_id}\0{task_id}\0{attempt}".encode()).hexdigest()[:16]
    return f"/tmp/vigil-prompt-{key}.md"


def invocation(
    agent: AgentConfig,
    prompt: str,
    *,
    path: str,
    secrets: Mapping[str, str] = {},
) -> AgentInvocation:
    """How to run ``agent`` with ``prompt`` (pure: no process is started here)."""
    try:
        words = shlex.split(agent.command)
    except ValueError as exc:
        raise PromptError(f"agent command {agent.command!r} cannot be parsed: {exc}") from None
    if not words:
        raise PromptError("the agent command is empty")
    env = dict(agent.env)
    env.update({name: secrets[name] for name in agent.secrets if name in secrets})
    data = prompt.encode()
    mode: PassPrompt = agent.pass_prompt
    if mode == "stdin":
        return AgentInvocation(words, data, env, agent.timeout)
    if mode == "arg":
        if len(data) > MAX_ARG_PROMPT:
            raise PromptError(
                f"the prompt ({len(data)} bytes) is too long to pass as an argument",
                "Use `pass_prompt: file` or `stdin` for long prompts.",
            )
        return AgentInvocation([*words, prompt], None, env, agent.timeout)
    argv = [w.replace(PROMPT_FILE_PLACEHOLDER, path) for w in words]
    env[PROMPT_FILE_VARIABLE] = path
    return AgentInvocation(["/bin/sh", "-c", _FILE_WRAPPER, path, *argv], data, env, agent.timeout)


class AgentAction:
    """Runs one ``agent`` task's attempt (see the module docstring)."""

    def __init__(self, spec: AgentSpec, agents: Mapping[str, AgentConfig] | None = None) -> None:
        self.spec = spec
        self.agents = dict(agents or {})

    def execute(self, ctx: AttemptContext) -> ActionResult:
        """Render the prompt and run the agent in the sandbox; its exit decides ``ok``."""
        spec = self.spec
        try:
            agent = resolve_agent(spec, self.agents)
            prompt = build_prompt(
                ctx, prompt=spec.prompt, prompt_file=spec.prompt_file, context=spec.context
            )
            path = prompt_path(ctx.run_id, ctx.task.id, ctx.attempt)
            call = invocation(agent, prompt, path=path, secrets=ctx.secrets)
        except VigilError as exc:
            ctx.log(str(exc))
            return ActionResult(
                ok=False, reason=str(exc), code=exc.code, category=str(exc.category)
            )
        round_note = f" (fix round after attempt {ctx.prior.attempt})" if ctx.prior else ""
        ctx.log(f"agent: {agent.command}{round_note}; prompt of {len(prompt)} characters")
        out = ctx.run(call.argv, stdin=call.stdin, env=call.env, timeout=call.timeout)
        if out.stopped:
            return ActionResult(ok=False, reason="agent stopped", stopped=True)
        if out.timed_out:
            return ActionResult(
                ok=False, reason=f"agent timed out after {out.duration:.0f}s", timed_out=True
            )
        if out.exit_code != 0:
            return ActionResult(
                ok=False, exit_code=out.exit_code, reason=f"agent exited with {out.exit_code}"
            )
        return ActionResult(ok=True, exit_code=0)


# Review gates -------------------------------------------------------------------------


@dataclass(frozen=True)
class GateCommand:
    """A command the engine runs in the attempt's sandbox after the agent."""

    kind: Literal["acceptance", "quality"]
    run: str


@dataclass(frozen=True)
class CommandResult:
    """How one gate command ended."""

    command: str
    ok: bool
    exit_code: int | None = None


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict; ``offending_paths`` lists paths outside ``allowed_paths``."""

    ok: bool
    reason: str = ""
    offending_paths: tuple[str, ...] = field(default=())
    failed_command: str | None = None


def gate_commands(spec: AgentSpec) -> list[GateCommand]:
    """The acceptance commands, then the quality commands, in plan order."""
    return [GateCommand("acceptance", c) for c in spec.acceptance] + [
        GateCommand("quality", c) for c in spec.quality
    ]


def outside_allowed(paths: Iterable[str], allowed_paths: Sequence[str]) -> list[str]:
    """The paths no ``allowed_paths`` glob (gitignore syntax) matches; none if no globs.

    Changesets list directories too: a directory holding an allowed change is allowed
    (``src/**`` lets an agent create ``src/``), and of an offending directory and the
    offending paths inside it only the innermost are listed.
    """
    if not allowed_paths:
        return []
    spec = pathspec.GitIgnoreSpec.from_lines(allowed_paths)
    given = sorted(set(paths))
    allowed = {p for p in given if spec.match_file(p)}
    parents = {str(PurePosixPath(p).parents[k]) for p in allowed for k in range(p.count("/"))}
    bad = [p for p in given if p not in allowed and p not in parents]
    return [p for p in bad if not any(q.startswith(p + "/") for q in bad)]


def _first_failure(results: Sequence[CommandResult]) -> CommandResult | None:
    return next((r for r in results if not r.ok), None)


def spec_gate(
    changeset_paths: Iterable[str],
    allowed_paths: Sequence[str],
    acceptance_results: Sequence[CommandResult] = (),
) -> GateResult:
    """Did the agent stay inside ``allowed_paths`` and pass every acceptance command?"""
    offending = outside_allowed(changeset_paths, allowed_paths)
    if offending:
        shown = ", ".join(offending[:5]) + (" ..." if len(offending) > 5 else "")
        return GateResult(
            False,
            f"changed {plural(len(offending), 'path')} outside allowed_paths: {shown}",
            (*offending,),
        )
    failed = _first_failure(acceptance_results)
    if failed is not None:
        return GateResult(
            False, f"acceptance {failed.command!r} failed", failed_command=failed.command
        )
    return GateResult(True)


def quality_gate(results: Sequence[CommandResult]) -> GateResult:
    """Did every quality command (lint, format, types) pass?"""
    failed = _first_failure(results)
    if failed is not None:
        return GateResult(
            False, f"quality {failed.command!r} failed", failed_command=failed.command
        )
    return GateResult(True)


# Fix rounds ---------------------------------------------------------------------------


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, keeping its head and (more of) its tail.

    The end of a failing command's output usually holds the error; the head says what ran.
    """
    if len(text) <= limit:
        return text
    marker = f"\n... [{len(text)} characters, middle omitted] ...\n"
    room = limit - len(marker)
    if room <= 0:
        return text[-limit:] if limit > 0 else ""
    head = room // 3
    tail = room - head
    return text[:head] + marker + text[len(text) - tail :]


def build_prior(
    attempt: int,
    failed_command: str,
    output: str,
    redactor: Redactor,
    limit: int = DEFAULT_PRIOR_LIMIT,
    *,
    reason: str = "",
) -> PriorRound:
    """The ``prior`` of the next round: masked first (whole), then shortened to ``limit``."""
    return PriorRound(
        attempt=attempt,
        failed_command=redactor.redact(failed_command),
        output=shorten(redactor.redact(output), limit),
        reason=redactor.redact(reason),
    )


def fix_rounds_left(spec: AgentSpec, rounds_done: int) -> bool:
    """Whether a failed round ``rounds_done`` (1 = the first) earns another with ``prior``."""
    return rounds_done <= spec.max_fix_rounds
