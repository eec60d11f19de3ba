"""Prompts for agents and models: Jinja2 templates rendered as data, never as code.

Templates come from the plan, so they are treated like any other untrusted text: they are
rendered in Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` (no attribute access to
Python internals, bounded ``range``) with ``StrictUndefined`` (a misspelt variable is an
error, not an empty string), and the rendered text is capped. A template sees:

- ``task``: ``id``, ``name``, ``description``
- ``plan``: ``name``, ``project``, ``env``
- ``inputs``: outputs of the tasks this one needs, by task id
- ``env``: the plan's ``env`` with the task's ``env`` over it (never secrets)
- ``prior``: the previous failed round (``attempt``, ``failed_command``, ``output``,
  ``reason``), or none on the first round
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from vigil.actions.base import AttemptContext, PriorRound
from vigil.errors import ExitCode, VigilError
from vigil.plan.expressions import substitute

MAX_PROMPT_CHARS = 1_000_000
"""A rendered prompt larger than this is refused: no agent or model takes it usefully."""
MAX_CONTEXT_FILE_BYTES = 200_000

FIX_ROUND_HEADER = "## The previous attempt failed"


class PromptError(VigilError):
    code = "VIGIL-PROMPT"
    title = "a task's prompt could not be built"
    remedy = "Fix the template or the file named in the message (see docs/agents.md)."
    exit_code = ExitCode.RUN_FAILED


@runtime_checkable
class ReadsWorkspace(Protocol):
    """An attempt context that can read files of the attempt's view of the workspace."""

    def read_text(self, path: str) -> str:
        """Text of ``path`` (relative to the workspace) as the attempt sees it."""
        ...


_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def check_template(text: str) -> str | None:
    """Why ``text`` is not a valid template, or None; for plan checks before a run."""
    try:
        _ENV.parse(text)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        return f"line {line}: {exc.message}" if line else str(exc.message)
    return None


def render(text: str, variables: Mapping[str, Any], *, what: str = "prompt") -> str:
    """``text`` rendered with ``variables``; PromptError on any template problem."""
    try:
        template = _ENV.from_string(text)
        parts: list[str] = []
        size = 0
        # Stream so that a runaway loop in a template is stopped at the cap, not at OOM.
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_PROMPT_CHARS:
                raise PromptError(f"the {what} grows beyond {MAX_PROMPT_CHARS} characters")
            parts.append(chunk)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise PromptError(f"the {what} template failed{where}: {exc.message}") from None
    return "".join(parts)


OLD_SYNTAX_NOTE = (
    "note: this prompt uses the Jinja2 '{{ ... }}' syntax, which is deprecated for prompts; "
    "write '${{ needs.TASK.outputs.NAME }}', '${{ inputs.NAME }}' (see docs/plans.md)"
)


def render_prompt(ctx: AttemptContext, text: str, *, what: str = "prompt") -> str:
    """A prompt or system message of the task in this attempt.

    A text with ``${{ ... }}`` is read in the plan's expression syntax: each expression is
    replaced by its value, as data (the result is not read again as a template). Any
    other text is a Jinja2 template as before, with a note in the log when it uses it.
    """
    if "${{" in text:
        context = getattr(ctx, "expressions", None) or {}
        rendered = substitute(text, context)
        if len(rendered) > MAX_PROMPT_CHARS:
            raise PromptError(f"the {what} grows beyond {MAX_PROMPT_CHARS} characters")
        return rendered
    if "{{" in text or "{%" in text:
        ctx.log(OLD_SYNTAX_NOTE)
    return render(text, template_variables(ctx), what=what)


def prior_variables(prior: PriorRound | None) -> dict[str, Any] | None:
    """``prior`` as a template sees it."""
    if prior is None:
        return None
    return {
        "attempt": prior.attempt,
        "failed_command": prior.failed_command,
        "output": prior.output,
        "reason": prior.reason,
    }


def template_variables(ctx: AttemptContext) -> dict[str, Any]:
    """The variables a task's templates see in this attempt."""
    task, plan = ctx.task, ctx.plan
    return {
        "task": {"id": task.id, "name": task.title, "description": task.description or ""},
        "plan": {"name": plan.name, "project": plan.project, "env": dict(plan.env)},
        "inputs": dict(ctx.inputs),
        "env": {**plan.env, **task.env},
        "prior": prior_variables(ctx.prior),
    }


def fix_round_section(prior: PriorRound) -> str:
    """What an agent is told in a fix round: which check failed and what it printed."""
    return (
        f"{FIX_ROUND_HEADER}\n\n"
        f"Attempt {prior.attempt} did not pass: {prior.reason or 'a check failed'}.\n"
        f"The failing command was:\n\n    {prior.failed_command}\n\n"
        "Its output (secrets masked, long output shortened):\n\n"
        f"```\n{prior.output.rstrip()}\n```\n\n"
        "Fix the problem so that this command passes, keeping the task's goal.\n"
    )


def with_fix_round(prompt: str, prior: PriorRound | None) -> str:
    """``prompt``, followed by the fix-round section when there was a failed round."""
    if prior is None:
        return prompt
    return prompt.rstrip("\n") + "\n\n" + fix_round_section(prior)


def with_context(prompt: str, files: Mapping[str, str]) -> str:
    """``prompt`` followed by the named workspace files, each in a fenced block."""
    if not files:
        return prompt
    parts = [prompt.rstrip("\n"), "", "## Context files"]
    for path, text in files.items():
        fence = "````" if "```" in text else "```"
        parts += ["", f"### {path}", fence, text.rstrip("\n"), fence]
    return "\n".join(parts) + "\n"


def prompt_hash(*parts: str) -> str:
    """A stable key for a prompt (and system message): sha256 over the parts."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def read_workspace_file(
    root: Path, path: str, *, hidden: Sequence[Path] = (), limit: int = MAX_CONTEXT_FILE_BYTES
) -> str:
    """Text of the regular file ``path`` beneath the workspace ``root``.

    A prompt may be sent to a remote model and is handed to an agent, so a plan must not
    pull in anything it could not read from inside the sandbox: a path that leaves the
    workspace, passes through a link, or is or lies in a hidden path (``hidden`` beside
    the workspace's ``.vigil`` and the user configuration directory) or is a protected
    file, by identity, is :class:`~vigil.workspace.errors.PathRefused`.
    """
    from vigil.workspace.hidden import Hidden, read_beneath

    guard = Hidden.for_workspace(root.resolve(), hidden)
    try:
        data = read_beneath(root.resolve(), path, guard, limit=limit, what="file")
    except FileNotFoundError:
        raise PromptError(f"cannot read {path!r}: no such file in the workspace") from None
    except ValueError as exc:
        raise PromptError(str(exc)) from None
    except OSError as exc:
        raise PromptError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return data.decode("utf-8", errors="replace")


def read_text(ctx: AttemptContext, path: str) -> str:
    """``path`` as ``ctx``'s attempt sees it; PromptError if the context cannot read files."""
    if not isinstance(ctx, ReadsWorkspace):
        raise PromptError(
            f"cannot read {path!r}: this engine does not give actions workspace files",
            "Put the prompt inline with `prompt:` and drop `context:`.",
        )
    return ctx.read_text(path)


def build_prompt(
    ctx: AttemptContext,
    *,
    prompt: str | None,
    prompt_file: str | None,
    context: tuple[str, ...] = (),
) -> str:
    """The rendered prompt of a task in this attempt, with context files and fix round."""
    text = prompt if prompt is not None else read_text(ctx, prompt_file or "")
    rendered = render_prompt(ctx, text)
    files = {path: read_text(ctx, path) for path in context}
    return with_fix_round(with_context(rendered, files), ctx.prior)
