"""Plans: the models, loading YAML plans and Markdown runbooks, checks, schema, conversion.

The names below are imported on first use: a command that only reads a stored plan
(``vigil status``) should not pay for the Markdown and YAML parsers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vigil.lazy import lazy_names

if TYPE_CHECKING:
    from vigil.plan.convert import to_yaml
    from vigil.plan.graph import PhaseOrder, execution_order
    from vigil.plan.library import PlanEntry, Scaffold, discover_plans, scaffold_project
    from vigil.plan.loader import LoadedPlan, load_plan, load_plan_text
    from vigil.plan.models import Check, Defaults, Phase, Plan, RetryPolicy, Task
    from vigil.plan.problems import PlanInvalid, PlanNotFound, PlanProblem
    from vigil.plan.schema import plan_json_schema

_MODULE_OF = {
    "to_yaml": "convert",
    "PhaseOrder": "graph",
    "execution_order": "graph",
    "PlanEntry": "library",
    "Scaffold": "library",
    "discover_plans": "library",
    "scaffold_project": "library",
    "LoadedPlan": "loader",
    "load_plan": "loader",
    "load_plan_text": "loader",
    "Check": "models",
    "Defaults": "models",
    "Phase": "models",
    "Plan": "models",
    "RetryPolicy": "models",
    "Task": "models",
    "PlanInvalid": "problems",
    "PlanNotFound": "problems",
    "PlanProblem": "problems",
    "plan_json_schema": "schema",
}

__all__ = [
    "Check",
    "Defaults",
    "LoadedPlan",
    "Phase",
    "PhaseOrder",
    "Plan",
    "PlanEntry",
    "PlanInvalid",
    "PlanNotFound",
    "PlanProblem",
    "RetryPolicy",
    "Scaffold",
    "Task",
    "discover_plans",
    "execution_order",
    "load_plan",
    "load_plan_text",
    "plan_json_schema",
    "scaffold_project",
    "to_yaml",
]


__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
