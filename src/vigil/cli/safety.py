"""``vigil keys|grant|policy|audit``, ``vigil halt|unhalt`` and ``vigil explain``."""

from __future__ import annotations

import getpass
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from vigil.cli.common import Format, FormatOpt, WorkspaceOpt, config_for, console, emit_json
from vigil.cli.terminal import escape, literal, printable
from vigil.errors import ExitCode, UsageError, VigilError
from vigil.words import plural

keys_app = typer.Typer(
    help="The signing key of grants and audit checkpoints.", no_args_is_help=True
)
grant_app = typer.Typer(help="Signed, expiring grants of capabilities.", no_args_is_help=True)
policy_app = typer.Typer(help="Which actions need a grant.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)

PlanOpt = Annotated[Path | None, typer.Option("--plan", help="Plan file.", show_default=False)]


class AuditTampered(VigilError):
    code = "VIGIL-AUDIT-TAMPERED"
    title = "the audit log does not verify"
    remedy = "Treat the log as tampered with from the entry named; compare with a backup."
    exit_code = ExitCode.REFUSED


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _csv(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for item in values or [] for v in item.split(",") if v.strip())


def _duration(text: str) -> float:
    from vigil.plan.duration import DurationSyntaxError, parse_duration

    try:
        seconds = parse_duration(text)
    except DurationSyntaxError as exc:
        raise UsageError(str(exc), "Write e.g. --expires-in 2h or 30m.") from None
    if seconds <= 0:
        raise UsageError("--expires-in must be positive")
    return seconds


# keys ---------------------------------------------------------------------------------


@keys_app.command("init")
def keys_init(
    force: bool = typer.Option(
        False, "--force", help="Replace an existing key; trust only the new one."
    ),
) -> None:
    """Create the signing key (private key mode 0600) and trust its public key."""
    from vigil.safety.keys import init_key, keys_dir

    key = init_key(force=force)
    console.print(f"created signing key in {keys_dir()}", markup=False)
    console.print(f"public key: {key.public_hex}", markup=False)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new active key; grants signed by old keys stay valid until they expire."""
    from vigil.safety.keys import rotate_key

    key = rotate_key()
    console.print(f"new public key: {key.public_hex}", markup=False)


@keys_app.command("show")
def keys_show(fmt: FormatOpt = Format.text) -> None:
    """Print the active public key and the trusted keys."""
    from vigil.safety.keys import active_key, trusted_keys

    key = active_key()
    trusted = trusted_keys()
    if fmt is Format.json:
        emit_json(
            {
                "active": key.public_hex,
                "trusted": [
                    {"public_key": k.public_hex, "created": k.created, "retired": k.retired}
                    for k in trusted
                ],
            }
        )
        return
    sys.stdout.write(key.public_hex + "\n")


# grants -------------------------------------------------------------------------------


def _plan_hash(plan: Path | None) -> tuple[str | None, str | None]:
    if plan is None:
        return None, None
    from vigil.plan import load_plan

    loaded = load_plan(plan)
    return loaded.plan.content_hash(), loaded.plan.project


@grant_app.command("create")
def grant_create(
    project: Annotated[
        str | None, typer.Option("--project", help="Project (default: the plan's).")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="Environment(s), e.g. prod.")
    ] = None,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="Capabilities: deploy,push")
    ] = None,
    expires_in: Annotated[str, typer.Option("--expires-in", help="Lifetime, e.g. 2h.")] = "1h",
    break_glass: Annotated[bool, typer.Option("--break-glass", help="Emergency grant.")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (break-glass).")] = None,
    plan: PlanOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Create a grant and print its id."""
    from vigil.safety.errors import GrantBreakGlass
    from vigil.safety.grants import create_grant

    plan_hash, plan_project = _plan_hash(plan)
    project = project or plan_project
    if project is None:
        raise UsageError("--project is required (or --plan, whose project is used)")
    envs = _csv(env)
    if not envs:
        raise UsageError("--env is required, e.g. --env prod")
    if break_glass and not (reason or "").strip():
        raise GrantBreakGlass("--break-glass needs --reason")
    grant = create_grant(
        project=project,
        environments=envs,
        capabilities=_csv(allow),
        expires_in=_duration(expires_in),
        plan_hash=plan_hash,
        break_glass=reason if break_glass else None,
    )
    if fmt is Format.json:
        emit_json(grant.to_dict(datetime.now(UTC)))
    else:
        sys.stdout.write(grant.id + "\n")


@grant_app.command("list")
def grant_list(
    active: bool = typer.Option(False, "--active", help="Only grants usable now."),
    fmt: FormatOpt = Format.text,
) -> None:
    """List stored grants as their verified tokens say (never the editable file beside)."""
    from rich.table import Table

    from vigil.safety.grants import list_grants, token_view

    now = datetime.now(UTC)
    views = [token_view(g, now) for g in list_grants()]
    views = [v for v in views if not active or v["status"] == "active"]
    if fmt is Format.json:
        emit_json(views)
        return
    table = Table("id", "project", "env", "allow", "expires", "status", box=None)
    for v in views:
        status = v["status"] + (" (break-glass)" if v["break_glass"] else "")
        if v["metadata_differs"]:
            status += f" (file edited: {', '.join(v['metadata_differs'])})"
        table.add_row(
            literal(v["id"]),
            literal(v["project"]),
            literal(",".join(v["environments"]) or "-"),
            literal(",".join(v["capabilities"]) or "-"),
            literal(f"{datetime.fromisoformat(v['expires_at']):%Y-%m-%d %H:%M}Z"),
            literal(status, style="red" if v["metadata_differs"] else ""),
        )
    console.print(table)


@grant_app.command("show")
def grant_show(grant_id: str, fmt: FormatOpt = Format.text) -> None:
    """Show one grant as its verified token says; fields of the stored file that disagree
    with the token are named under ``metadata_differs``."""
    from vigil.safety.grants import load_grant, token_view

    data = token_view(load_grant(grant_id), datetime.now(UTC))
    if fmt is Format.json:
        emit_json(data)
        return
    for key, value in data.items():
        if isinstance(value, list):
            value = ",".join(value) or "-"
        shown = printable(value if value is not None else "-", multiline=False)
        console.print(f"{key:>16}: {shown}", markup=False)


@grant_app.command("revoke")
def grant_revoke(grant_id: str) -> None:
    """Revoke a grant and every grant attenuated from it."""
    from vigil.safety.grants import revoke_grant

    revoke_grant(grant_id)
    console.print(f"revoked {grant_id}", markup=False)


@grant_app.command("attenuate")
def grant_attenuate(
    grant_id: str,
    env: Annotated[list[str] | None, typer.Option("--env", help="Keep only these.")] = None,
    allow: Annotated[list[str] | None, typer.Option("--allow", help="Keep only these.")] = None,
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="Expire sooner.")] = None,
    plan: PlanOpt = None,
) -> None:
    """Make a narrower grant from GRANT_ID and print its id."""
    from vigil.safety.grants import attenuate_grant

    plan_hash, _ = _plan_hash(plan)
    child = attenuate_grant(
        grant_id,
        environments=_csv(env) or None,
        capabilities=_csv(allow) if allow else None,
        plan_hash=plan_hash,
        expires_in=_duration(expires_in) if expires_in else None,
    )
    sys.stdout.write(child.id + "\n")


# policy -------------------------------------------------------------------------------


@policy_app.command("show")
def policy_show(
    plan: PlanOpt = None,
    grant: Annotated[str | None, typer.Option("--grant", help="Check this grant.")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Show the policy, and with --plan what needs a grant (and whether --grant covers it)."""
    from vigil.safety import policy as pol
    from vigil.safety.grants import load_grant

    pol_config = config_for(workspace).section("policy", pol.PolicyConfig)
    out: dict[str, object] = {"policy": pol_config.model_dump(mode="json")}
    rows: list[dict[str, object]] = []
    if plan is not None:
        from vigil.plan import load_plan

        loaded = load_plan(plan).plan
        granted = load_grant(grant) if grant else None
        now = datetime.now(UTC)
        for req in pol.requirements(loaded, pol_config):
            if env is not None and req.environment != env:
                continue
            decision = pol.authorize(req, granted, now, loaded.content_hash())
            rows.append(
                {
                    "task": req.task_id,
                    "environment": req.environment,
                    "capability": req.capability,
                    "allowed": decision.allowed,
                    "code": decision.code,
                    "reason": decision.reason,
                }
            )
        out["requirements"] = rows
        out["missing"] = [
            {
                "environment": m.environment,
                "capabilities": list(m.capabilities),
                "command": m.command,
            }
            for m in pol.check_plan(loaded, pol_config, granted, now, plan_path=str(plan))
            if env is None or m.environment == env
        ]
    if fmt is Format.json:
        emit_json(out)
        return
    console.print(f"default environment: {pol_config.default_environment}", markup=False)
    console.print(
        f"protected (every task needs a grant): {', '.join(pol_config.protected) or '-'}",
        markup=False,
    )
    free = "; ".join(f"{e}: {', '.join(c)}" for e, c in pol_config.free.items()) or "-"
    console.print(f"free of grants: {free}", markup=False)
    console.print("every other capability needs a grant", markup=False)
    if plan is None:
        return
    if not rows:
        console.print("this plan needs no grant", markup=False)
    for row in rows:
        mark = "[green]allowed[/]" if row["allowed"] else f"[red]{escape(row['code'])}[/]"
        who = escape(f"{row['task']} {row['environment']} {row['capability']}")
        console.print(f"  {who}: {mark}", markup=True)
    missing = out["missing"]
    assert isinstance(missing, list)
    for item in missing:
        console.print(f"to cover {item['environment']}: {item['command']}", markup=False)


# halt ---------------------------------------------------------------------------------


def halt_cmd(
    reason: Annotated[str, typer.Option("--reason", help="Why; shown to everyone refused.")],
    project: Annotated[str, typer.Option("--project", help="Project, or * for all.")] = "*",
    workspace: WorkspaceOpt = None,
) -> None:
    """Stop all runs of a project (default: every project) until `vigil unhalt`.

    Runs under way stop at their next check (a fraction of a second): their attempts are
    ended and discarded and the runs end `cancelled`. New runs of the project, and every
    privileged action, are refused with VIGIL-HALTED. Runs of other projects go on.
    """
    from vigil.cli.common import opened_store
    from vigil.config import user_config_dir
    from vigil.engine.audit import Auditor
    from vigil.safety.decisions import decision_key
    from vigil.safety.halt import Ledger, halt, ledger_path
    from vigil.safety.keys import trusted_keys

    config = config_for(workspace)
    key = decision_key()
    ledger = Ledger(ledger_path(user_config_dir()), trusted_keys())
    with opened_store(config) as store:
        audit = Auditor(config, store=store)
        halt(store, project, reason, _actor(), audit=audit, key=key, ledger=ledger)
    console.print(f"halted {'every project' if project == '*' else project}", markup=False)


def unhalt_cmd(
    project: Annotated[str, typer.Option("--project", help="Project, or * for all.")] = "*",
    workspace: WorkspaceOpt = None,
) -> None:
    """Lift a halt (signed with your key: an unsigned lift is refused)."""
    from vigil.cli.common import opened_store
    from vigil.config import user_config_dir
    from vigil.engine.audit import Auditor
    from vigil.safety.decisions import decision_key
    from vigil.safety.halt import Ledger, ledger_path, unhalt
    from vigil.safety.keys import trusted_keys

    config = config_for(workspace)
    key = decision_key()
    ledger = Ledger(ledger_path(user_config_dir()), trusted_keys())
    with opened_store(config) as store:
        audit = Auditor(config, store=store)
        lifted = unhalt(store, project, audit=audit, key=key, actor=_actor(), ledger=ledger)
    console.print(f"unhalted {project}" if lifted else f"{project} was not halted", markup=False)


# audit --------------------------------------------------------------------------------


def _log_path(workspace: Path | None) -> Path:
    from vigil.safety.audit import audit_path

    return audit_path(config_for(workspace).state_dir)


@audit_app.command("verify")
def audit_verify(
    witness: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="A checkpoint note saved elsewhere to check against."),
    ] = None,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Check every entry and signed checkpoint; name the first bad entry."""
    from vigil.cli.common import opened_store
    from vigil.engine.audit import log_id
    from vigil.safety.audit_verify import verify
    from vigil.safety.keys import trusted_keys

    notes = tuple(p.read_text() for p in witness or [])
    config = config_for(workspace)
    # The store keeps the newest sealed size and root: a second record of the log's tail.
    with opened_store(config) as store:
        head = store.audit_head(log_id(config))
    report = verify(
        _log_path(workspace),
        trusted_keys(),
        extra_notes=notes,
        head=(head.size, head.root) if head is not None else None,
        check_store=True,
    )
    if fmt is Format.json:
        emit_json(report.to_dict())
        if not report.ok:
            raise typer.Exit(int(AuditTampered.exit_code))
        return
    if not report.ok:
        first = report.problems[0]
        raise AuditTampered(
            f"first bad entry: seq {first.seq}" if first.seq else first.message,
            details=[f"{p.file}:{p.line}: {p.message}" for p in report.problems],
        )
    console.print(
        f"[green]ok[/] {plural(report.entries, 'entry', 'entries')}, "
        f"{plural(report.checkpoints, 'signed checkpoint')}, "
        f"sealed through {report.sealed}; root {report.root[:16]}…",
        markup=True,
    )


@audit_app.command("show")
def audit_show(
    run: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    workspace: WorkspaceOpt = None,
    fmt: FormatOpt = Format.text,
) -> None:
    """Show audit entries (not a verification: see `vigil audit verify`)."""
    from rich.table import Table

    from vigil.safety.audit import FIELDS, read_entries

    entries = [e for e in read_entries(_log_path(workspace)) if run is None or e.get("run") == run]
    if fmt is Format.json:
        emit_json(entries)
        return
    columns = [f for f in FIELDS if f not in ("prev", "sealed")]
    table = Table(*columns, box=None)
    for e in entries:
        table.add_row(*(str(e.get(k) if e.get(k) is not None else "-") for k in columns))
    console.print(table)


@audit_app.command("export")
def audit_export(workspace: WorkspaceOpt = None) -> None:
    """Print the log as JSON Lines, byte for byte as stored."""
    path = _log_path(workspace)
    if path.exists():
        sys.stdout.buffer.write(path.read_bytes())
        sys.stdout.flush()


# explain ------------------------------------------------------------------------------


def explain_cmd(code: str, fmt: FormatOpt = Format.text) -> None:
    """Explain an error code: what happened and what to do."""
    from vigil.safety.catalog import full_catalog

    entry = full_catalog().get(code.upper())
    if entry is None:
        raise UsageError(f"unknown error code {code}", "See docs/errors.md for every code.")
    if fmt is Format.json:
        emit_json(
            {
                "code": entry.code,
                "title": entry.title,
                "remedy": entry.remedy,
                "category": str(entry.category),
                "exit_code": int(entry.exit_code),
            }
        )
        return
    console.print(f"[bold]{entry.code}[/]: {entry.title}", markup=True)
    console.print(f"remedy: {entry.remedy}", markup=False)
    console.print(f"category: {entry.category}", markup=False)
    console.print(f"exit code: {int(entry.exit_code)}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the safety commands to ``app``."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(grant_app, name="grant")
    app.add_typer(policy_app, name="policy")
    app.add_typer(audit_app, name="audit")
    app.command("halt")(halt_cmd)
    app.command("unhalt")(unhalt_cmd)
    app.command("explain")(explain_cmd)
