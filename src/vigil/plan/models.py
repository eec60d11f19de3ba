"""The plan as data: phases of tasks with dependencies, retries, timeouts and checks.

Models are frozen pydantic v2 models with ``extra="forbid"`` so that a misspelt key is an
error, never silently ignored. Loading (with ``file:line:col`` errors) lives in
:mod:`vigil.plan.loader`; cross-task checks (unknown or cyclic ``needs``, duplicate ids)
in :mod:`vigil.plan.graph`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from vigil.actions.specs import AgentSpec, LlmSpec
from vigil.plan.duration import parse_duration

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

INPUT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
"""An input's name: a letter or ``_`` first, then letters, digits, ``_``, ``-``."""

Id = Annotated[str, Field(pattern=ID_PATTERN)]
"""A phase or task id: letters, digits, ``_``, ``.``, ``-``; starts with a letter or digit."""

EXPANSION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\[[A-Za-z0-9_.+=,-]{0,200}\]$"
"""The id of one expansion of a matrix: ``test[python=3.12,db=pg]``. No path separator,
no space, no quote: ids name log directories and appear in commands people copy."""

TaskId = Annotated[
    str,
    Field(
        pattern=f"{ID_PATTERN}|{EXPANSION_ID_PATTERN}",
        json_schema_extra={"pattern": ID_PATTERN},
    ),
]
"""A task id as a plan writes it, or the id of a matrix expansion (``test[python=3.12]``)."""

RECORDED = "recorded"
"""Validation context key: the data is a plan a run recorded (its matrices expanded)."""

MATRIX_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
"""A matrix key: read as ``${{ matrix.KEY }}`` and shown in expansion ids."""

MatrixValue = bool | int | float | str
"""One value of a matrix key: text, a number or a boolean."""

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)?\s*)+$"},
            ],
            "description": "seconds, or a string like '90s', '10m', '1h30m', '250ms'",
        }
    ),
]
"""A duration in seconds; plans may write ``90s``, ``10m``, ``1h30m``."""


class Model(BaseModel):
    """Base for every plan model: immutable, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


RetryOn = Literal["timeout", "failure"] | int
"""A failure kind that is retried: ``timeout``, ``failure`` (any non-zero exit) or an exit code."""


class RetryPolicy(Model):
    """How many attempts a task gets and how long to wait between them.

    The delay before attempt ``n+1`` is ``min(max, initial * factor**(n-1))``, spread by up to
    ``jitter`` (a fraction of the delay) so that many retries do not fire together.
    """

    attempts: int = Field(1, ge=1, le=100, description="total attempts, the first included")
    initial: Duration = Field(1.0, description="delay before the first retry")
    factor: float = Field(2.0, ge=1.0, le=100.0, description="growth of the delay per retry")
    max: Duration = Field(300.0, description="upper bound of one delay")
    jitter: float = Field(0.1, ge=0.0, le=1.0, description="random spread, fraction of delay")
    on: Literal["all"] | list[RetryOn] = Field(
        "all",
        description="which failures are retried: 'all', or a list of 'timeout', 'failure' "
        "and exit codes",
    )

    def retries(self, *, exit_code: int | None, timed_out: bool) -> bool:
        """Whether a failure of this kind is retried under this policy (attempts aside)."""
        if self.on == "all":
            return True
        if timed_out:
            return "timeout" in self.on
        if "failure" in self.on:
            return True
        return exit_code is not None and exit_code in self.on


class Check(Model):
    """A command that must exit 0: a task's or a phase's validation."""

    run: str = Field(min_length=1, description="shell command or script")
    name: str | None = None
    timeout: Duration | None = None


def _check_list(value: object) -> object:
    """Accept ``validate: "cmd"``, ``validate: ["cmd", {run: ...}]``."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        return [{"run": v} if isinstance(v, str) else v for v in value]
    return value


Checks = Annotated[tuple[Check, ...], BeforeValidator(_check_list)]


def _str_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


IdList = Annotated[tuple[Id, ...], BeforeValidator(_str_list)]

TaskIdList = Annotated[
    tuple[Annotated[str, Field(pattern=f"{ID_PATTERN}|{EXPANSION_ID_PATTERN}")], ...],
    BeforeValidator(_str_list),
]
"""Task ids a task needs: a matrix's id stands for all its expansions."""

NameList = Annotated[tuple[str, ...], BeforeValidator(_str_list)]
"""A list of names (capabilities, secrets); a single string is a list of one."""


def _env_patterns(value: tuple[str, ...]) -> tuple[str, ...]:
    from vigil.envnames import check_pass_env

    check_pass_env(value)
    return value


EnvPatterns = Annotated[
    tuple[Annotated[str, Field(pattern=r"^[A-Za-z0-9_*?]+$")], ...],
    BeforeValidator(_str_list),
    AfterValidator(_env_patterns),
]
"""Names or globs of host environment variables (``pass_env``)."""


def _env_map(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"env name {name!r} is not a variable name (no '=', no NUL)")
        if "\0" in text:
            raise ValueError(f"env value of {name!r} holds a NUL character")
    return value


EnvMap = Annotated[dict[str, str], AfterValidator(_env_map)]
"""Environment variables a plan or task sets: names and values the kernel can pass."""


ACTION_KINDS = ("run", "agent", "llm", "approval")
"""The keys that say what a task does; a task has exactly one."""


class ApprovalSpec(Model):
    """A question for a person; the task waits (durably) for the answer."""

    question: str = Field(min_length=1)
    choices: tuple[str, ...] | None = Field(
        None, description="allowed answers for --value (approve/reject are always allowed)"
    )
    timeout: Duration | None = Field(None, description="how long to wait for an answer")
    on_timeout: Literal["approve", "reject", "default"] = Field(
        "reject", description="what a question that times out resolves to"
    )
    default: str | None = Field(None, description="the value used when on_timeout is 'default'")


class EscalateSpec(Model):
    """What happens when a task is blocked: ask a person (``defer``) or fail (``stop``)."""

    on_failure: Literal["defer", "stop"] = Field(
        "stop", description="'defer': when retries are spent, ask a person to retry or give up"
    )
    on_security_concern: Literal["defer", "stop"] = Field(
        "stop",
        description="a denied grant or a protected path touched: 'stop' the run, or 'defer'",
    )


Condition = Annotated[
    str,
    Field(
        min_length=1,
        description='run only if this expression is true, e.g. "${{ failure() }}" or '
        '"inputs.deploy"; status functions: success() (the default), failure(), always(), '
        "cancelled()",
    ),
]


class InputSpec(Model):
    """One value the person starting the run supplies (``vigil run --input NAME=VALUE``)."""

    type: Literal["string", "number", "boolean", "choice"] = Field(
        "string", description="how the value is read and checked"
    )
    description: str | None = None
    required: bool = Field(False, description="the run does not start without a value")
    default: bool | int | float | str | None = Field(
        None, description="the value when none is given"
    )
    options: tuple[str, ...] | None = Field(
        None, description="the allowed values of a 'choice' input"
    )

    @model_validator(mode="after")
    def _options_for_choice(self) -> InputSpec:
        if self.type == "choice" and not self.options:
            raise ValueError("is a choice without options: list them under 'options:'")
        if self.type != "choice" and self.options is not None:
            raise ValueError(f"has options but is of type '{self.type}': write type: choice")
        return self


MATRIX_WORDS = ("include", "exclude", "max_parallel", "fail_fast")
"""The keys of ``matrix:`` that are not matrix keys."""


class Matrix(Model):
    """``matrix:`` of a task: keys with lists of values, expanded into one task per
    combination, as GitHub Actions' ``strategy.matrix`` is (see :mod:`vigil.plan.matrix`)."""

    model_config = ConfigDict(
        frozen=True,
        extra="allow",
        populate_by_name=True,
        json_schema_extra={
            "additionalProperties": {
                "type": "array",
                "minItems": 1,
                "items": {"type": ["string", "number", "boolean"]},
                "description": "a matrix key and its values: ${{ matrix.KEY }}",
            },
            "propertyNames": {"pattern": MATRIX_KEY_PATTERN},
        },
    )
    __pydantic_extra__: dict[str, list[MatrixValue]] = Field(init=False)

    include: tuple[dict[str, MatrixValue], ...] = Field(
        default=(),
        description="combinations to add, or keys to add to the combinations they match",
    )
    exclude: tuple[dict[str, MatrixValue], ...] = Field(
        default=(), description="combinations to leave out (each matches on the keys it names)"
    )
    max_parallel: int | None = Field(
        None, ge=1, description="at most this many expansions run at once (default: no limit)"
    )
    fail_fast: bool = Field(
        False,
        description="true: when one expansion fails, the ones not yet started are skipped "
        "(default false: every combination runs, as every other branch of a plan does)",
    )

    @model_validator(mode="after")
    def _keys_and_values(self) -> Matrix:
        for key, values in (self.__pydantic_extra__ or {}).items():
            if re.fullmatch(MATRIX_KEY_PATTERN, key) is None:
                raise ValueError(
                    f"key '{key}' is not valid: a matrix key has letters, digits, '_' and "
                    "'-', and starts with a letter or '_'"
                )
            if not values:
                raise ValueError(f"key '{key}' has no values")
        return self

    @property
    def axes(self) -> dict[str, list[MatrixValue]]:
        """The matrix keys and their values, as written (``include``/``exclude`` aside)."""
        return dict(self.__pydantic_extra__ or {})


class Expansion(Model):
    """What a task expanded from a matrix carries: its group and its values. Set by
    :func:`vigil.plan.matrix.expand_plan`, never written in a plan."""

    group: Id
    values: dict[str, MatrixValue]
    matrix: Matrix
    """The matrix as written (``vigil plan convert`` writes it back)."""

    @property
    def max_parallel(self) -> int | None:
        """How many expansions of the group may run at once (None: no limit)."""
        return self.matrix.max_parallel

    @property
    def fail_fast(self) -> bool:
        """Whether a failed expansion skips the group's expansions not started yet."""
        return self.matrix.fail_fast


class Task(Model):
    """One unit of work. Its attempts run ``run``; ``validate`` decides whether it counts."""

    id: TaskId
    name: str | None = None
    description: str | None = None
    run: str | None = Field(None, min_length=1, description="shell command or multi-line script")
    agent: AgentSpec | None = Field(None, description="run a coding agent CLI with a prompt")
    llm: LlmSpec | None = Field(None, description="ask an OpenAI-compatible model")
    approval: ApprovalSpec | None = Field(None, description="ask a person and wait for the answer")
    escalate: EscalateSpec | None = Field(None, description="when to ask a person for help")
    needs: TaskIdList = Field(
        default=(),
        description="ids of tasks that must succeed first; a matrix's id needs all its expansions",
    )
    if_: Condition | None = Field(None, alias="if")
    matrix: Matrix | None = Field(
        None,
        description="run the task once per combination of values, as test[python=3.12,db=pg]; "
        "values reach steps through env: ${{ matrix.KEY }}",
    )
    expansion: SkipJsonSchema[Expansion | None] = None
    tags: NameList = Field(
        default=(), description="labels for partial runs: vigil run --tags T / --skip-tags T"
    )
    env: EnvMap = Field(default_factory=dict)
    pass_env: EnvPatterns | None = Field(
        None,
        description="host variables the task gets, by name or glob ('PIP_*'): only those "
        "[workspace] pass_env in vigil.toml also allows, never VIGIL_*; default: all it allows",
    )
    workdir: str | None = Field(None, description="directory relative to the workspace")
    timeout: Duration | None = None
    retry: RetryPolicy | None = None
    fallback: str | None = Field(
        None, description="command run once retries are spent; success marks the task degraded"
    )
    on_failure: Literal["stop", "continue"] = Field(
        "stop", description="'stop': a failure fails the run; 'continue': it is reported only"
    )
    checks: Checks = Field(default=(), alias="validate")
    requires: NameList = Field(
        default=(), description="capabilities the task needs (network, deploy, push, ...)"
    )
    environment: str | None = Field(
        None, description="environment the task acts on (dev, staging, prod, ...); overrides phase"
    )
    secrets: NameList = Field(
        default=(),
        description="names of secrets (declared in vigil.toml [secrets]) the task receives "
        "as environment variables",
    )
    review: Literal["required", "none"] = Field(
        "none", description="'required': hold the task's changes until a person approves them"
    )
    rollback: str | None = Field(
        None,
        description="compensation for effects outside the workspace, run by `vigil rollback "
        "--all` in reverse order of completion",
    )

    @field_validator("expansion", mode="before")
    @classmethod
    def _expansion_is_recorded(cls, value: object, info: ValidationInfo) -> object:
        # Before the value is read: whatever a plan writes there is refused for what it is.
        if value is not None and not (info.context or {}).get(RECORDED):
            raise ValueError("is set by vigil when it expands a matrix: write 'matrix:'")
        return value

    @model_validator(mode="after")
    def _expansion_ids(self) -> Task:
        if self.expansion is None and "[" in self.id:
            raise ValueError(
                f"id '{self.id}' has '[': brackets are kept for the expansions of a matrix"
            )
        return self

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Task:
        given = [k for k in ACTION_KINDS if getattr(self, k) is not None]
        kinds = ", ".join(f"'{k}'" for k in ACTION_KINDS)
        if not given:
            raise ValueError(f"is missing an action: give one of {kinds}")
        if len(given) > 1:
            both = " and ".join(f"'{k}'" for k in given)
            raise ValueError(f"has {both}: give exactly one action of {kinds}")
        return self

    @property
    def title(self) -> str:
        """What to call the task in reports; an expansion of a matrix with a name keeps
        its values: ``Unit tests [python=3.12]``."""
        if self.name and self.expansion is not None:
            return f"{self.name} {self.id[len(self.expansion.group) :]}"
        return self.name or self.id


_LATER_TASK_KEYS = ("pass_env", "matrix", "expansion")
"""Task keys that are not part of a plan's hash while unset (see ``canonical_json``)."""


class Phase(Model):
    """An ordered stage. The next phase starts only after this one is settled and validated."""

    id: Id
    name: str | None = None
    description: str | None = None
    tasks: tuple[Task, ...] = Field(min_length=1)
    if_: Condition | None = Field(None, alias="if")
    checks: Checks = Field(default=(), alias="validate")
    requires: NameList = Field(default=(), description="capabilities every task of the phase needs")
    environment: str | None = Field(None, description="environment of the phase's tasks")

    @property
    def title(self) -> str:
        """What to call the phase in reports."""
        return self.name or self.id


class Defaults(Model):
    """Settings every task gets unless it sets its own."""

    retry: RetryPolicy | None = None
    timeout: Duration | None = None


class Plan(Model):
    """A whole plan: what to do, in which order, and how to recover."""

    name: str = Field(min_length=1)
    project: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str | None = None
    inputs: dict[Annotated[str, Field(pattern=INPUT_PATTERN)], InputSpec] = Field(
        default_factory=dict,
        description="values supplied when the run starts: vigil run --input NAME=VALUE",
    )
    env: EnvMap = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    phases: tuple[Phase, ...] = Field(min_length=1)
    # Task by id, built once: the engine looks tasks up on every step, and a scan per lookup
    # made a run quadratic in the number of tasks.
    _by_id: dict[str, Task] = PrivateAttr(default_factory=dict)
    _groups: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        """Index the tasks by id (the first one wins if a plan repeats an id), and the
        expansions of each matrix by the matrix's id."""
        groups: dict[str, list[str]] = {}
        for _, task in self.tasks():
            self._by_id.setdefault(task.id, task)
            if task.expansion is not None:
                groups.setdefault(task.expansion.group, []).append(task.id)
        self._groups = {k: tuple(v) for k, v in groups.items()}

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """The id of each expanded matrix -> the ids of its expansions, in plan order."""
        return self._groups

    @classmethod
    def from_record(cls, text: str) -> Plan:
        """The plan a run recorded (its canonical JSON).

        Runs recorded before secret sources moved to ``vigil.toml`` hold a ``secrets``
        mapping; it is dropped unread, so whoever can write the store cannot choose where
        a secret comes from either.
        """
        data = json.loads(text)
        if isinstance(data, dict):
            data.pop("secrets", None)
        return cls.model_validate(data, context={RECORDED: True})

    def tasks(self) -> Iterator[tuple[Phase, Task]]:
        """Every task with its phase, in plan order."""
        for phase in self.phases:
            for task in phase.tasks:
                yield phase, task

    def task(self, task_id: str) -> Task:
        """The task with this id; KeyError if there is none."""
        return self._by_id[task_id]

    def retry_for(self, task: Task) -> RetryPolicy:
        """The retry policy that applies to ``task``."""
        return task.retry or self.defaults.retry or RetryPolicy()

    def timeout_for(self, task: Task) -> float | None:
        """The timeout in seconds that applies to ``task``, or None for no limit."""
        return task.timeout if task.timeout is not None else self.defaults.timeout

    def canonical_json(self) -> str:
        """A stable serialisation: equal plans give equal text."""
        data = self.model_dump(mode="json", by_alias=True, exclude_defaults=False)
        # Keys added after plans were first recorded are left out while unused, so a plan
        # that does not use them keeps the hash its runs and grants were bound to.
        if not data.get("inputs"):
            data.pop("inputs", None)
        for phase in data["phases"]:
            for item in (phase, *phase["tasks"]):
                if item.get("if") is None:
                    item.pop("if", None)
                if not item.get("tags", True):
                    item.pop("tags", None)
        for phase in data["phases"]:
            for task in phase["tasks"]:
                for key in _LATER_TASK_KEYS:
                    if task.get(key) is None:
                        task.pop(key, None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def content_hash(self) -> str:
        """``sha256:`` of the canonical form; grants and runs bind to it."""
        return "sha256:" + hashlib.sha256(self.canonical_json().encode()).hexdigest()
