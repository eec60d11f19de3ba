"""The published JSON Schema of plan files, so editors can complete and check plans.

Generated from the models, then widened where the models accept a shorthand that
pydantic's schema cannot see: fields with a before-validator that turns one string into
a list (``needs: build``, ``validate: make test``).
"""

from __future__ import annotations

import copy
import typing
from typing import Any

from pydantic import BaseModel, BeforeValidator

from vigil.plan.models import Plan

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:vigil:schema:plan:1"


def _widens_string(model: type[BaseModel], field: str) -> bool:
    """Whether ``field`` of ``model`` also accepts a single string for a list."""
    info = model.model_fields[field]
    return any(isinstance(m, BeforeValidator) for m in info.metadata)


def _widen(prop: dict[str, Any]) -> dict[str, Any]:
    """``array of X`` -> ``X or array of X``; for model items, a string or the model."""
    items = prop["items"]
    if "$ref" in items:
        single: dict[str, Any] = {"type": "string", "minLength": 1}
        items = {"anyOf": [single, items]}
    else:
        single = dict(items)
    keep = {k: v for k, v in prop.items() if k in ("title", "description", "default")}
    array = {k: v for k, v in prop.items() if k not in keep}
    array["items"] = items
    return {**keep, "anyOf": [single, array]}


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> None:
    seen[model.__name__] = model
    for info in model.model_fields.values():
        for candidate in _nested(info.annotation):
            if candidate.__name__ not in seen:
                _models(candidate, seen)


def _nested(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_nested(arg))
    return found


def plan_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for plan files, keys spelt as plans write them."""
    schema = copy.deepcopy(Plan.model_json_schema(by_alias=True, mode="validation"))
    models: dict[str, type[BaseModel]] = {}
    _models(Plan, models)
    for name, model in models.items():
        target = schema if model is Plan else schema.get("$defs", {}).get(name)
        if not target:
            continue
        props = target.get("properties", {})
        for field, info in model.model_fields.items():
            key = info.alias or field
            if key in props and _widens_string(model, field) and "items" in props[key]:
                props[key] = _widen(props[key])
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        "title": "vigil plan",
        **{k: v for k, v in schema.items() if k != "title"},
    }
