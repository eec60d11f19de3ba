"""The published JSON Schema accepts what the loader accepts and rejects what it rejects."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from vigil.plan import load_plan, plan_json_schema
from vigil.plan.convert import plan_data
from vigil.plan.yaml_source import read_yaml

ROOT = Path(__file__).parent
YAML_PLANS = [
    *sorted((ROOT.parent / "examples").glob("*.yaml")),
    *sorted((ROOT / "data" / "plans").glob("*.yaml")),
]
RUNBOOKS = [ROOT.parent / "examples" / "runbook.md", ROOT / "data" / "runbooks" / "basic.md"]


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = plan_json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_schema_header_and_descriptions() -> None:
    schema = plan_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] == "vigil plan"
    task = schema["$defs"]["Task"]
    assert task["description"] and task["additionalProperties"] is False
    assert "validate" in task["properties"] and "checks" not in task["properties"]
    json.dumps(schema)  # plain JSON, ready to publish


@pytest.mark.parametrize("path", YAML_PLANS, ids=lambda p: p.name)
def test_schema_accepts_the_example_plans(validator: Draft202012Validator, path: Path) -> None:
    data = read_yaml(path.read_text(encoding="utf-8"), path.name).data
    assert isinstance(data, dict)
    data = {k: v for k, v in data.items() if not k.startswith("x-")}
    assert list(validator.iter_errors(data)) == []


@pytest.mark.parametrize("path", RUNBOOKS, ids=lambda p: p.name)
def test_schema_accepts_converted_runbooks(validator: Draft202012Validator, path: Path) -> None:
    assert list(validator.iter_errors(plan_data(load_plan(path).plan))) == []


def _example() -> dict[str, Any]:
    # As editors read YAML (1.2): `on:` is a key, not the boolean true as in PyYAML's 1.1.
    data = read_yaml((ROOT.parent / "examples" / "release.yaml").read_text(), "r.yaml").data
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(colour="blue"),
        lambda d: d["phases"][0]["tasks"][0].update(nmae="x"),
        lambda d: d["phases"][0]["tasks"][0].update(retry={"attempts": 2, "backof": 1}),
        lambda d: d["phases"][0]["tasks"][0].update(id="has space"),
        lambda d: d["phases"][0]["tasks"][0].update(on_failure="ignore"),
        lambda d: d["phases"][0]["tasks"][0].update(timeout="soon"),
        lambda d: d["phases"][0]["tasks"][0].update(validate=[5]),
        lambda d: d["phases"][0].update(tasks=[]),
        lambda d: d.pop("project"),
    ],
)
def test_schema_rejects_what_the_loader_rejects(
    validator: Draft202012Validator, mutate: Any
) -> None:
    data = copy.deepcopy(_example())
    mutate(data)
    assert list(validator.iter_errors(data))


def test_shorthands_the_loader_accepts_are_valid_in_the_schema(
    validator: Draft202012Validator,
) -> None:
    data = _example()
    task = data["phases"][0]["tasks"][1]
    task["needs"] = "prepare"
    task["validate"] = "true"
    assert list(validator.iter_errors(data)) == []
    task["validate"] = ["true", {"run": "true", "name": "n"}]
    assert list(validator.iter_errors(data)) == []
