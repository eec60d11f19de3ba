"""A plan's ``inputs:``: the values a person supplies when starting a run.

Values arrive as text (``vigil run --input NAME=VALUE``) or as YAML/JSON values
(``--inputs FILE``); each is read by its declared type and checked before anything runs,
so a missing, mistyped or unknown input stops the run at the door with every problem
listed. The typed values are recorded with the run (and signed with it, see
:func:`vigil.engine.runs.seal_run`) and are what ``${{ inputs.NAME }}`` reads.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from vigil.errors import ExitCode, VigilError
from vigil.plan.expression_checks import ExpressionProblem
from vigil.plan.models import InputSpec, Plan

InputValue = str | int | float | bool | None
"""An input's typed value (``None``: an optional number given no value)."""

MAX_INPUTS_FILE_BYTES = 1024 * 1024
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class InputsInvalid(VigilError):
    """The values given for a plan's inputs do not fit its ``inputs:``."""

    code = "VIGIL-INPUT-INVALID"
    title = "the run's inputs do not fit the plan"
    remedy = (
        "Give each required input with --input NAME=VALUE (or in --inputs FILE) as its "
        "declared type; `vigil plan check PLAN` lists them."
    )
    exit_code = ExitCode.USAGE


def _number(text: str) -> int | float | None:
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_value(name: str, spec: InputSpec, value: object) -> InputValue:
    """``value`` read as input ``name`` declares; ValueError saying why not."""
    if spec.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"input '{name}' is a boolean: write true or false, not {value!r}")
    if spec.type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"input '{name}' is a number: {value!r} is not finite")
            return value
        number = _number(value) if isinstance(value, str) else None
        if number is None:
            raise ValueError(f"input '{name}' is a number, not {value!r}")
        return number
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"input '{name}' is text: quote the value {value!r}")
        value = str(value)
    if spec.type == "choice":
        options = spec.options or ()
        if value not in options:
            raise ValueError(f"input '{name}' must be one of {', '.join(options)}, not {value!r}")
    return value


def _empty(spec: InputSpec) -> InputValue:
    if spec.type == "boolean":
        return False
    if spec.type == "number":
        return None
    return ""


def parse_input_args(args: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a mapping (the last of a repeated name wins)."""
    given: dict[str, str] = {}
    wrong = [a for a in args if "=" not in a or not a.split("=", 1)[0].strip()]
    if wrong:
        raise InputsInvalid(
            f"--input {wrong[0]!r} is not NAME=VALUE",
            "Write --input NAME=VALUE, e.g. --input version=1.2.3.",
        )
    for arg in args:
        name, value = arg.split("=", 1)
        given[name.strip()] = value
    return given


def read_inputs_file(path: Path) -> dict[str, object]:
    """The mapping of input values in a YAML or JSON file."""
    import yaml

    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_INPUTS_FILE_BYTES + 1)
    except OSError as exc:
        raise InputsInvalid(f"cannot read inputs file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_INPUTS_FILE_BYTES:
        raise InputsInvalid(f"inputs file {path} is larger than 1 MiB")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputsInvalid(f"inputs file {path} is not YAML or JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InputsInvalid(
            f"inputs file {path} is not a mapping of input names to values",
            "Write one 'name: value' line per input (YAML), or a JSON object.",
        )
    return data


def resolve_inputs(
    plan: Plan,
    given: Mapping[str, str] | None = None,
    from_file: Mapping[str, object] | None = None,
) -> dict[str, InputValue]:
    """Every declared input's typed value: from ``given`` (``--input``), else
    ``from_file`` (``--inputs``), else its default. InputsInvalid lists every problem."""
    supplied: dict[str, object] = {**(from_file or {}), **(given or {})}
    problems: list[str] = []
    for name in supplied:
        if name not in plan.inputs:
            close = difflib.get_close_matches(name, list(plan.inputs), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            declared = ", ".join(plan.inputs) or "none"
            problems.append(f"the plan has no input '{name}'{hint}; declared: {declared}")
    values: dict[str, InputValue] = {}
    for name, spec in plan.inputs.items():
        if name in supplied:
            raw: object = supplied[name]
        elif spec.default is not None:
            raw = spec.default
        elif spec.required:
            problems.append(f"input '{name}' is required: give --input {name}=VALUE")
            continue
        else:
            values[name] = _empty(spec)
            continue
        if spec.required and isinstance(raw, str) and not raw.strip():
            # `-i version=` from a script whose variable was unset: as good as not given.
            problems.append(f"input '{name}' is required and was given empty")
            continue
        try:
            values[name] = read_value(name, spec, raw)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        count = len(problems)
        raise InputsInvalid(
            f"{count} input problem{'s' if count > 1 else ''}; first: {problems[0]}",
            details=problems,
        )
    return values


def check_input_declarations(plan: Plan) -> list[ExpressionProblem]:
    """A default that does not fit its input's type, at the default."""
    problems: list[ExpressionProblem] = []
    for name, spec in plan.inputs.items():
        if spec.default is None:
            continue
        try:
            read_value(name, spec, spec.default)
        except ValueError as exc:
            problems.append(
                ExpressionProblem(
                    ("inputs", name, "default"),
                    f"the default of {exc}",
                    "make the default a value of the input's type, or change its 'type:'",
                )
            )
    return problems


__all__ = [
    "InputValue",
    "InputsInvalid",
    "check_input_declarations",
    "parse_input_args",
    "read_inputs_file",
    "read_value",
    "resolve_inputs",
]
