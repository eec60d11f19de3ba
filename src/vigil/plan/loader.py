"""Load a plan file (YAML, or a Markdown runbook) into a validated :class:`Plan`.

Whatever the file holds, loading either returns a plan or raises :class:`PlanInvalid`
listing every problem at its ``file:line:col``; a missing or unreadable file raises
:class:`PlanNotFound`, and a plan that says where secrets come from (a top-level
``secrets:`` mapping, which only ``vigil.toml`` may hold) :class:`SecretSourceInPlan`.
No other exception escapes for bad input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal

from vigil.plan.lint import PlanWarning, agent_warnings
from vigil.plan.models import Plan
from vigil.plan.problems import (
    PlanInvalid,
    PlanNotFound,
    PlanProblem,
    SecretSourceInPlan,
    plan_invalid,
)
from vigil.plan.validation import validate_plan
from vigil.plan.yaml_source import read_yaml

PlanKind = Literal["yaml", "markdown"]

MARKDOWN_SUFFIXES = (".md", ".markdown")
EXTENSION_PREFIX = "x-"
MAX_PLAN_BYTES = 8 * 1024 * 1024
"""Far beyond any hand-written plan; refuses to parse a log file or an image by mistake."""


@dataclass(frozen=True)
class LoadedPlan:
    """A valid plan with the file it came from and that file's text."""

    plan: Plan
    path: str
    source: str
    kind: PlanKind
    warnings: tuple[PlanWarning, ...] = ()
    """What is valid but probably not meant (:mod:`vigil.plan.lint`)."""


def plan_kind(filename: str) -> PlanKind:
    """``markdown`` for ``.md``/``.markdown`` files, else ``yaml``."""
    suffix = PurePath(filename).suffix.lower()
    return "markdown" if suffix in MARKDOWN_SUFFIXES else "yaml"


def load_plan_text(text: str, filename: str) -> LoadedPlan:
    """Validate plan ``text`` as if read from ``filename`` (its suffix picks the format)."""
    kind = plan_kind(filename)
    text = text.removeprefix("\ufeff")
    data: object
    warnings: list[PlanWarning] = []
    if kind == "markdown":
        # The Markdown parser is imported only for runbooks: YAML plans never need it.
        from vigil.plan.markdown import read_runbook

        runbook = read_runbook(text, filename)
        data, source_map, problems = runbook.data, runbook.source_map, runbook.problems
        warnings = list(runbook.warnings)
    else:
        document = read_yaml(text, filename)
        data, source_map, problems = document.data, document.source_map, document.problems
        if data is None and problems:
            raise PlanInvalid(problems)
        if isinstance(data, dict):
            # Top-level ``x-`` keys hold anchors to reuse (as in Compose files); their
            # aliases are already expanded, so the plan itself does not keep them.
            data = {k: v for k, v in data.items() if not k.startswith(EXTENSION_PREFIX)}
    if isinstance(data, dict) and isinstance(data.get("secrets"), dict) and data["secrets"]:
        line, _ = source_map.position(("secrets",), key=True)
        raise secret_sources_in_plan(data["secrets"], f"{filename}:{line}")
    if data is not None:
        plan, more = validate_plan(data, source_map, filename)
        problems = [*problems, *more]
        if plan is not None and not problems:
            warnings += agent_warnings(plan, source_map, filename)
            return LoadedPlan(plan, filename, text, kind, tuple(sorted(warnings)))
    raise plan_invalid(problems or [_empty(filename)])


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _toml_value(value: object) -> str:
    # A JSON string is a TOML basic string; a list of them is a TOML array.
    if isinstance(value, Mapping):
        items = ", ".join(
            f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items() if v is not None
        )
        return "{ " + items + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def secret_sources_in_plan(sources: Mapping[object, object], where: str) -> SecretSourceInPlan:
    """The refusal of a plan with a top-level ``secrets:`` mapping, with the TOML that
    declares the same sources in ``vigil.toml``."""
    names = ", ".join(str(n) for n in sources)
    toml = ["[secrets]"] + [f"{_toml_key(str(n))} = {_toml_value(v)}" for n, v in sources.items()]
    return SecretSourceInPlan(
        f"{where}: the plan says where secrets come from ({names}); only vigil.toml may, "
        "a plan only names the secrets its tasks receive",
        "If you, not the plan's author, want these sources: put the [secrets] table above "
        "into vigil.toml (steps cannot change it), delete `secrets:` from the top of the "
        "plan, and keep `secrets: [NAME]` on the tasks. Read each command first: it runs on "
        "this machine, outside the sandbox.",
        details=toml,
    )


def _empty(filename: str) -> PlanProblem:
    return PlanProblem(
        filename, 1, 1, "the plan is empty", "start with 'name:', 'project:' and 'phases:'"
    )


def _decode(raw: bytes, filename: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8", "replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        raise PlanInvalid(
            [
                PlanProblem(
                    filename,
                    line,
                    col,
                    f"byte 0x{raw[exc.start]:02x} is not UTF-8 text",
                    "save the file as UTF-8; a plan is a text file",
                )
            ]
        ) from None


def load_plan(path: Path) -> LoadedPlan:
    """Read and validate the plan at ``path``."""
    name = str(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        raise PlanNotFound(f"no plan file at {name}") from None
    except IsADirectoryError:
        raise PlanNotFound(
            f"{name} is a directory", "Name a plan file (.yaml or .md) inside it."
        ) from None
    except OSError as exc:
        raise PlanNotFound(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanInvalid(
            [
                PlanProblem(
                    name,
                    1,
                    1,
                    f"the file is larger than {MAX_PLAN_BYTES // (1024 * 1024)} MiB",
                    "split the plan; is this really a plan file?",
                )
            ]
        )
    if b"\x00" in raw[:8192]:
        raise PlanInvalid(
            [PlanProblem(name, 1, 1, "this is a binary file, not a plan", "name a .yaml or .md")]
        )
    return load_plan_text(_decode(raw, name), name)
