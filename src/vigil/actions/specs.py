"""The syntax of ``agent`` and ``llm`` tasks, and the ``vigil.toml`` sections they use.

A task's ``agent:`` or ``llm:`` key is parsed by :class:`AgentSpec` or :class:`LlmSpec`;
``[agents.NAME]``, ``[llm]`` and ``[budget]`` in ``vigil.toml`` by :class:`AgentsConfig`,
:class:`LlmConfig` and :class:`BudgetConfig` (through ``Config.section``). Everything here
is data: a plan can name an agent or a model, never grant itself anything.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, model_validator

PassPrompt = Literal["stdin", "arg", "file"]
"""How an agent command receives its prompt."""

Apply = Literal["output", "patch"]
"""What an ``llm`` task does with the reply: keep it as output, or apply it as a diff."""

DEFAULT_FIX_ROUNDS = 3
DEFAULT_MAX_TRIES = 5


def _str_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


Commands = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_str_list)]
"""Shell commands; a single string is a list of one."""

Names = Annotated[tuple[str, ...], BeforeValidator(_str_list)]


def _seconds(value: object) -> float:
    # Imported here: vigil.plan's models import this module, so importing the plan
    # package at module level would be circular.
    from vigil.plan.duration import parse_duration

    return parse_duration(value)


Seconds = Annotated[float, BeforeValidator(_seconds)]


class SpecModel(BaseModel):
    """Immutable and strict about unknown keys, like every plan model."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class _Prompted(SpecModel):
    prompt: str | None = Field(None, description="Jinja2 template of the prompt")
    prompt_file: str | None = Field(
        None, description="file in the workspace holding the prompt template"
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> _Prompted:
        if (self.prompt is None) == (self.prompt_file is None):
            raise ValueError("needs exactly one of 'prompt' or 'prompt_file'")
        return self


class AgentSpec(_Prompted):
    """``agent:``: run a coding agent CLI in the attempt's sandbox with a rendered prompt."""

    command: str | None = Field(None, description="the agent's command line, e.g. 'claude -p'")
    use: str | None = Field(None, description="name of an agent defined in [agents.NAME]")
    context: Names = Field(
        default=(), description="workspace files whose content is added to the prompt"
    )
    pass_prompt: PassPrompt | None = Field(
        None,
        description="how the prompt reaches the agent: 'stdin', 'arg' (last argument) or "
        "'file' (path in {prompt_file} and $VIGIL_PROMPT_FILE); default from the agent or stdin",
    )
    max_fix_rounds: int = Field(
        DEFAULT_FIX_ROUNDS,
        ge=0,
        le=20,
        description="rounds after the first in which the agent sees the failing check's output",
    )
    allowed_paths: Names = Field(
        default=(), description="gitignore-style globs the agent may change; empty: anything"
    )
    acceptance: Commands = Field(
        default=(), description="commands that must pass for the change to be accepted"
    )
    quality: Commands = Field(default=(), description="lint/format/type commands that must pass")

    @model_validator(mode="after")
    def _one_command(self) -> AgentSpec:
        if (self.command is None) == (self.use is None):
            raise ValueError("needs exactly one of 'command' or 'use' (a named agent)")
        if self.command is not None and not self.command.strip():
            raise ValueError("'command' must not be empty")
        return self


class LlmSpec(_Prompted):
    """``llm:``: one chat completion from an OpenAI-compatible endpoint, made by vigil."""

    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1; default [llm]")
    model: str | None = Field(None, description="model name; default from [llm]")
    api_key_secret: str | None = Field(
        None, description="name of the plan secret holding the API key; default from [llm]"
    )
    system: str | None = Field(None, description="system message (a template too)")
    apply: Apply = Field("output", description="'output': keep the reply; 'patch': apply its diff")
    max_tokens: int | None = Field(None, ge=1, description="completion token limit of the call")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    max_tries: int = Field(
        DEFAULT_MAX_TRIES, ge=1, le=20, description="HTTP tries on rate limits and server errors"
    )


class AgentConfig(SpecModel):
    """``[agents.NAME]``: a named agent CLI a plan refers to with ``agent: {use: NAME}``."""

    command: str = Field(min_length=1)
    pass_prompt: PassPrompt = "stdin"
    timeout: Seconds | None = None
    env: dict[str, str] = Field(default_factory=dict)
    secrets: Names = Field(default=(), description="plan secrets the agent receives as env")
    requires: Names = Field(default=(), description="capabilities the agent needs (network)")


class AgentsConfig(RootModel[dict[str, AgentConfig]]):
    """The ``[agents]`` table: agents by name."""

    root: dict[str, AgentConfig] = Field(default_factory=dict)


class Price(SpecModel):
    """Price of 1,000 tokens of a model, in the user's currency."""

    prompt: float = Field(0.0, ge=0.0)
    completion: float = Field(0.0, ge=0.0)


class LlmConfig(SpecModel):
    """``[llm]``: defaults for ``llm`` tasks and prices for cost accounting."""

    base_url: str | None = None
    model: str | None = None
    api_key_secret: str | None = None
    timeout: Seconds = Field(120.0, description="limit of one HTTP request")
    prices: dict[str, Price] = Field(default_factory=dict, description="per model, per 1k tokens")


class BudgetConfig(SpecModel):
    """``[budget]``: limits on model use per run; new calls are refused once one is reached."""

    max_tokens: int | None = Field(None, ge=0)
    max_cost: float | None = Field(None, ge=0.0)
