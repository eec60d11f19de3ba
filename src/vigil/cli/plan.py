"""``vigil plan check|schema|convert``, ``vigil plans list|show``, ``vigil init``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vigil.cli.common import (
    Format,
    FormatOpt,
    WorkspaceOpt,
    config_for,
    console,
    emit_json,
    workspace_path,
)
from vigil.cli.terminal import escape, for_terminal
from vigil.errors import UsageError
from vigil.words import plural

if TYPE_CHECKING:
    from vigil.store import RunRecord

plan_app = typer.Typer(help="Check, convert and describe plans.", no_args_is_help=True)
plans_app = typer.Typer(help="The plans and runbooks of this project.", no_args_is_help=True)

PlanArg = Annotated[Path, typer.Argument(help="Plan file (YAML) or runbook (Markdown).")]


@plan_app.command("check")
def check(plan: PlanArg, workspace: WorkspaceOpt = None, fmt: FormatOpt = Format.text) -> None:
    """Validate a plan; print its execution order and the grants a run of it needs."""
    from datetime import UTC, datetime

    from vigil.plan import execution_order, load_plan
    from vigil.safety.policy import PolicyConfig, check_plan, run_grant_command

    loaded = load_plan(plan)
    order = execution_order(loaded.plan)
    # The project's [policy] decides which capabilities need a grant where.
    policy = config_for(workspace).section("policy", PolicyConfig)
    needed = check_plan(loaded.plan, policy, None, datetime.now(UTC), plan_path=str(plan))
    command = run_grant_command(loaded.plan, policy, plan_path=str(plan)) if needed else None
    if fmt is Format.json:
        emit_json(
            {
                "plan": loaded.plan.name,
                "project": loaded.plan.project,
                "hash": loaded.plan.content_hash(),
                "phases": [{"id": p.phase, "waves": p.waves} for p in order],
                "warnings": [
                    {"code": w.code, "file": w.file, "line": w.line, "col": w.col}
                    | {"cause": w.cause, "fix": w.fix}
                    for w in loaded.warnings
                ],
                "grants_needed": [
                    {
                        "environment": m.environment,
                        "capabilities": list(m.capabilities),
                        "tasks": list(m.tasks),
                    }
                    for m in needed
                ],
                "grant_command": command,
                "inputs": {
                    name: spec.model_dump(mode="json", exclude_defaults=True)
                    for name, spec in loaded.plan.inputs.items()
                },
            }
        )
        return
    tasks = sum(len(p.tasks) for p in loaded.plan.phases)
    console.print(
        f"[green]ok[/] {escape(plan)}: plan [bold]{escape(loaded.plan.name)}[/] "
        f"({plural(len(loaded.plan.phases), 'phase')}, {plural(tasks, 'task')})",
        markup=True,
    )
    for name, spec in loaded.plan.inputs.items():
        kind = f"choice of {'|'.join(spec.options or ())}" if spec.type == "choice" else spec.type
        how = "required" if spec.required and spec.default is None else ""
        if spec.default is not None:
            how = f"default {json.dumps(spec.default)}"
        line = f"input {name}: {kind}" + (f", {how}" if how else "")
        console.print(line + (f" ({spec.description})" if spec.description else ""), markup=False)
    for index, p in enumerate(order, 1):
        console.print(f"phase {index} [bold]{escape(p.phase)}[/]", markup=True)
        for n, wave in enumerate(p.waves, 1):
            joined = ", ".join(wave)
            label = "in parallel" if len(wave) > 1 else "alone"
            console.print(f"  step {n} ({label}): {joined}", markup=False)
    for warning in loaded.warnings:
        console.print(f"[yellow]warning[/] {escape(str(warning))}", markup=True)
    if not needed:
        console.print("grants: none needed (no task needs a capability the policy guards)")
        return
    console.print("grants a run needs (without one, these tasks are refused):")
    for m in needed:
        console.print(
            f"  {m.environment}: {', '.join(m.capabilities)} (tasks {', '.join(m.tasks)})",
            markup=False,
        )
    console.print("one grant covering the whole run:")
    console.print(f"  {command}", markup=False, soft_wrap=True)


@plan_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of plan files, for editors and CI."""
    from vigil.plan import plan_json_schema

    sys.stdout.write(json.dumps(plan_json_schema(), indent=2) + "\n")


@plan_app.command("convert")
def convert(plan: PlanArg) -> None:
    """Print a runbook (or plan) as an equivalent YAML plan."""
    from vigil.plan import load_plan, to_yaml

    sys.stdout.write(to_yaml(load_plan(plan).plan))


def _plan_dirs(workspace: Path | None) -> tuple[Path, list[str]]:
    config = config_for(workspace)
    dirs = config.data.get("plans", {}).get("dirs", ["plans", "runbooks"])
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise UsageError(
            "[plans] dirs in vigil.toml must be a list of paths", 'e.g. dirs = ["plans"]'
        )
    return config.workspace, dirs


@plans_app.command("list")
def plans_list(workspace: WorkspaceOpt = None, fmt: FormatOpt = Format.text) -> None:
    """List the project's plans and runbooks with their last run's outcome."""
    from vigil.cli.common import opened_store
    from vigil.plan import discover_plans

    root, dirs = _plan_dirs(workspace)
    entries = discover_plans(root, dirs)
    last: dict[str, RunRecord] = {}
    config = config_for(workspace)
    if (config.state_dir / "vigil.db").exists() or "sqlite" not in config.database_url:
        with opened_store(config) as store:
            for record in store.list_runs(limit=1000):
                last.setdefault(str(Path(record.plan_path)), record)
                last.setdefault(record.plan_name, record)
    rows: list[dict[str, Any]] = []
    for e in entries:
        found = last.get(str(e.path)) or last.get(e.name)
        rows.append(
            {
                "name": e.name,
                "path": str(e.path),
                "kind": e.kind,
                "description": e.description,
                "problems": e.problems,
                "last_run": None if found is None else {"id": found.id, "state": found.state},
            }
        )
    if fmt is Format.json:
        emit_json(rows)
        return
    if not rows:
        console.print(f"no plans found under {', '.join(dirs)}; create one with `vigil init`")
        return
    for r in rows:
        last_run = r["last_run"]
        outcome = "never run" if last_run is None else f"last run {last_run['state']}"
        bad = f"  [red]{plural(r['problems'], 'problem')}[/]" if r["problems"] else ""
        console.print(
            f"[bold]{escape(r['name'])}[/]  {escape(r['path'])}  ({escape(outcome)}){bad}",
            markup=True,
        )
        if r["description"]:
            console.print(f"    {r['description']}", markup=False)


@plans_app.command("show")
def plans_show(
    name: Annotated[str, typer.Argument(help="Plan name or path.")], workspace: WorkspaceOpt = None
) -> None:
    """Print one plan or runbook."""
    from vigil.plan import discover_plans

    root, dirs = _plan_dirs(workspace)
    for e in discover_plans(root, dirs):
        if name in (e.name, str(e.path), Path(e.path).stem):
            sys.stdout.write(for_terminal((root / e.path).read_text(encoding="utf-8")))
            return
    raise UsageError(f"no plan named {name!r}", "See the plans with `vigil plans list`.")


def init(workspace: WorkspaceOpt = None) -> None:
    """Set up vigil in a project: vigil.toml, a .gitignore entry, a starter plan."""
    from vigil.plan import scaffold_project

    root = workspace_path(workspace)
    result = scaffold_project(root)
    for path in result.created:
        console.print(f"created {path}")
    for path in result.updated:
        console.print(f"updated {path}")
    for path in result.skipped:
        console.print(f"kept {path} (exists)")
    if not result.created and not result.updated:
        console.print("nothing to do: vigil is already set up here")
    console.print("next: vigil plan check plans/hello.yaml && vigil run plans/hello.yaml")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.add_typer(plan_app, name="plan")
    app.add_typer(plans_app, name="plans")
    app.command()(init)
