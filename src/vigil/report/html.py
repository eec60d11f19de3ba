"""The completion report as one self-contained HTML page: the summary, the Gantt chart of
attempts, every task, issues and what to do. No script, no external asset (stylesheet,
font or image): the file can be mailed or attached to a ticket and opened anywhere.

Everything that comes from the plan or the run (task ids and names, reasons, the output of
failed attempts) is escaped, so a value holding markup is shown as text, never run.
"""

from __future__ import annotations

from html import escape
from typing import Any

from vigil.plan.duration import format_duration
from vigil.words import plural

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px;
       color: #111827; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta, small { color: #6b7280; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e5e7eb;
         vertical-align: top; }
.state { font-weight: 600; }
.succeeded { color: #15803d; } .failed, .timed_out { color: #b91c1c; }
.cancelled, .waiting, .skipped, .interrupted { color: #a16207; }
pre { background: #f9fafb; padding: .5rem; overflow-x: auto; white-space: pre-wrap;
      max-height: 20rem; }
.chart { overflow-x: auto; }
.legend span { display: inline-block; margin-right: 1rem; }
.legend i { display: inline-block; width: .9rem; height: .9rem; margin-right: .3rem;
            vertical-align: middle; border-radius: 2px; }
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _legend() -> str:
    from vigil.report.gantt import FILL

    parts = [
        f'<span><i style="background:{colour}"></i>{_e(name.replace("_", " "))}</span>'
        for name, colour in FILL.items()
        if name != "wait"
    ]
    parts.append(f'<span><i style="background:{FILL["wait"]}"></i>waiting for a person</span>')
    parts.append("<span>- - - waiting to retry</span>")
    return '<p class="legend">' + "".join(parts) + "</p>"


def render_html(
    view: dict[str, Any],
    report: dict[str, Any],
    chart: str,
    log_tails: dict[tuple[str, int], str] | None = None,
) -> str:
    """The page; ``chart`` is the SVG of :func:`vigil.report.gantt.gantt_svg` (already
    escaped where it holds run data); ``log_tails`` the last lines of the logs of failed
    attempts, by task and attempt number."""
    s = report["summary"]
    state = str(view["state"])
    duration = format_duration(view["duration"]) if view["duration"] is not None else "—"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Run {_e(view['id'])}: {_e(state)}</title>",
        f"<style>{CSS}</style></head><body>",
        f'<h1>Run <code>{_e(view["id"])}</code>: <span class="state {_e(state)}">'
        f"{_e(state.upper())}</span></h1>",
        f'<p class="meta">plan {_e(view["plan"])} · project {_e(view["project"])} · '
        f"started {_e(view['started_at'] or '—')} · ended {_e(view['ended_at'] or '—')} · "
        f"{_e(duration)}</p>",
        "<h2>Summary</h2>",
        f"<p>{_e(plural(s['tasks'], 'task'))}: {s['succeeded']} succeeded, {s['failed']} "
        f"failed, {s['skipped']} skipped, {s['cancelled']} cancelled; {s['degraded']} "
        f"degraded; {_e(plural(s['attempts'], 'attempt'))}, "
        f"{_e(plural(s['retries'], 'retry', 'retries'))}.</p>",
    ]
    if view.get("inputs"):
        given = ", ".join(f"{k}={v}" for k, v in view["inputs"].items())
        out.append(f"<p>inputs: <code>{_e(given)}</code></p>")
    if report.get("recommendations"):
        out.append("<h2>What to do</h2><ul>")
        out.extend(f"<li>{_e(r)}</li>" for r in report["recommendations"])
        out.append("</ul>")
    out.append("<h2>Attempts over time</h2>")
    out.append(f'<div class="chart">{chart}</div>')
    out.append(_legend())
    out.append(
        "<h2>Tasks</h2><table><thead><tr><th>phase</th><th>task</th><th>state</th>"
        "<th>attempts</th><th>time</th><th>note</th></tr></thead><tbody>"
    )
    for t in view["tasks"]:
        spent = sum(a["duration"] or 0 for a in t["attempts"])
        label = t["state"] + (" (degraded)" if t["degraded"] else "")
        if t["state"] == "failed" and not t.get("critical", True):
            label = "failed (non-critical)"
        name = "" if t["name"] == t["id"] else f"<br><small>{_e(t['name'])}</small>"
        out.append(
            f"<tr><td>{_e(t['phase'])}</td><td><code>{_e(t['id'])}</code>{name}</td>"
            f'<td class="state {_e(t["state"])}">{_e(label)}</td>'
            f"<td>{len(t['attempts'])}</td>"
            f"<td>{_e(format_duration(spent)) if t['attempts'] else ''}</td>"
            f"<td>{_e(t['reason'] or '')}</td></tr>"
        )
    out.append("</tbody></table>")
    if report.get("issues"):
        out.append(
            "<h2>Issues</h2><table><thead><tr><th>task</th><th>attempt</th><th>what</th>"
            "<th>cause</th><th>then</th></tr></thead><tbody>"
        )
        for i in report["issues"]:
            out.append(
                f"<tr><td><code>{_e(i['task'])}</code></td><td>{_e(i['attempt'])}</td>"
                f"<td>{_e(i['kind'])}</td><td>{_e(i['cause'] or '—')}</td>"
                f"<td>{_e(i['then'])}</td></tr>"
            )
        out.append("</tbody></table>")
    tails = log_tails or {}
    failed_output = [
        (t["id"], a["number"], a.get("failed_output") or tails.get((t["id"], a["number"])))
        for t in view["tasks"]
        for a in t["attempts"]
        if a.get("failed_output") or tails.get((t["id"], a["number"]))
    ]
    if failed_output:
        out.append("<h2>Output of failed attempts</h2>")
        for task, number, text in failed_output:
            out.append(
                f"<h3><code>{_e(task)}</code> attempt {_e(number)}</h3><pre>{_e(text)}</pre>"
            )
    out.append("</body></html>\n")
    return "\n".join(out)
