"""The ``llm`` action: one chat completion, kept as the task's output or applied as a diff.

The HTTP call is made by vigil on the host, not from the sandbox, so the task needs the
``network`` capability (:func:`llm_capabilities`); the engine checks it under the policy
before the action runs. The API key is a plan secret named by ``api_key_secret``; it is
sent only in the ``Authorization`` header and masked in every error. The reply is data:
with ``apply: output`` it becomes the task's output, with ``apply: patch`` its diff is
applied inside the sandbox with ``git apply`` and lands in the changeset like any edit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx

from vigil.actions.base import ActionResult, AttemptContext
from vigil.actions.prompt import build_prompt, prompt_hash, render_prompt
from vigil.actions.specs import LlmConfig, LlmSpec
from vigil.errors import ExitCode, VigilError
from vigil.llm.budget import Budget
from vigil.llm.client import CallStopped, ChatClient, ChatReply
from vigil.llm.patch import APPLY_ENV, UnsafePatch, extract_diff, parse_patch
from vigil.llm.prefetch import Prefetcher
from vigil.plan.models import Task
from vigil.safety.redact import Redactor


class LlmUnconfigured(VigilError):
    code = "VIGIL-LLM-CONFIG"
    title = "an llm task does not say which endpoint or model to use"
    remedy = "Set base_url and model on the task or under [llm] in vigil.toml."
    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class LlmRequest:
    """One call, fully resolved: where, which model, what messages."""

    base_url: str
    model: str
    messages: tuple[tuple[str, str], ...]
    max_tokens: int | None
    temperature: float | None
    max_tries: int
    api_key_secret: str | None

    @property
    def hash(self) -> str:
        """Key of the prompt for prefetching: changes whenever what is sent changes."""
        flat = [self.base_url, self.model, str(self.max_tokens), str(self.temperature)]
        return prompt_hash(*flat, *(f"{role}:{text}" for role, text in self.messages))


def resolve_request(spec: LlmSpec, config: LlmConfig, system: str | None, user: str) -> LlmRequest:
    """The request for rendered messages, task settings over ``[llm]`` defaults."""
    base_url = spec.base_url or config.base_url
    model = spec.model or config.model
    if not base_url or not model:
        missing = " and ".join(n for n, v in (("base_url", base_url), ("model", model)) if not v)
        raise LlmUnconfigured(f"no {missing} for this llm task")
    messages = ((("system", system),) if system else ()) + (("user", user),)
    return LlmRequest(
        base_url=base_url,
        model=model,
        messages=messages,
        max_tokens=spec.max_tokens,
        temperature=spec.temperature,
        max_tries=spec.max_tries,
        api_key_secret=spec.api_key_secret or config.api_key_secret,
    )


def llm_capabilities(task: Task) -> tuple[str, ...]:
    """What an ``llm`` task needs under the policy: the network, used from the host."""
    return ("network",) if task.llm is not None else ()


def llm_secret_names(task: Task, config: LlmConfig) -> tuple[str, ...]:
    """The plan secret holding the task's API key, which the task receives."""
    if task.llm is None:
        return ()
    name = task.llm.api_key_secret or config.api_key_secret
    return (name,) if name else ()


def call_model(
    request: LlmRequest,
    *,
    api_key: str | None,
    config: LlmConfig,
    budget: Budget | None = None,
    stop: threading.Event | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ChatReply:
    """Make the call (after checking the budget) and charge what it used to the budget."""
    if budget is not None:
        budget.check()
    with ChatClient(
        request.base_url, api_key=api_key, timeout=config.timeout, transport=transport
    ) as client:
        reply = client.complete(
            model=request.model,
            messages=[{"role": r, "content": t} for r, t in request.messages],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            max_tries=request.max_tries,
            stop=stop,
        )
    if budget is not None:
        budget.charge(reply.usage.total_tokens, cost_of(reply, config))
    return reply


def cost_of(reply: ChatReply, config: LlmConfig) -> float:
    """The reply's cost at the ``[llm] prices`` of its model (0 if no price is set)."""
    price = config.prices.get(reply.model)
    if price is None:
        price = next((p for name, p in config.prices.items() if reply.model.startswith(name)), None)
    return reply.usage.cost(price.prompt, price.completion) if price else 0.0


class LlmAction:
    """Runs one ``llm`` task's attempt (see the module docstring)."""

    def __init__(
        self,
        spec: LlmSpec,
        config: LlmConfig | None = None,
        *,
        budget: Budget | None = None,
        prefetcher: Prefetcher[ChatReply] | None = None,
        allow_stale: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.spec = spec
        self.config = config or LlmConfig()
        self.budget = budget
        self.prefetcher = prefetcher
        self.allow_stale = allow_stale
        self.transport = transport

    def request(self, ctx: AttemptContext) -> LlmRequest:
        """The call this attempt makes (also what the engine prefetches)."""
        spec = self.spec
        user = build_prompt(ctx, prompt=spec.prompt, prompt_file=spec.prompt_file)
        system = render_prompt(ctx, spec.system, what="system message") if (spec.system) else None
        return resolve_request(spec, self.config, system, user)

    def execute(self, ctx: AttemptContext) -> ActionResult:
        """Get the reply (prefetched if still valid), then keep it or apply its diff."""
        try:
            request = self.request(ctx)
            api_key = self._api_key(ctx, request)
            reply = self._reply(ctx, request, api_key)
        except CallStopped:
            return ActionResult(ok=False, reason="model call stopped", stopped=True)
        except VigilError as exc:
            ctx.log(str(exc))
            return ActionResult(
                ok=False, reason=str(exc), code=exc.code, category=str(exc.category)
            )
        usage = self._usage(reply)
        text = Redactor(ctx.secrets.values()).redact(reply.text)
        ctx.log(
            f"llm: {reply.model} replied with {len(reply.text)} characters, "
            f"{reply.usage.total_tokens} tokens, {reply.tries} tries"
        )
        if self.spec.apply == "output":
            return ActionResult(ok=True, output=text, usage=usage)
        return self._apply(ctx, reply.text, text, usage)

    def _api_key(self, ctx: AttemptContext, request: LlmRequest) -> str | None:
        name = request.api_key_secret
        if name is None:
            return None
        if name not in ctx.secrets:
            raise LlmUnconfigured(
                f"the API key secret {name!r} is not given to this task",
                f"Declare {name!r} under `secrets:` in the plan.",
            )
        return ctx.secrets[name]

    def _reply(self, ctx: AttemptContext, request: LlmRequest, api_key: str | None) -> ChatReply:
        if self.prefetcher is not None:
            ready = self.prefetcher.take(
                ctx.task.id, request.hash, ctx.fingerprint(), allow_stale=self.allow_stale
            )
            if ready is not None:
                ctx.log("llm: using the reply prepared ahead for this prompt and workspace")
                return ready
        return call_model(
            request,
            api_key=api_key,
            config=self.config,
            budget=self.budget,
            stop=ctx.stop,
            transport=self.transport,
        )

    def _usage(self, reply: ChatReply) -> dict[str, Any]:
        return {
            "model": reply.model,
            "prompt_tokens": reply.usage.prompt_tokens,
            "completion_tokens": reply.usage.completion_tokens,
            "total_tokens": reply.usage.total_tokens,
            "cost": cost_of(reply, self.config),
            "tries": reply.tries,
        }

    def _apply(
        self, ctx: AttemptContext, raw: str, shown: str, usage: dict[str, Any]
    ) -> ActionResult:
        diff = extract_diff(raw)
        if diff is None:
            reason = "the reply holds no unified diff to apply"
            ctx.log(reason)
            return ActionResult(ok=False, reason=reason, output=shown, usage=usage)
        try:
            patch = parse_patch(diff)
        except UnsafePatch as exc:
            ctx.log(str(exc))
            return ActionResult(ok=False, reason=str(exc), output=shown, usage=usage)
        ctx.log(f"llm: applying a diff to {', '.join(patch.paths)}")
        out = ctx.run(patch.apply_argv(), stdin=diff.encode(), env=APPLY_ENV)
        if out.stopped:
            return ActionResult(ok=False, reason="stopped", output=shown, usage=usage, stopped=True)
        if not out.ok:
            return ActionResult(
                ok=False,
                exit_code=out.exit_code,
                reason="the reply's diff does not apply to the workspace (git apply's "
                "message is in the log)",
                output=shown,
                usage=usage,
            )
        return ActionResult(ok=True, exit_code=0, output=shown, usage=usage)
