"""``vigil escalations`` and ``vigil escalations answer``."""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.cli.common import (
    Format,
    FormatOpt,
    WorkspaceOpt,
    config_for,
    console,
    emit_json,
    opened_store,
    run_named,
)
from vigil.cli.terminal import escape
from vigil.errors import UsageError

app = typer.Typer(
    help="Questions runs are waiting on. Without a subcommand: list the open ones.",
    invoke_without_command=True,
)


@app.callback()
def escalations(
    ctx: typer.Context,
    run: Annotated[
        str | None,
        typer.Option("--run", help="Only this run (id, unique prefix, or `last`)."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Answered ones too.")] = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """List open questions with their full context."""
    from vigil.engine.escalations import list_escalations

    if ctx.invoked_subcommand is not None:
        return
    config = config_for(workspace)
    with opened_store(config) as store:
        if run is not None:
            run = run_named(store, config, run)
        found = list_escalations(store, run_id=run, open_only=not all_, state_dir=config.state_dir)
    if fmt is Format.json:
        emit_json([e.to_dict() for e in found])
        return
    if not found:
        console.print("no open questions")
        return
    for e in found:
        data = e.to_dict()
        console.print(
            f"[bold]{escape(e.id)}[/]  run {escape(e.run_id)}  task {escape(e.task_id)}  "
            f"({escape(e.kind)})",
            markup=True,
        )
        console.print(f"  {e.question}", markup=False)
        if e.choices:
            console.print(f"  choices: {', '.join(e.choices)}", markup=False)
        if e.context.get("error"):
            console.print(f"  error: {e.context['error']}", markup=False)
        for a in e.context.get("attempts", []):
            console.print(
                f"  tried: attempt {a['number']} {a['state']} {a.get('reason') or ''}",
                markup=False,
            )
        if data["timeout_at"]:
            console.print(f"  times out at {data['timeout_at']}")
        if e.answer:
            console.print(f"  answered: {e.answer.get('decision')} by {e.answer.get('by')}")
        console.print(f"  answer: vigil escalations answer {e.id} --approve | --reject")


@app.command("answer")
def answer(
    esc_id: Annotated[str, typer.Argument(help="The question's id (esc-...).")],
    approve: Annotated[bool, typer.Option("--approve", help="Yes / go ahead / retry.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="No / give up.")] = False,
    value: Annotated[str | None, typer.Option("--value", help="A typed answer.")] = None,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Recorded with it.")] = "",
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Only record the answer; do not drive the run.")
    ] = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Answer a question; the run continues (here, if no process is driving it)."""
    from vigil.cli.progress import progress_for
    from vigil.engine.escalations import answer_escalation

    chosen = [
        n
        for n, on in (("approve", approve), ("reject", reject), ("value", value is not None))
        if on
    ]
    if len(chosen) != 1:
        raise UsageError(
            "give exactly one of --approve, --reject, --value", "e.g. `--approve -m 'looks good'`"
        )
    decision = chosen[0]
    config = config_for(workspace)
    with opened_store(config) as store:
        progress = (
            None if no_resume else progress_for(fmt is Format.json, state_dir=config.state_dir)
        )
        try:
            esc = answer_escalation(
                config,
                store,
                esc_id,
                decision=decision,  # type: ignore[arg-type]
                value=value,
                comment=comment,
                resume="none" if no_resume else "inline",
                observer=progress,
            )
        finally:
            if progress is not None:
                progress.close()
        run = store.get_run(esc.run_id)
        state = run.state if run is not None else "unknown"
        if fmt is Format.json:
            emit_json(
                {"escalation": esc.id, "decision": decision, "run": esc.run_id, "state": state}
            )
            return
        console.print(f"{esc.id}: {decision}; run {esc.run_id} is {state}")
        from vigil.cli.run import waiting_steps

        waiting_steps(store, esc.run_id)


def register(root: typer.Typer) -> None:
    """Add the commands of this module to ``root``."""
    root.add_typer(app, name="escalations")
