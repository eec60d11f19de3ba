"""A plan written out as YAML a person can read, and that loads back to the same plan.

Used by ``vigil plan convert`` to turn a Markdown runbook into a YAML plan. Values equal
to their defaults are left out, durations are written as ``10m`` rather than ``600.0``,
multi-line scripts as block scalars, and keys in the order people read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from vigil.plan.duration import parse_duration
from vigil.plan.models import Check, Plan, RetryPolicy, Task

_PLAN_KEYS = ("name", "project", "description", "inputs", "env", "defaults", "phases")
_PHASE_KEYS = ("id", "name", "description", "if", "tasks", "validate")
_TASK_KEYS = (
    "id",
    "name",
    "description",
    "needs",
    "if",
    "matrix",
    "tags",
    "workdir",
    "env",
    "timeout",
    "retry",
    "run",
    "validate",
    "fallback",
    "on_failure",
)
_RETRY_KEYS = ("attempts", "initial", "factor", "max", "jitter", "on")
_DURATION_KEYS = frozenset({"timeout", "initial", "max"})


_LINE_SEPARATORS = ("\x85", "\u2028", "\u2029")


class _Flow(list[Any]):
    """A short list written on one line: ``needs: [build, test]``."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indent list items under their key, as people write plans by hand.
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself when a block scalar cannot hold the text.
    if any(ch in value for ch in _LINE_SEPARATORS):
        # PyYAML writes these unescaped in other styles, and reads them back as spaces.
        style: str | None = '"'
    else:
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_flow(dumper: yaml.SafeDumper, value: _Flow) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=True)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(_Flow, _represent_flow)


def duration_text(seconds: float) -> str | float:
    """``600.0`` -> ``"10m"``; a value with no exact short form stays a number."""
    if seconds >= 1 and seconds == int(seconds):
        rest = int(seconds)
        parts = []
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            count, rest = divmod(rest, size)
            if count:
                parts.append(f"{count}{unit}")
        text = "".join(parts)
    elif 0 < seconds < 1:
        text = f"{round(seconds * 1000)}ms"
    else:
        return seconds
    # Only a form that parses back to exactly the same float is worth the readability.
    return text if parse_duration(text) == seconds else seconds


def _ordered(data: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    out = {k: data[k] for k in keys if k in data}
    out.update({k: v for k, v in data.items() if k not in out})
    return out


def _durations(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: duration_text(v) if k in _DURATION_KEYS and isinstance(v, float) else v
        for k, v in data.items()
    }


def _retry(policy: RetryPolicy) -> dict[str, Any]:
    data = _durations(policy.model_dump(mode="json", exclude_defaults=True))
    if isinstance(data.get("on"), list):
        data["on"] = _Flow(data["on"])
    return _ordered(data, _RETRY_KEYS)


def _checks(checks: tuple[Check, ...]) -> list[Any]:
    out: list[Any] = []
    for check in checks:
        data = _durations(check.model_dump(mode="json", exclude_defaults=True))
        out.append(check.run if list(data) == ["run"] else _ordered(data, ("name", "run")))
    return out


def _task(task: Task) -> dict[str, Any]:
    data = _durations(
        task.model_dump(
            mode="json", by_alias=True, exclude_defaults=True, exclude={"retry", "checks"}
        )
    )
    for key in ("needs", "tags"):
        if key in data:
            data[key] = _Flow(data[key])
    if task.matrix is not None:
        # The keys first, as people write a matrix; their values on one line.
        axes = {k: _Flow(v) for k, v in task.matrix.axes.items()}
        rest = {k: v for k, v in data["matrix"].items() if k not in axes}
        data["matrix"] = {**axes, **rest}
    if task.retry is not None:
        data["retry"] = _retry(task.retry)
    if task.checks:
        data["validate"] = _checks(task.checks)
    return _ordered(data, _TASK_KEYS)


def _as_written(plan: Plan, tasks: tuple[Task, ...]) -> list[Task]:
    """The tasks as a plan writes them: each matrix once, with its ``matrix:``, and a
    need of all a matrix's expansions as a need of the matrix."""
    groups = plan.groups
    out: list[Task] = []
    for task in tasks:
        needs: list[str] = []
        for need in task.needs:
            group = next((g for g, ids in groups.items() if need in ids), None)
            if group is not None and set(groups[group]) <= set(task.needs):
                need = group
            if need not in needs:
                needs.append(need)
        expansion = task.expansion
        if expansion is None:
            out.append(task.model_copy(update={"needs": tuple(needs)}))
        elif task.id == groups[expansion.group][0]:
            update = {"id": expansion.group, "needs": tuple(needs), "expansion": None}
            out.append(task.model_copy(update={**update, "matrix": expansion.matrix}))
    return out


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as plain data in reading order, defaults left out."""
    data: dict[str, Any] = plan.model_dump(
        mode="json", exclude_defaults=True, exclude={"phases", "defaults"}
    )
    defaults: dict[str, Any] = {}
    if plan.defaults.timeout is not None:
        defaults["timeout"] = duration_text(plan.defaults.timeout)
    if plan.defaults.retry is not None:
        defaults["retry"] = _retry(plan.defaults.retry)
    if defaults:
        data["defaults"] = defaults
    phases = []
    for phase in plan.phases:
        entry: dict[str, Any] = phase.model_dump(
            mode="json", by_alias=True, exclude_defaults=True, exclude={"tasks", "checks"}
        )
        entry["tasks"] = [_task(t) for t in _as_written(plan, phase.tasks)]
        if phase.checks:
            entry["validate"] = _checks(phase.checks)
        phases.append(_ordered(entry, _PHASE_KEYS))
    data["phases"] = phases
    return _ordered(data, _PLAN_KEYS)


def to_yaml(plan: Plan) -> str:
    """An equivalent YAML plan: loading it gives a plan equal to ``plan``."""
    return yaml.dump(
        plan_data(plan),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
