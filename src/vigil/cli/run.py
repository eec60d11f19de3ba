"""``vigil run``, ``vigil resume``, ``vigil cancel``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vigil.cli.common import (
    Format,
    FormatOpt,
    QuietOpt,
    RunArg,
    WorkspaceOpt,
    config_for,
    console,
    emit_json,
    err_console,
    opened_store,
    run_named,
)
from vigil.cli.terminal import escape, for_terminal
from vigil.errors import ExitCode, UsageError
from vigil.words import plural

if TYPE_CHECKING:
    # The engine is imported by the commands that run it, not by every vigil command.
    from vigil.config import Config
    from vigil.engine.runs import RunOutcome
    from vigil.report.next_steps import NextStep
    from vigil.store import RunStore

EXIT_FOR_STATE = {
    "succeeded": ExitCode.OK,
    "failed": ExitCode.RUN_FAILED,
    "cancelled": ExitCode.CANCELLED,
    "interrupted": ExitCode.CANCELLED,
    "waiting": ExitCode.WAITING,
    "running": ExitCode.CANCELLED,
}


def _dry_run_summary(
    config: Config,
    store: RunStore,
    outcome: RunOutcome,
    plan: object,
    plan_path: str,
    grant: str | None,
    fmt: Format,
) -> None:
    """What the run would change, what it did not run, what would conflict, and the grant
    a real run needs."""
    from datetime import UTC, datetime

    from vigil.engine.changes import run_diff, task_changes, workspace_for
    from vigil.engine.dryrun import not_run, predicted_conflicts
    from vigil.report import load_state
    from vigil.safety import PolicyConfig, load_grant
    from vigil.safety.policy import check_plan, run_grant_command

    _, state = load_state(store, outcome.run_id)
    changes = task_changes(state)
    skipped = not_run(state)
    conflicts = predicted_conflicts(state)
    diff_text = run_diff(config, store, outcome.run_id)
    policy = config.section("policy", PolicyConfig)
    held = load_grant(grant) if grant else None
    missing = check_plan(plan, policy, held, datetime.now(UTC), plan_path=plan_path)  # type: ignore[arg-type]
    command = run_grant_command(plan, policy, plan_path=plan_path) if missing else None  # type: ignore[arg-type]
    if fmt is Format.json:
        emit_json(
            {
                "run": outcome.run_id,
                "state": outcome.state,
                "dry_run": True,
                "diff": diff_text,
                "tasks": [c.to_dict(workspace_for(config), with_diff=False) for c in changes],
                "not_run": [n.to_dict() for n in skipped],
                "conflicts": [clash.to_dict() for clash in conflicts],
                "grants_needed": [
                    {
                        "environment": m.environment,
                        "capabilities": list(m.capabilities),
                        "tasks": list(m.tasks),
                        "command": m.command,
                    }
                    for m in missing
                ],
                "grant_command": command,
            }
        )
        raise typer.Exit(int(EXIT_FOR_STATE.get(outcome.state, ExitCode.RUN_FAILED)))
    console.rule("dry run: nothing was changed")
    for c in changes:
        console.print(
            f"[bold]{escape(c.task)}[/]: {escape(c.changeset.stat().splitlines()[-1].strip())}",
            markup=True,
        )
    shown = diff_text if diff_text.endswith("\n") or not diff_text else diff_text + "\n"
    sys.stdout.write(for_terminal(shown))
    if skipped:
        console.print(
            "[yellow]not run[/] (the dry run holds no grant that covers them):", markup=True
        )
        for n in skipped:
            console.print(f"  [bold]{escape(n.task)}[/]: {escape(n.reason)}", markup=True)
            if n.unseen_by:
                console.print(
                    f"    {escape(', '.join(n.unseen_by))} ran on the workspace without "
                    f"{escape(n.task)}'s changes",
                    markup=True,
                )
    if conflicts:
        console.print(
            "[red]predicted conflicts[/] (run at the same time, the second to commit fails "
            "with VIGIL-CONFLICT):",
            markup=True,
            soft_wrap=True,
        )
        for clash in conflicts:
            paths = ", ".join(clash.paths[:5]) + (" ..." if len(clash.paths) > 5 else "")
            console.print(
                f"  [bold]{escape(clash.first)}[/] and [bold]{escape(clash.second)}[/] both "
                f"change {escape(paths)}; to order them, {escape(clash.remedy)}",
                markup=True,
                soft_wrap=True,
            )
    for m in missing:
        console.print(
            f"[yellow]a real run needs a grant[/] in {escape(m.environment)} for "
            f"{escape(', '.join(m.capabilities))} (tasks {escape(', '.join(m.tasks))})",
            markup=True,
        )
    if command is not None:
        console.print("one grant covering the whole run:")
        console.print(f"  {command}", markup=False, soft_wrap=True)


def _finish(config: Config, store: RunStore, outcome: RunOutcome, fmt: Format) -> None:
    from vigil.report import load_state, run_view
    from vigil.report.next_steps import next_steps

    record, state = load_state(store, outcome.run_id)
    view = run_view(record, state)
    steps = next_steps(state) if outcome.state == "waiting" else []
    if outcome.state == "interrupted":
        view["state"] = "running"
        view["driver"] = "stopped"
    if fmt is Format.json:
        view["next"] = [step.to_dict() for step in steps]
        emit_json(view)
    else:
        _summary(view, outcome, config)
        print_next_steps(steps)
    raise typer.Exit(int(EXIT_FOR_STATE.get(outcome.state, ExitCode.RUN_FAILED)))


def print_next_steps(steps: list[NextStep]) -> None:
    """Each open question of a waiting run with the exact command that answers it."""
    if not steps:
        return
    console.print(f"waiting for a person ({plural(len(steps), 'question')}); next:", markup=False)
    for step in steps:
        console.print(f"  {step.task}: {step.what}", markup=False, soft_wrap=True)
        if step.look is not None:
            console.print(f"    look:   {step.look}", markup=False, soft_wrap=True)
        console.print(
            f"    answer: {step.command}   (or {step.alternative})", markup=False, soft_wrap=True
        )


def waiting_steps(store: RunStore, run_id: str) -> None:
    """After a command drove a run on: what it now waits for, if it waits."""
    from vigil.report import load_state
    from vigil.report.next_steps import next_steps

    record = store.get_run(run_id)
    if record is None or record.state != "waiting":
        return
    _, state = load_state(store, run_id)
    print_next_steps(next_steps(state))


def _summary(view: dict[str, object], outcome: RunOutcome, config: Config) -> None:
    tasks = view["tasks"]
    assert isinstance(tasks, list)
    counts: dict[str, int] = {}
    for t in tasks:
        label = t["state"]
        if label == "failed" and not t.get("critical", True):
            label = "failed (non-critical)"
        if t.get("needs_grant"):
            label = "not run (needs a grant)"
        if t.get("left_out"):
            label = "left out"
        counts[label] = counts.get(label, 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    colour = {"succeeded": "green", "failed": "red"}.get(outcome.state, "yellow")
    what = "dry run" if view.get("dry_run") else "run"
    console.print(
        f"{what} [bold]{escape(outcome.run_id)}[/] [bold {colour}]{outcome.state}[/]: "
        f"{escape(parts)}",
        markup=True,
    )
    from vigil.engine.offline import advice, last_symptom
    from vigil.report.advice import conflict_advice, excerpt

    for t in tasks:
        seen = last_symptom(t["attempts"]) if t["state"] == "failed" else None
        if seen is not None:
            console.print(f"[yellow]{escape(advice(t['id'], seen))}[/]", markup=True)
    for t in tasks:
        lines = excerpt(t["attempts"]) if t["state"] == "failed" else []
        if lines:
            # The lines its output ended with that say what went wrong (already redacted).
            console.print(
                f"[red]{escape(t['id'])}[/] said (all of it: vigil logs "
                f"{escape(outcome.run_id)} {escape(shlex.quote(t['id']))}):",
                markup=True,
                highlight=False,
            )
            for line in lines:
                console.print(f"  | {line}", markup=False, highlight=False, soft_wrap=True)
    conflicts = view.get("conflicts") or []
    assert isinstance(conflicts, list)
    for c in conflicts:
        console.print(
            f"[yellow]{escape(conflict_advice(c))}[/]", markup=True, highlight=False, soft_wrap=True
        )
    if outcome.state == "interrupted":
        console.print(f"resume with: vigil resume {outcome.run_id}")
    else:
        report = config.state_dir / "reports" / f"{outcome.run_id}.md"
        if report.exists():
            console.print(f"report: {report}")


REVIEW_ALL = "*"
"""What a bare ``--review`` stands for (see :func:`bare_review`)."""


def review_tasks(value: str | None) -> tuple[str, ...]:
    """The task ids of ``--review TASK,...`` (none for a bare ``--review``)."""
    if value is None or value == REVIEW_ALL:
        return ()
    tasks = tuple(t.strip() for t in value.split(",") if t.strip())
    if not tasks:
        raise UsageError(f"--review {value!r} names no task", "e.g. --review install,migrate")
    return tasks


def bare_review(args: list[str]) -> list[str]:
    """``args`` with a bare ``vigil run ... --review`` (last, before another option, or
    before the plan file) spelled ``--review=*``: typer has no option whose value may be
    left out, and ``--review`` alone has always meant every task."""
    command = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if command is None or args[command] != "run":
        return args
    out = list(args)
    for i in range(command + 1, len(out)):
        if out[i] == "--":
            break
        if out[i] != "--review":
            continue
        following = out[i + 1] if i + 1 < len(out) else None
        if following is None or following.startswith("-") or _plan_file(following):
            out[i] = f"--review={REVIEW_ALL}"
    return out


def _plan_file(arg: str) -> bool:
    return arg.endswith((".yaml", ".yml", ".md")) or Path(arg).is_file()


def run(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML) or runbook (Markdown).")],
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Run id; an existing id resumes that run.")
    ] = None,
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", "-j", min=1, help="Attempts at once (CPUs).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Run the plan in throwaway sandboxes and change nothing; tasks needing a "
            "grant not given are not run but listed; show the diff and predicted conflicts.",
        ),
    ] = False,
    review: Annotated[
        str | None,
        typer.Option(
            "--review",
            metavar="[TASK,...]",
            help="Hold the named tasks' changes for `vigil review`; alone, every task's. "
            "Changes of ignored paths only are never held.",
        ),
    ] = None,
    grant: Annotated[
        str | None, typer.Option("--grant", "-g", help="The grant that authorizes this run.")
    ] = None,
    prefetch_prompts: Annotated[
        int,
        typer.Option(
            "--prefetch-prompts", min=0, help="Prepare up to N llm replies ahead, in parallel."
        ),
    ] = 0,
    allow_stale_prompts: Annotated[
        bool,
        typer.Option(
            "--allow-stale-prompts",
            help="Use a prefetched reply even if the workspace changed since it was asked.",
        ),
    ] = False,
    input_args: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="A value for one of the plan's inputs, NAME=VALUE; repeat for more.",
        ),
    ] = None,
    inputs_file: Annotated[
        Path | None,
        typer.Option("--inputs", help="A YAML or JSON file of input values; --input wins over it."),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Run only these tasks (ids, comma-separated or repeated)."),
    ] = None,
    with_needs: Annotated[
        bool,
        typer.Option("--with-needs", help="With --only/--tags: also what they need."),
    ] = False,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="Leave these tasks out (ids).")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tags", help="Run only tasks with one of these tags.")
    ] = None,
    skip_tags: Annotated[
        list[str] | None, typer.Option("--skip-tags", help="Leave out tasks with these tags.")
    ] = None,
    workspace: WorkspaceOpt = None,
    create: Annotated[
        bool,
        typer.Option("--create", help="Create the --workspace directory if it does not exist."),
    ] = False,
    quiet: QuietOpt = False,
    fmt: FormatOpt = Format.text,
) -> None:
    """Run a plan. Independent tasks run in parallel; a crash resumes with `vigil resume`."""
    from vigil.cli.progress import progress_for
    from vigil.engine.environment import withheld_from_network
    from vigil.engine.runref import LAST
    from vigil.engine.runs import start_run
    from vigil.plan import load_plan
    from vigil.plan.inputs import parse_input_args, read_inputs_file, resolve_inputs
    from vigil.plan.selection import Selection, left_out, names
    from vigil.store.records import RUN_ID_PATTERN

    if run_id is not None and RUN_ID_PATTERN.fullmatch(run_id) is None:
        raise UsageError(
            f"--run-id {run_id!r} is not a valid run id",
            "Use 1 to 200 letters, digits, '_', '.' or '-', starting with a letter or digit.",
        )
    if run_id == LAST:
        raise UsageError(
            "--run-id last is reserved: `last` names the newest run of the workspace",
            "Choose another id, or leave --run-id out for a generated one.",
        )
    config = config_for(workspace, create=create)
    loaded = load_plan(plan)
    for warning in loaded.warnings:  # valid, but probably not meant: said, never stopped
        err_console.print(f"warning: {warning}", markup=False)
    withheld = withheld_from_network(config, loaded.plan)
    if withheld is not None:
        err_console.print(withheld.line(), markup=False, highlight=False)
    # Every input problem is reported before anything exists (exit 2).
    inputs = resolve_inputs(
        loaded.plan,
        parse_input_args(input_args or []),
        read_inputs_file(inputs_file) if inputs_file is not None else None,
    )
    selection = Selection(
        only=names(only or []),
        with_needs=with_needs,
        skip=names(skip or []),
        tags=names(tags or []),
        skip_tags=names(skip_tags or []),
    )
    if with_needs and not (selection.only or selection.tags):
        raise UsageError(
            "--with-needs goes with --only or --tags", "e.g. --only deploy --with-needs"
        )
    left_out(loaded.plan, selection)  # every problem before anything exists (exit 2)
    with opened_store(config) as store:
        progress = progress_for(fmt is Format.json, state_dir=config.state_dir, quiet=quiet)
        try:
            outcome = start_run(
                config,
                store,
                loaded.plan,
                str(plan),
                run_id=run_id,
                max_parallel=max_parallel,
                observer=progress,
                dry_run=dry_run,
                review=review == REVIEW_ALL,
                review_tasks=review_tasks(review),
                grant=grant,
                prefetch_prompts=prefetch_prompts,
                allow_stale_prompts=allow_stale_prompts,
                inputs=inputs,
                selection=None if selection.empty else selection,
            )
        finally:
            if progress is not None:
                progress.close()
        if dry_run:
            _dry_run_summary(config, store, outcome, loaded.plan, str(plan), grant, fmt)
        _finish(config, store, outcome, fmt)


def resume(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN]",
            help="The run to continue: its id, a unique prefix, or `last`.",
            show_default=False,
        ),
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Resume every unfinished run.")] = False,
    max_parallel: Annotated[int | None, typer.Option("--max-parallel", "-j", min=1)] = None,
    workspace: WorkspaceOpt = None,
    quiet: QuietOpt = False,
    fmt: FormatOpt = Format.text,
) -> None:
    """Continue a run from its journal after a crash, Ctrl-C or reboot."""
    from vigil.cli.progress import progress_for
    from vigil.engine.runs import resumable_runs, resume_run

    config = config_for(workspace)
    if (run_id is None) == (not all_runs):
        raise UsageError(
            "give either a RUN_ID or --all", "e.g. `vigil resume 20261121-101500-ab12cd`"
        )
    with opened_store(config) as store:
        ids = [run_named(store, config, run_id)] if run_id else resumable_runs(store)
        if not ids:
            err_console.print("no unfinished runs")
            raise typer.Exit(0)
        worst = ExitCode.OK
        for rid in ids:
            progress = progress_for(fmt is Format.json, state_dir=config.state_dir, quiet=quiet)
            try:
                outcome = resume_run(
                    config, store, rid, max_parallel=max_parallel, observer=progress
                )
            finally:
                if progress is not None:
                    progress.close()
            if len(ids) == 1:
                _finish(config, store, outcome, fmt)
            console.print(f"run {rid}: {outcome.state}")
            worst = max(worst, EXIT_FOR_STATE.get(outcome.state, ExitCode.RUN_FAILED))
        raise typer.Exit(int(worst))


def cancel(
    run_id: RunArg,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the journal.")] = "",
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Cancel a run: its processes are terminated (SIGTERM, then SIGKILL) and the run ends."""
    from vigil.engine.runs import cancel_run

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        done = cancel_run(config, store, run_id, reason=reason)
    if fmt is Format.json:
        emit_json({"id": run_id, "state": done.state, "already_ended": done.already_ended})
    elif done.already_ended:
        console.print(f"run {run_id} had already ended ({done.state}); nothing to cancel")
    else:
        console.print(f"run {run_id}: {done.state}")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command()(run)
    app.command()(resume)
    app.command()(cancel)
