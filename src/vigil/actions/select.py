"""Which action an attempt performs, from the task's definition and the run's resources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vigil.actions.base import Action
from vigil.actions.run import RunAction
from vigil.plan.models import Task


@dataclass
class ActionResources:
    """What actions share across a run: named agents, model settings, the budget."""

    agents: dict[str, Any] = field(default_factory=dict)
    llm: Any = None
    budget: Any = None
    prefetcher: Any = None
    allow_stale: bool = False

    @classmethod
    def from_config(
        cls,
        config: Any,
        *,
        spent_tokens: int = 0,
        spent_cost: float = 0.0,
        allow_stale: bool = False,
    ) -> ActionResources:
        """Resources from ``[agents.*]``, ``[llm]`` and ``[budget]`` in vigil.toml."""
        from vigil.actions.specs import AgentsConfig, BudgetConfig, LlmConfig
        from vigil.llm.budget import Budget

        budget_cfg = config.section("budget", BudgetConfig)
        return cls(
            agents=dict(config.section("agents", AgentsConfig).root),
            llm=config.section("llm", LlmConfig),
            budget=Budget.from_config(budget_cfg, spent_tokens=spent_tokens, spent_cost=spent_cost),
            allow_stale=allow_stale,
        )


def action_for(task: Task, command: str, resources: ActionResources | None = None) -> Action:
    """The action an attempt of ``task`` performs (``command``: ``main`` or ``fallback``)."""
    if command == "fallback" and task.fallback:
        return RunAction(task.fallback)
    if task.run:
        return RunAction(task.run)
    res = resources or ActionResources()
    if task.agent is not None:
        from vigil.actions.agent import AgentAction

        return AgentAction(task.agent, res.agents)
    if task.llm is not None:
        from vigil.actions.llm import LlmAction

        return LlmAction(
            task.llm,
            res.llm,
            budget=res.budget,
            prefetcher=res.prefetcher,
            allow_stale=res.allow_stale,
        )
    raise ValueError(f"task {task.id} has no action an attempt can run")
