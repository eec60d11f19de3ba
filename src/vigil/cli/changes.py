"""``vigil review``, ``vigil diff``, ``vigil rollback``, ``vigil doctor``."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from vigil.cli.common import (
    Format,
    FormatOpt,
    RunArg,
    WorkspaceOpt,
    config_for,
    console,
    emit_json,
    opened_store,
    run_named,
)
from vigil.cli.terminal import escape
from vigil.errors import UsageError, VigilError
from vigil.words import plural

AllPathsOpt = Annotated[
    bool,
    typer.Option(
        "--all-paths",
        help="List every path; by default, past 50 the largest top-level directories "
        "are summarised (JSON output always keeps every path).",
    ),
]


def _limit(all_paths: bool) -> int | None:
    from vigil.workspace.render import PATH_LIMIT

    return None if all_paths else PATH_LIMIT


# The engine and workspace modules are imported inside the commands that use them.


def _show_diff(text: str) -> None:
    if not text.strip():
        console.print("no changes")
        return
    if console.is_terminal:
        from rich.syntax import Syntax

        console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def review(
    run_id: RunArg,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task.")] = None,
    stat: Annotated[bool, typer.Option("--stat", help="Summary per file, no diff.")] = False,
    approve: Annotated[bool, typer.Option("--approve", help="Commit the held changes.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Discard the held changes.")] = False,
    comment: Annotated[str, typer.Option("--comment", "-m", help="Recorded with it.")] = "",
    changes_id: Annotated[
        list[str] | None,
        typer.Option(
            "--changes",
            help="Decide only if the held changes have this id (as shown; repeatable).",
        ),
    ] = None,
    all_paths: AllPathsOpt = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Show a run's changes; approve or reject the ones held for review.

    Each task's header shows the id of its changes. A decision is signed for the changes
    held at that moment; `--changes ID` makes sure those are the ones you looked at.
    """
    if approve and reject:
        raise UsageError("--approve and --reject exclude each other", "Choose one.")
    from vigil.engine.changes import decide_review, task_changes, workspace_for
    from vigil.report.view import load_state

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        if approve or reject:
            from vigil.cli.progress import progress_for
            from vigil.engine.escalations import continue_run

            decided = decide_review(
                config,
                store,
                run_id,
                approve=approve,
                task=task,
                comment=comment,
                expect=changes_id or None,
                resume=False,
            )
            # The run goes on here, showing its progress as `vigil run` does.
            progress = progress_for(fmt is Format.json, state_dir=config.state_dir)
            try:
                ended = continue_run(config, store, run_id, inline=True, observer=progress)
            finally:
                if progress is not None:
                    progress.close()
            record = store.get_run(run_id)
            now = record.state if record is not None else "unknown"
            verdict = "approved" if approve else "rejected"
            if fmt is Format.json:
                emit_json({"run": run_id, verdict: decided, "state": now})
            else:
                from vigil.cli.run import waiting_steps

                console.print(f"{verdict}: {', '.join(decided)}")
                console.print(f"run {run_id}: {now}")
                if ended == "interrupted":
                    console.print(f"resume with: vigil resume {run_id}", markup=False)
                waiting_steps(store, run_id)
            return
        # Shown from the verified journal: what a person approves is what vigil recorded.
        _, state = load_state(store, run_id, verify=True, state_dir=config.state_dir)
    changes = task_changes(state, task=task)
    ws = workspace_for(config)
    if fmt is Format.json:
        emit_json([c.to_dict(ws, with_diff=not stat) for c in changes])
        return
    if not changes:
        console.print("no changes")
        return
    for c in changes:
        status = "held for review" if c.held else ("committed" if c.committed else "not committed")
        console.print(
            f"[bold]{escape(c.task)}[/] (attempt {c.attempt}, {status}, changes {c.changeset.id})",
            markup=True,
        )
        if stat:
            console.print(c.changeset.stat(limit=_limit(all_paths)), markup=False)
        else:
            _show_diff(c.changeset.diff(ws.objects, limit=_limit(all_paths)))


def diff(
    run_id: RunArg,
    all_paths: AllPathsOpt = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """The combined diff of everything a run changed (or, for a dry run, would change)."""
    from vigil.engine.changes import run_diff

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        text = run_diff(config, store, run_id, limit=_limit(all_paths))
    _show_diff(text)


def rollback(
    run_id: RunArg,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Only this task.")] = None,
    file: Annotated[str | None, typer.Option("--file", help="Only this path.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Also run the tasks' rollback: commands.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite files changed since (drift).")
    ] = False,
    grant: Annotated[
        str | None, typer.Option("--grant", help="Grant for privileged rollback commands.")
    ] = None,
    all_paths: AllPathsOpt = False,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Restore the files a run changed, newest first; refuses drifted files unless --force."""
    if file and all_:
        raise UsageError("--file and --all exclude each other", "Choose one.")
    from vigil.engine.changes import rollback_run

    config = config_for(workspace)
    with opened_store(config) as store:
        run_id = run_named(store, config, run_id)
        outcome = rollback_run(
            config, store, run_id, task=task, file=file, compensate=all_, force=force, grant=grant
        )
    if fmt is Format.json:
        emit_json(
            {
                "run": run_id,
                "restored": outcome.restored,
                "overwritten": outcome.overwritten,
                "compensations": outcome.compensations,
            }
        )
        return
    console.print(f"restored {plural(len(outcome.restored), 'path')}")
    from vigil.workspace.render import ALL_PATHS_HINT, group_paths, quote_path

    keep, folded = group_paths([(p, "restored") for p in outcome.restored], limit=_limit(all_paths))
    for index in keep:
        console.print(f"  {quote_path(outcome.restored[index])}", markup=False)
    for line in folded:
        console.print(f"  {line}", markup=False, highlight=False)
    if folded:
        console.print(f"  ({ALL_PATHS_HINT})", markup=False, highlight=False)
    for path in outcome.overwritten:
        console.print(f"  [yellow]overwrote drifted[/] {escape(quote_path(path))}", markup=True)
    for comp in outcome.compensations:
        mark = "ok" if comp["ok"] else comp.get("refused") or comp.get("reason", "failed")
        console.print(f"  rollback command of {comp['task']}: {mark}", markup=False)
        discarded = comp.get("discarded") or []
        if discarded:
            shown = ", ".join(discarded[:10]) + (" ..." if len(discarded) > 10 else "")
            console.print(
                f"    its changes to {plural(len(discarded), 'workspace path')} "
                f"were discarded: {shown}",
                markup=False,
            )


def doctor(workspace: WorkspaceOpt = None, fmt: FormatOpt = Format.text) -> None:
    """What vigil will use here, on one screen, each with a tick or a cross: versions, keys,
    store, isolation, limits, the state directory and configuration."""
    from vigil.config import user_config_dir
    from vigil.layout import state_dir_exposure
    from vigil.workspace import detect_isolation

    config = config_for(workspace)
    isolation = detect_isolation(str(config.data.get("workspace", {}).get("isolation", "auto")))
    steps = _steps_identity(config, isolation.mode)
    limits = _limits(isolation.mode)
    keys = user_config_dir() / "keys"
    store_ok, store_detail = _store_check(config)
    report = {
        "versions": _versions(),
        "workspace": str(config.workspace),
        "state_dir": str(config.state_dir),
        "store": config.database_url.split("@")[-1],
        "store_ok": store_ok,
        "store_detail": store_detail,
        "config_files": [str(p) for p in config.sources],
        "isolation": {
            "mode": isolation.mode,
            "reason": isolation.reason,
            "warning": isolation.warning,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in isolation.checks],
            "steps_run_as": steps,
        },
        "limits": limits,
        "signing_key": (keys / "signing.key").exists(),
        "keys": _keys_check(),
        "state_dir_exposed": state_dir_exposure(config.state_dir),
        "store_reachable_by_steps": [
            {"problem": r.problem, "remedy": r.remedy} for r in _store_reach(config)
        ],
    }
    if fmt is Format.json:
        emit_json(report)
        return

    def line(ok: bool, what: str, text: str) -> None:
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        console.print(f"{mark} {what:<9} {escape(text)}", markup=True, soft_wrap=True)

    def note(text: str) -> None:
        console.print(f"  {'':<9} {text}", markup=False, soft_wrap=True)

    versions = report["versions"]
    assert isinstance(versions, dict)
    console.print("  ".join(f"{k} {v}" for k, v in versions.items()), markup=False, soft_wrap=True)
    key_state = report["keys"]
    assert isinstance(key_state, dict)
    line(bool(key_state["ok"]), "keys", str(key_state["detail"]))
    if not key_state["ok"]:
        note("`vigil keys init` makes one: it signs grants, decisions and audit checkpoints")
    line(store_ok, "store", f"{report['store']}: {store_detail}")
    for reach in report["store_reachable_by_steps"]:  # type: ignore[attr-defined]
        console.print(f"[yellow]warning:[/] {escape(reach['problem'])}", markup=True)
        console.print(f"  remedy: {reach['remedy']}", markup=False, highlight=False)
    line(
        isolation.mode == "overlay",
        "isolation",
        f"{isolation.mode} ({isolation.reason})",
    )
    for c in isolation.checks:
        note(f"{'✓' if c.ok else '✗'} {c.name}: {c.detail}")
    if isolation.warning:
        console.print(f"[yellow]warning:[/] {escape(isolation.warning)}", markup=True)
    if steps:
        note(f"steps run as: {steps}")
    line(limits["mechanism"] != "none", "limits", f"{limits['mechanism']} ({limits['detail']})")
    note(limits["meaning"])
    exposed = report["state_dir_exposed"]
    line(not exposed, "state", f"{config.state_dir} (workspace {config.workspace})")
    if exposed:
        console.print(f"[yellow]warning:[/] {escape(str(exposed))}", markup=True)
        console.print(
            "  remedy: chmod 700 it as its owner (vigil does so itself when it runs as "
            "the owner); it holds copies of your files and the steps' output",
            markup=False,
            highlight=False,
        )
    files = ", ".join(report["config_files"]) or "none (defaults)"  # type: ignore[arg-type]
    line(True, "config", files)


def _versions() -> dict[str, str]:
    """vigil's version and those of what it runs on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from vigil import __version__

    found = {"vigil": __version__, "python": platform.python_version()}
    for name in ("sqlalchemy", "typer", "rich", "pydantic"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    found["kernel"] = f"{platform.system()} {platform.release()}"
    return found


def _keys_check() -> dict[str, object]:
    """Whether there is a signing key, and which."""
    from vigil.safety.keys import active_key, keys_dir, trusted_keys

    try:
        key = active_key()
        trusted = trusted_keys()
    except VigilError as exc:
        return {"ok": False, "detail": f"{exc.cause} ({exc.code})"}
    return {
        "ok": True,
        "detail": f"signing key {key.public_hex[:16]}…, {plural(len(trusted), 'trusted key')} "
        f"in {keys_dir()}",
    }


def _store_check(config: Any) -> tuple[bool, str]:
    """Whether the run store opens and answers (a SQLite store not created yet is fine)."""
    from vigil.store import open_store
    from vigil.store.connect import parse_target

    try:
        target = parse_target(config.database_url)
        if target.sqlite_path is not None and not target.sqlite_path.exists():
            return True, "not created yet; the first run creates it"
        with open_store(config.database_url, history=config.state_dir) as store:
            newest = store.run_ids(limit=1)
    except VigilError as exc:
        return False, f"{exc.cause} ({exc.code})"
    except Exception as exc:  # a driver's error: the store does not answer
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return False, f"does not answer: {first}"
    return True, "opens and answers" + ("" if newest else " (no runs yet)")


def _store_reach(config: Any) -> list[Any]:
    """How steps could reach this workspace's store (PostgreSQL on loopback, a socket)."""
    import os
    from pathlib import Path

    import sqlalchemy as sa

    from vigil.safety.store_reach import store_reach

    url = config.database_url
    no_password = None
    try:
        parsed = sa.make_url(url)
    except Exception:
        return []
    if parsed.get_backend_name() == "postgresql":
        from vigil.store import open_store

        elsewhere = (
            parsed.password is not None
            or os.environ.get("PGPASSWORD")
            or os.environ.get("PGPASSFILE")
            or (Path.home() / ".pgpass").exists()
        )
        try:
            with open_store(url):
                no_password = not elsewhere
        except Exception:
            no_password = None
    return store_reach(url, config.state_dir, password_free_login=no_password)


def _limits(mode: str) -> dict[str, str]:
    """What enforces the process and memory limits of sandboxed steps, and what it means."""
    if mode != "overlay":
        return {
            "mechanism": "none",
            "detail": f"{mode} isolation",
            "meaning": "steps have no process or memory limits",
        }
    from vigil.workspace.cgroup import enforcement

    enforced = enforcement()
    return {"mechanism": enforced.mechanism, "detail": enforced.detail, "meaning": enforced.meaning}


def _steps_identity(config: Any, mode: str) -> str | None:
    """Who sandboxed steps run as on the host, or why a run would refuse to start."""
    from vigil.workspace.settings import SandboxSettings, step_identity

    if mode != "overlay":
        return None
    try:
        settings = SandboxSettings.from_config(config.data)
        who = step_identity(settings.run_as, config.workspace)
    except VigilError as exc:
        return f"refused: {exc} ({exc.remedy})"
    if who is None:
        from vigil.config import whoami

        return f"{whoami()} (uid {os.getuid()}), no capabilities"
    return f"{who.name} (uid {who.uid}), no capabilities; vigil runs as root"


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command()(review)
    app.command()(diff)
    app.command()(rollback)
    app.command()(doctor)
