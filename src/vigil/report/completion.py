"""The completion report: what happened last night, readable in two minutes.

Built from the run's journal only (pure), written next to the store when a run ends and
printed by ``vigil report RUN_ID --format md|json``.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from typing import TYPE_CHECKING, Any

from vigil.config import Config
from vigil.engine.offline import advice, last_symptom
from vigil.layout import reports_dir, write_private
from vigil.plan.duration import format_duration
from vigil.report.advice import code_fence, conflict_advice, excerpt, exit_advice, plain_exit
from vigil.report.view import load_state, run_view
from vigil.words import plural

if TYPE_CHECKING:
    from vigil.store import RunStore

_ICON = {
    "succeeded": "✅",
    "failed": "❌",
    "skipped": "⏭️",
    "cancelled": "🚫",
    "running": "⏳",
    "pending": "…",
}


def build_report(view: dict[str, Any]) -> dict[str, Any]:
    """The report as data, from a :func:`run_view`."""
    tasks = view["tasks"]
    counts = Counter(t["state"] for t in tasks)
    issues: list[dict[str, Any]] = []
    for t in tasks:
        attempts = t["attempts"]
        for a, nxt in zip(attempts, [*attempts[1:], None], strict=False):
            if a["state"] == "succeeded":
                continue
            kind = {"timed_out": "timeout", "interrupted": "interruption"}.get(
                a["state"], "failure"
            )
            then = "gave up"
            if nxt is not None:
                then = "fell back" if nxt["command"] == "fallback" else "retried"
            elif t["state"] == "cancelled" or a["state"] == "cancelled":
                then = "cancelled"
            issues.append(
                {
                    "task": t["id"],
                    "attempt": a["number"],
                    "kind": kind,
                    "cause": a["reason"],
                    "then": then,
                }
            )
        if t["degraded"]:
            issues.append(
                {
                    "task": t["id"],
                    "attempt": attempts[-1]["number"],
                    "kind": "fallback",
                    "cause": "main command failed; fallback succeeded",
                    "then": "degraded",
                }
            )
    recommendations: list[str] = []
    for t in tasks:
        seen = last_symptom(t["attempts"]) if t["state"] == "failed" else None
        if seen is not None:
            recommendations.append(advice(t["id"], seen))
    recommendations += [conflict_advice(c) for c in view.get("conflicts") or []]
    flaky = [
        t["id"]
        for t in tasks
        if t["state"] == "succeeded"
        and not t["degraded"]
        and sum(a["state"] in ("failed", "timed_out") for a in t["attempts"]) > 0
    ]
    if flaky:
        recommendations.append(
            "Flaky (passed only after retries): "
            + ", ".join(flaky)
            + ". Find the cause before it fails for good."
        )
    degraded = [t["id"] for t in tasks if t["degraded"]]
    if degraded:
        recommendations.append(
            "Degraded (fallback used): " + ", ".join(degraded) + ". The main command needs fixing."
        )
    failed = [t for t in tasks if t["state"] == "failed"]
    if failed:
        first = min(
            failed, key=lambda t: (t["attempts"][-1]["ended_at"] or "") if t["attempts"] else ""
        )
        last = first["attempts"][-1] if first["attempts"] else None
        if last is not None and plain_exit(last["state"], last["exit_code"], last):
            recommendations.append(
                f"Start with {first['id']}: "
                + exit_advice(first["id"], last["exit_code"], view["id"])
            )
        else:
            recommendations.append(
                f"Start with {first['id']}: {first['reason'] or 'it failed'} "
                # Quoted: a matrix expansion's id (``test[python=3.12]``) is a glob to a shell.
                f"(`vigil logs {view['id']} {shlex.quote(first['id'])}`)."
            )
    ungranted = [t["id"] for t in tasks if t.get("needs_grant")]
    if ungranted:
        recommendations.append(
            "Not run in this dry run, for want of a grant: "
            + ", ".join(ungranted)
            + ". The tasks after them ran without their changes."
        )
    # A task skipped by an ``if:`` is the plan working as written: nothing to do about it.
    skipped = [
        t
        for t in tasks
        if t["state"] == "skipped"
        and not t.get("needs_grant")
        and not t.get("skipped_by_condition")
        and not t.get("left_out")
    ]
    if skipped:
        blockers = sorted({str(t["blocked_by"]) for t in skipped if t["blocked_by"]})
        recommendations.append(
            f"{plural(len(skipped), 'task')} did not run because of: {', '.join(blockers)}."
        )
    durations = sorted(
        ((sum(a["duration"] or 0 for a in t["attempts"]), t["id"]) for t in tasks if t["attempts"]),
        reverse=True,
    )
    slowest = [{"task": tid, "seconds": round(sec, 3)} for sec, tid in durations[:3] if sec > 0]
    if slowest:
        recommendations.append(
            "Slowest: "
            + ", ".join(f"{s['task']} ({format_duration(s['seconds'])})" for s in slowest)
            + "."
        )
    usage = {
        t["id"]: {
            "tokens": sum(
                int((a.get("usage") or {}).get("total_tokens", 0)) for a in t["attempts"]
            ),
            "cost": round(
                sum(float((a.get("usage") or {}).get("cost", 0.0)) for a in t["attempts"]), 6
            ),
        }
        for t in tasks
        if any(a.get("usage") for a in t["attempts"])
    }
    return {
        "usage": {
            "tasks": usage,
            "tokens": sum(u["tokens"] for u in usage.values()),
            "cost": round(sum(u["cost"] for u in usage.values()), 6),
        },
        "run": view["id"],
        "dry_run": bool(view.get("dry_run")),
        "plan": view["plan"],
        "project": view["project"],
        "state": view["state"],
        "started_at": view["started_at"],
        "ended_at": view["ended_at"],
        "duration": view["duration"],
        "summary": {
            "tasks": len(tasks),
            **{k: counts.get(k, 0) for k in ("succeeded", "failed", "skipped", "cancelled")},
            "degraded": len(degraded),
            "attempts": sum(len(t["attempts"]) for t in tasks),
            "retries": sum(1 for i in issues if i["then"] == "retried"),
        },
        "phases": view["phases"],
        "inputs": view.get("inputs") or {},
        "tasks": [
            {
                "id": t["id"],
                "phase": t["phase"],
                "state": t["state"],
                "degraded": t["degraded"],
                "attempts": len(t["attempts"]),
                "reason": t["reason"],
                # The lines of its output that say what went wrong, when it failed.
                "excerpt": excerpt(t["attempts"]) if t["state"] == "failed" else [],
                "seconds": round(sum(a["duration"] or 0 for a in t["attempts"]), 3),
                "changes": next(
                    (
                        a.get("changes", 0)
                        for a in reversed(t["attempts"])
                        if a["state"] == "succeeded"
                    ),
                    0,
                ),
            }
            for t in tasks
        ],
        "issues": issues,
        "conflicts": list(view.get("conflicts") or []),
        "recommendations": recommendations,
        "slowest": slowest,
    }


def render_markdown(report: dict[str, Any]) -> str:
    """The report for people."""
    s = report["summary"]
    dur = format_duration(report["duration"]) if report["duration"] is not None else "—"
    lines = [
        f"# {'Dry run' if report.get('dry_run') else 'Run'} {report['run']}: "
        f"{report['state'].upper()}",
        "",
        f"Plan **{report['plan']}** (project {report['project']}), "
        f"{report['started_at'] or '—'} → {report['ended_at'] or '—'}, {dur}.",
        "",
        f"**{s['tasks']} tasks:** {s['succeeded']} succeeded, {s['failed']} failed, "
        f"{s['skipped']} skipped, {s['cancelled']} cancelled; {s['degraded']} degraded; "
        f"{s['attempts']} attempts, {s['retries']} retries.",
        "",
    ]
    if report.get("inputs"):
        lines += ["## Inputs", ""]
        for name, value in report["inputs"].items():
            shown = json.dumps(value, ensure_ascii=False).replace("`", "\\`")
            lines.append(f"- `{name}`: `{shown}`")
        lines.append("")
    used = report.get("usage") or {}
    if used.get("tasks"):
        lines += ["## Model usage", ""]
        for tid, u in used["tasks"].items():
            lines.append(f"- `{tid}`: {u['tokens']} tokens, cost {u['cost']:.4f}")
        lines += [f"- total: {used['tokens']} tokens, cost {used['cost']:.4f}", ""]
    if report["recommendations"]:
        lines += ["## What to do", ""]
        lines += [f"- {r}" for r in report["recommendations"]]
        lines.append("")
    quoted = [t for t in report["tasks"] if t.get("excerpt")]
    if quoted:
        lines += ["## What the failed tasks said", ""]
        for t in quoted:
            fence = code_fence(t["excerpt"])
            lines += [f"`{t['id']}`:", "", f"{fence}text", *t["excerpt"], fence, ""]
    if report["issues"]:
        lines += ["## Issues encountered", ""]
        for i in report["issues"]:
            lines.append(
                f"- `{i['task']}` attempt {i['attempt']}: {i['kind']} ({i['cause'] or 'no detail'})"
                f" → {i['then']}"
            )
        lines.append("")
    lines += [
        "## Tasks",
        "",
        "| phase | task | outcome | attempts | time | files changed | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report["tasks"]:
        outcome = f"{_ICON.get(t['state'], '')} {t['state']}" + (
            " (degraded)" if t["degraded"] else ""
        )
        note = (t["reason"] or "").replace("|", "\\|")
        lines.append(
            f"| {t['phase']} | {t['id']} | {outcome} | {t['attempts']} | "
            f"{format_duration(t['seconds'])} | {t['changes'] or ''} | {note} |"
        )
    lines.append("")
    return "\n".join(lines)


def write_report(config: Config, store: RunStore, run_id: str) -> dict[str, Any]:
    """Build the report of ``run_id`` and write it as Markdown and JSON under the state dir."""
    record, state = load_state(store, run_id)
    report = build_report(run_view(record, state))
    out = reports_dir(config.state_dir)
    write_private(out / f"{run_id}.md", render_markdown(report))
    write_private(out / f"{run_id}.json", json.dumps(report, indent=2))
    return report
