"""The plans of a project: finding them (``vigil plans list``) and starting a project
(``vigil init``).

Discovery lists broken plan files too, with their problem count, because a plan that
does not load is exactly the one a person is looking for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from vigil.config import PROJECT_FILE, STATE_DIR_NAME
from vigil.errors import VigilError
from vigil.plan.loader import PlanKind, load_plan, plan_kind
from vigil.plan.problems import PlanInvalid

PLAN_SUFFIXES = frozenset({".yaml", ".yml", ".md", ".markdown"})
PLAN_DIRS = ("plans", "runbooks")


@dataclass(frozen=True)
class PlanEntry:
    """One plan file of the project; ``problems`` > 0 means it does not load."""

    name: str
    path: str
    kind: PlanKind
    description: str | None
    problems: int = 0
    first_problem: str | None = None


def _entry(root: Path, file: Path) -> PlanEntry:
    relative = file.relative_to(root).as_posix()
    kind = plan_kind(file.name)
    try:
        loaded = load_plan(file)
    except PlanInvalid as exc:
        first = replace(exc.problems[0], file=relative)
        return PlanEntry(file.stem, relative, kind, None, len(exc.problems), str(first))
    except VigilError as exc:
        return PlanEntry(file.stem, relative, kind, None, 1, exc.cause)
    description = loaded.plan.description
    first_line = description.strip().splitlines()[0] if description else None
    return PlanEntry(loaded.plan.name, relative, kind, first_line)


def discover_plans(root: Path, dirs: Sequence[str] = PLAN_DIRS) -> list[PlanEntry]:
    """Every plan file under ``root``'s plan directories, valid or not, sorted by path."""
    files: set[Path] = set()
    for name in dirs:
        base = root / name
        if not base.is_dir():
            continue
        for file in base.rglob("*"):
            hidden = any(part.startswith(".") for part in file.relative_to(base).parts)
            if file.is_file() and not hidden and file.suffix.lower() in PLAN_SUFFIXES:
                files.add(file)
    return [_entry(root, f) for f in sorted(files)]


STARTER_CONFIG = """\
# vigil configuration for this project. Environment variables VIGIL_* override it.

[store]
# Where runs are recorded. Default: SQLite in .vigil/vigil.db next to this file.
# url = "postgresql+psycopg://vigil@localhost/vigil"

[plans]
# Directories searched by `vigil plans list`.
dirs = ["plans", "runbooks"]

# [secrets]
# Where each secret a task names (`secrets: [NPM_TOKEN]`) comes from. Only this file
# says so, never a plan: a command here runs on this machine, outside the sandbox.
# NPM_TOKEN = { command = "pass show npm/token" }
# API_TOKEN = { env = "SHOP_API_TOKEN" }
"""

STARTER_PLAN = """\
# A first plan. Check it with `vigil plan check plans/hello.yaml`, run it with
# `vigil run plans/hello.yaml`. Reference: docs/plans.md in the vigil sources.
name: Hello
project: hello
description: Writes a greeting and checks it is there.

phases:
  - id: greet
    tasks:
      - id: write
        run: echo "hello from vigil" > hello.txt
        validate: grep -q hello hello.txt
      - id: show
        needs: write
        run: cat hello.txt
"""


@dataclass(frozen=True)
class Scaffold:
    """What ``vigil init`` did: files created, files updated, files left alone."""

    created: list[Path] = field(default_factory=list)
    updated: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def _write_new(path: Path, text: str, result: Scaffold) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x" mode: never replace a file that exists, even one created a moment ago.
        with path.open("x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        result.skipped.append(path)
        return
    result.created.append(path)


def _ignore_state_dir(root: Path, result: Scaffold) -> None:
    path = root / ".gitignore"
    entry = f"{STATE_DIR_NAME}/"
    try:
        existing = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        _write_new(path, entry + "\n", result)
        return
    listed = {line.strip() for line in existing.splitlines()}
    if listed & {entry, STATE_DIR_NAME, f"/{entry}", f"/{STATE_DIR_NAME}"}:
        result.skipped.append(path)
        return
    separator = "" if not existing or existing.endswith("\n") else "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"{separator}{entry}\n")
    result.updated.append(path)


def scaffold_project(root: Path) -> Scaffold:
    """Start a vigil project in ``root``: config, ``.gitignore`` entry, a starter plan."""
    result = Scaffold()
    _write_new(root / PROJECT_FILE, STARTER_CONFIG, result)
    _ignore_state_dir(root, result)
    _write_new(root / "plans" / "hello.yaml", STARTER_PLAN, result)
    return result
