"""Which actions of a plan need a grant, and whether a grant allows them.

The ``[policy]`` section of ``vigil.toml``::

    [policy]
    default_environment = "dev"       # for tasks and phases that name none
    protected = ["prod"]              # every task here needs a grant, capability or not
    free = { dev = ["network"] }      # capabilities that need no grant in an environment
                                      # ("*" = every environment)

The default is strict: every declared capability needs a grant in every environment, and
every task in ``prod`` needs one. Editing the workspace is never a capability: the sandbox
keeps those changes reversible.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from vigil.errors import CATALOG, VigilError
from vigil.plan.models import Phase, Plan, Task
from vigil.safety.capabilities import RUN
from vigil.safety.errors import GrantRequired

if TYPE_CHECKING:
    # Grants (tokens, keys, their crypto) are loaded only to check one: `vigil plan
    # check` lists what a plan needs without them.
    from vigil.safety.grants import Grant
    from vigil.safety.revocation import Revocations
    from vigil.safety.tokens import Request


class PolicyConfig(BaseModel):
    """The ``[policy]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_environment: str = Field("dev", min_length=1)
    protected: tuple[str, ...] = ("prod",)
    free: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def needs_grant(self, environment: str, capability: str) -> bool:
        """Whether using ``capability`` in ``environment`` needs a grant."""
        if capability == RUN:
            return environment in self.protected
        exempt = {*self.free.get(environment, ()), *self.free.get("*", ())}
        return capability not in exempt


@dataclass(frozen=True)
class Requirement:
    """One thing a task does that needs a grant."""

    task_id: str
    environment: str
    capability: str
    project: str = ""

    def request(self, plan_hash: str | None) -> Request:
        """The request a grant is checked against."""
        from vigil.safety.tokens import Request

        return Request(self.project, self.environment, self.capability, plan_hash)


@dataclass(frozen=True)
class Decision:
    """Whether one requirement is allowed, and if not, the refusal code and why."""

    allowed: bool
    code: str | None
    reason: str


@dataclass(frozen=True)
class Missing:
    """Requirements of one environment the grant does not cover, and the command that would."""

    environment: str
    capabilities: tuple[str, ...]
    tasks: tuple[str, ...]
    code: str
    reason: str
    command: str


def environment_of(phase: Phase, task: Task, policy: PolicyConfig) -> str:
    """The environment a task acts on: its own, else its phase's, else the default."""
    return task.environment or phase.environment or policy.default_environment


def requirements(plan: Plan, policy: PolicyConfig) -> list[Requirement]:
    """Every (task, environment, capability) of ``plan`` that needs a grant, in plan order."""
    found: list[Requirement] = []
    for phase, task in plan.tasks():
        env = environment_of(phase, task, policy)
        wanted = dict.fromkeys([RUN, *phase.requires, *task.requires])
        for capability in wanted:
            if policy.needs_grant(env, capability):
                found.append(Requirement(task.id, env, capability, plan.project))
    return found


def authorize(
    requirement: Requirement,
    grant: Grant | None,
    now: datetime,
    plan_hash: str | None,
    revocations: Revocations | None = None,
) -> Decision:
    """Decide one requirement right before its action; never raises for a refusal."""
    if grant is None:
        return Decision(
            False,
            GrantRequired.code,
            f"task {requirement.task_id} needs a grant for '{requirement.capability}' "
            f"in {requirement.environment}",
        )
    from vigil.safety.grants import check_grant

    try:
        check_grant(grant, requirement.request(plan_hash), now, revocations)
    except VigilError as refusal:
        return Decision(False, refusal.code, refusal.cause)
    return Decision(True, None, f"allowed by grant {grant.id}")


def grant_command(
    project: str,
    environment: str | Iterable[str],
    capabilities: Iterable[str],
    *,
    plan_path: str | None = None,
    expires_in: str = "1h",
) -> str:
    """The ``vigil grant create`` command that covers these capabilities."""
    envs = [environment] if isinstance(environment, str) else list(environment)
    parts = ["vigil", "grant", "create", "--project", project, "--env", ",".join(envs)]
    allow = sorted({c for c in capabilities if c != RUN})
    if allow:
        parts += ["--allow", ",".join(allow)]
    parts += ["--expires-in", expires_in]
    if plan_path is not None:
        parts += ["--plan", plan_path]
    return shlex.join(parts)


def check_plan(
    plan: Plan,
    policy: PolicyConfig,
    grant: Grant | None,
    now: datetime,
    *,
    plan_path: str | None = None,
    revocations: Revocations | None = None,
) -> list[Missing]:
    """What ``grant`` leaves uncovered in ``plan``, grouped by environment, with a fix each."""
    plan_hash = plan.content_hash()
    denied: dict[str, list[tuple[Requirement, Decision]]] = {}
    for req in requirements(plan, policy):
        decision = authorize(req, grant, now, plan_hash, revocations)
        if not decision.allowed:
            denied.setdefault(req.environment, []).append((req, decision))
    missing: list[Missing] = []
    for env, items in denied.items():
        caps = tuple(dict.fromkeys(r.capability for r, _ in items))
        first = items[0][1]
        missing.append(
            Missing(
                environment=env,
                capabilities=caps,
                tasks=tuple(dict.fromkeys(r.task_id for r, _ in items)),
                code=first.code or GrantRequired.code,
                reason=first.reason,
                command=grant_command(plan.project, env, caps, plan_path=plan_path),
            )
        )
    return missing


def run_grant_command(plan: Plan, policy: PolicyConfig, *, plan_path: str | None = None) -> str:
    """The one ``vigil grant create`` command covering every requirement of ``plan``.

    A run takes a single ``--grant``, so a plan acting in several environments needs one
    grant naming all of them (with the union of their capabilities).
    """
    reqs = requirements(plan, policy)
    envs = sorted({r.environment for r in reqs})
    return grant_command(plan.project, envs, (r.capability for r in reqs), plan_path=plan_path)


def require_plan(
    plan: Plan,
    policy: PolicyConfig,
    grant: Grant | None,
    now: datetime,
    *,
    plan_path: str | None = None,
) -> None:
    """Raise unless ``grant`` covers ``plan``: VIGIL-GRANT-REQUIRED without a grant, else the
    refusal's own code (SCOPE, PLAN, EXPIRED, ...), with the command that would cover it."""
    missing = check_plan(plan, policy, grant, now, plan_path=plan_path)
    if not missing:
        return
    details = []
    for item in missing:
        details.append(
            f"{item.environment}: {', '.join(item.capabilities)} "
            f"for {', '.join(item.tasks)} ({item.reason})"
        )
    details.append("one grant for this run:")
    details.append(f"  {run_grant_command(plan, policy, plan_path=plan_path)}")
    # With a grant, say why it does not fit (SCOPE, PLAN, EXPIRED...), not just "required".
    refusal = CATALOG.get(missing[0].code, GrantRequired) if grant is not None else GrantRequired
    envs = ", ".join(m.environment for m in missing)
    raise refusal(f"plan '{plan.name}' needs a grant covering {envs}", details=details)
