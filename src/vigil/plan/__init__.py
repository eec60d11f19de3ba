"""Plans: the models, loading YAML plans and Markdown runbooks, checks, schema, conversion."""

from vigil.plan.convert import to_yaml
from vigil.plan.graph import PhaseOrder, execution_order
from vigil.plan.library import PlanEntry, Scaffold, discover_plans, scaffold_project
from vigil.plan.loader import LoadedPlan, load_plan, load_plan_text
from vigil.plan.models import Check, Defaults, Phase, Plan, RetryPolicy, Task
from vigil.plan.problems import PlanInvalid, PlanNotFound, PlanProblem
from vigil.plan.schema import plan_json_schema

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
