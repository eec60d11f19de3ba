"""Checking journal payloads against the shapes the engine declares for them."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any

from vigil.engine import attest
from vigil.engine import events as ev


def payload_problems(kind: str, data: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``data`` as the payload of ``kind`` (nothing: an empty list)."""
    shape = ev.SHAPES.get(ev.Kind(kind))
    if shape is None:
        return [f"{kind} has no declared shape"]
    hints = typing.get_type_hints(shape)
    required = {
        key
        for key, hint in typing.get_type_hints(shape, include_extras=True).items()
        if typing.get_origin(hint) is not typing.NotRequired
    }
    # What the class itself says must agree (string annotations would break it).
    assert required == shape.__required_keys__, shape.__name__  # type: ignore[attr-defined]
    problems = [f"{kind}: {key!r} is missing" for key in sorted(required - data.keys())]
    for key, value in data.items():
        if key == attest.NUMBER:  # the signing envelope (vigil.engine.attest)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{kind}: {key!r} = {value!r} is not an event number")
        elif key == attest.SIGNATURE:
            if not isinstance(value, dict) or set(value) != {"signer", "sig"}:
                problems.append(f"{kind}: {key!r} = {value!r} is not a signature")
        elif key not in hints:
            problems.append(f"{kind}: {key!r} is not a key of {shape.__name__}")
        elif not _fits(value, hints[key]):
            problems.append(f"{kind}: {key!r} = {value!r} is not {hints[key]}")
    return problems


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    return isinstance(value, hint)
