"""What a run may do: its grant, the policy, halts and secrets, checked where they matter.

The policy is read once when the driver starts, so a step that edits ``vigil.toml``
(which the sandbox makes read-only anyway) cannot change the rules of the run it is in.
The grant is verified once, and every privileged action is authorized again right
before it runs (expiry, revocation, halt) with the decision written to the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.config import Config, user_config_dir
from vigil.engine.audit import Auditor
from vigil.errors import CATALOG, VigilError
from vigil.plan.models import Plan, Task
from vigil.safety import (
    Grant,
    PolicyConfig,
    Redactor,
    StreamRedactor,
    check_not_halted,
    load_grant,
    redactor_for,
    require_plan,
)
from vigil.safety.audit import AuditFailed, audit_path
from vigil.safety.errors import GrantRefused
from vigil.safety.halt import Ledger, ledger_path
from vigil.safety.keys import trusted_keys
from vigil.safety.policy import Decision, Requirement, authorize, environment_of, requirements
from vigil.safety.secrets import (
    SecretsConfig,
    SecretSource,
    check_secret_names,
    resolve_secrets,
)
from vigil.safety.tokens import RUN
from vigil.workspace.hidden import Hidden, hidden_paths

if TYPE_CHECKING:
    from vigil.store import RunStore


@dataclass(frozen=True)
class NotGranted:
    """Why a dry run does not run a task: the grant it needs is missing or does not cover it."""

    environment: str
    capabilities: tuple[str, ...]
    code: str
    reason: str


def would_need(environment: str, capabilities: tuple[str, ...]) -> str:
    """``would need a grant for network in dev`` (``to run in prod`` with no capability)."""
    named = [c for c in capabilities if c != RUN]
    if not named:
        return f"would need a grant to run in {environment}"
    return f"would need a grant for {', '.join(named)} in {environment}"


def is_grant_refusal(code: str | None) -> bool:
    """Whether a refusal says the grant is missing or does not cover the action (not a
    halt, nor an audit log that cannot be written)."""
    refusal = CATALOG.get(code or "")
    return refusal is not None and issubclass(refusal, GrantRefused)


class Authority:
    """The run's authority and secrets, fixed when the driver starts."""

    def __init__(
        self,
        config: Config,
        store: RunStore,
        plan: Plan,
        run_id: str,
        *,
        grant_id: str | None,
        auditor: Auditor,
    ) -> None:
        self.store = store
        self.plan = plan
        self.run_id = run_id
        self.auditor = auditor
        self.policy = config.section("policy", PolicyConfig)
        # Halts lifted only by a signed unhalt: the ledger beside the keys.
        self.ledger = Ledger(ledger_path(user_config_dir()), _trusted())
        self.grant: Grant | None = load_grant(grant_id) if grant_id else None
        self.plan_hash = plan.content_hash()
        self._by_task: dict[str, list[Requirement]] = {}
        for req in requirements(plan, self.policy):
            self._by_task.setdefault(req.task_id, []).append(req)
        # Agents and model calls bring capabilities of their own (a model call is network).
        for phase, task in plan.tasks():
            extra = action_capabilities(task, config)
            env = environment_of(phase, task, self.policy)
            have = {r.capability for r in self._by_task.get(task.id, [])}
            for cap in extra:
                if cap not in have and self.policy.needs_grant(env, cap):
                    self._by_task.setdefault(task.id, []).append(
                        Requirement(task.id, env, cap, plan.project)
                    )
        self.workspace = config.workspace
        from vigil.actions.specs import AgentsConfig, LlmConfig

        self.agents = dict(config.section("agents", AgentsConfig).root)
        self.llm_config = config.section("llm", LlmConfig)
        self.config = config
        self.secret_sources = declared_secrets(config)
        self.secrets: dict[str, str] = {}
        self.redactor: Redactor = redactor_for({})

    def load_secrets(self) -> None:
        """Read the secrets the plan names, from the sources ``[secrets]`` in vigil.toml
        declares, for this driver's lifetime; each read is audited (never its value)."""
        check_secret_names(self.plan, self.secret_sources)
        names = {n for _, task in self.plan.tasks() for n in self._secret_names(task)}
        self.secrets = resolve_secrets(
            names,
            self.secret_sources,
            workspace=self.workspace,
            hidden=secret_guard(self.config),
            record=self._audit_secret,
        )
        self.redactor = redactor_for(self.secrets)

    def _audit_secret(self, name: str, source: SecretSource, error: VigilError | None) -> None:
        reason = f"secret {name} from vigil.toml [secrets] ({source.kind})"
        self.auditor.record(
            action="secret.read",
            decision="allow" if error is None else "deny",
            reason=reason if error is None else f"{reason}: {error.code}: {error.cause}",
            run=self.run_id,
        )

    # ------------------------------------------------------------------ checks

    def preflight(self, plan_path: str | None, *, dry_run: bool = False) -> None:
        """Before a run starts: refuse if halted or if the grant does not cover the plan.

        A dry run needs no grant to start (what its grant does not cover is not run, see
        :meth:`authorize_dry_run`), but a halt refuses it like any run.
        """
        try:
            check_not_halted(self.store, self.plan.project, self.ledger)
            if not dry_run:
                require_plan(self.plan, self.policy, self.grant, _now(), plan_path=plan_path)
        except VigilError as refusal:
            # A refused start is a privileged decision too: it goes on the record.
            self.auditor.record(
                action="run.start",
                decision="deny",
                reason=f"{refusal.code}: {refusal.cause}",
                run=self.run_id,
                grant=self.grant.id if self.grant else None,
            )
            raise

    def privileged(self, task: Task) -> bool:
        """Whether the task does anything the policy reserves for grants."""
        return bool(self._by_task.get(task.id))

    def authorize(self, task: Task) -> Decision:
        """Right before the task's attempt: every requirement allowed, and not halted."""
        reqs = self._by_task.get(task.id, [])
        if not reqs:
            return Decision(True, None, "nothing privileged")
        try:
            check_not_halted(self.store, self.plan.project, self.ledger)
        except VigilError as exc:
            # A halt refuses; a store that cannot say whether the project is halted is a
            # transient failure (VIGIL-STORE), not a halt: the decision keeps its code.
            decision = Decision(False, exc.code, exc.cause)
            return self._audited(task, reqs[0], decision)
        now = _now()
        for req in reqs:
            decision = self._audited(task, req, authorize(req, self.grant, now, self.plan_hash))
            if not decision.allowed:
                return decision
        return Decision(True, None, f"allowed by grant {self.grant.id if self.grant else '-'}")

    def authorize_dry_run(self, task: Task) -> Decision | NotGranted:
        """:meth:`authorize`, audited the same way, for a dry run: a refusal for want of a
        grant becomes :class:`NotGranted` (the task is not run, and listed); any other
        refusal (a halt, an audit log that cannot be written) stays a refusal."""
        decision = self.authorize(task)
        if decision.allowed or not is_grant_refusal(decision.code):
            return decision
        now = _now()
        reqs = self._by_task.get(task.id, [])
        uncovered = [r for r in reqs if not authorize(r, self.grant, now, self.plan_hash).allowed]
        caps = tuple(dict.fromkeys(r.capability for r in uncovered or reqs))
        environment = (uncovered or reqs)[0].environment
        reason = would_need(environment, caps)
        if self.grant is not None:
            reason += f" (grant {self.grant.id}: {decision.code}: {decision.reason})"
        return NotGranted(environment, caps, str(decision.code), reason)

    def _audited(self, task: Task, req: Requirement, decision: Decision) -> Decision:
        """``decision`` once it is on the record; a refusal if it could not be recorded."""
        try:
            self._audit(task, req, decision)
        except AuditFailed as exc:
            return Decision(False, exc.code, exc.cause)
        return decision

    def network_allowed(self, task: Task, phase_requires: tuple[str, ...] = ()) -> bool:
        """Network inside the sandbox: only if declared (and granted: see :meth:`authorize`)."""
        declared = (*task.requires, *phase_requires)
        if task.agent is not None:
            from vigil.actions.agent import agent_capabilities

            declared += tuple(agent_capabilities(task.agent, self.agents))
        return "network" in declared

    def _audit(self, task: Task, req: Requirement, decision: Decision) -> None:
        self.auditor.record(
            action="capability.use" if req.capability != RUN else "task.run",
            decision="allow" if decision.allowed else "deny",
            reason=decision.reason if decision.allowed else f"{decision.code}: {decision.reason}",
            run=self.run_id,
            task=task.id,
            capability=req.capability,
            grant=self.grant.id if self.grant else None,
        )

    # ------------------------------------------------------------------ secrets

    def _secret_names(self, task: Task) -> set[str]:
        """The secrets ``task`` names, its agent's and its model key included."""
        names = set(task.secrets)
        if task.agent is not None:
            from vigil.actions.agent import agent_secret_names

            names |= set(agent_secret_names(task.agent, self.agents))
        if task.llm is not None:
            from vigil.actions.llm import llm_secret_names

            names |= set(llm_secret_names(task, self.llm_config))
        return names

    def env_for(self, task: Task) -> Mapping[str, str]:
        """The secrets ``task`` receives, as environment variables (its agent's and model
        key included)."""
        names = self._secret_names(task)
        return {n: self.secrets[n] for n in sorted(names) if n in self.secrets}

    def stream(self) -> StreamRedactor:
        """A redactor for one attempt's output."""
        return StreamRedactor(self.redactor)

    def redact(self, text: str) -> str:
        """``text`` with every secret (in every common encoding) and known token masked."""
        return self.redactor.redact(text)


def declared_secrets(config: Config) -> dict[str, SecretSource]:
    """The secret sources ``[secrets]`` in the project's vigil.toml declares."""
    return dict(config.section("secrets", SecretsConfig).root)


def secret_guard(config: Config) -> Hidden:
    """What a ``file:`` secret source may not be: a hidden path or what lies in one, and
    under any name a file of the user configuration, the store or the audit log."""
    from vigil.store.connect import parse_target

    files: list[Path] = []
    database = parse_target(config.database_url).sqlite_path
    if database is not None:
        files += [database.with_name(database.name + s) for s in ("", "-wal", "-shm", "-journal")]
    return Hidden.for_workspace(
        config.workspace,
        hidden_paths(config.state_dir),
        files=files,
        walk=[audit_path(config.state_dir).parent],
    )


def action_capabilities(task: Task, config: Config) -> tuple[str, ...]:
    """Capabilities a task's action needs beyond its own ``requires``."""
    if task.llm is not None:
        return ("network",)
    if task.agent is not None:
        from vigil.actions.agent import agent_capabilities
        from vigil.actions.specs import AgentsConfig

        agents = dict(config.section("agents", AgentsConfig).root)
        return tuple(agent_capabilities(task.agent, agents))
    return ()


def _trusted() -> list[Any]:
    try:
        return list(trusted_keys())
    except VigilError:
        return []


def _now() -> datetime:
    return datetime.now(UTC)
