"""The postmortem of a failed run: what happened, in what order, why, and what to change.

Built from the run's journal (and the stored tails of its logs, which were redacted when
they were written). :func:`build_postmortem` is pure; :func:`postmortem_for` reads the
store and the logs and refuses runs that have nothing to explain.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigil.config import Config
from vigil.engine import events as ev
from vigil.engine.dryrun import commit_conflicts
from vigil.engine.offline import advice, last_symptom
from vigil.engine.state import FAILED, RunState, TaskState
from vigil.errors import ExitCode, VigilError
from vigil.layout import attempt_log, phase_log
from vigil.plan.duration import format_duration
from vigil.report.advice import code_fence, conflict_advice, excerpt, exit_advice, plain_exit
from vigil.report.completion import build_report
from vigil.report.view import iso, load_state, run_view
from vigil.words import plural
from vigil.workspace.errors import Conflict

if TYPE_CHECKING:
    from vigil.store import RunRecord, RunStore

LOG_TAIL_LINES = 30

LogTail = Callable[[str, int | None], str | None]
"""Reads the tail of a task's attempt log (task, attempt) or, with attempt None, a phase's."""


class NothingToExplain(VigilError):
    code = "VIGIL-POSTMORTEM-NOT-FAILED"
    title = "the run did not fail, so there is no postmortem to write"
    remedy = "Read its report with `vigil report RUN_ID`, or pass --force for a postmortem anyway."
    exit_code = ExitCode.USAGE


def _attempt_line(task: str, d: Mapping[str, Any]) -> str:
    outcome = str(d.get("outcome", "?")).replace("_", " ")
    bits = []
    if d.get("exit_code") is not None:
        bits.append(f"exit {d['exit_code']}")
    if d.get("reason"):
        bits.append(str(d["reason"]))
    if d.get("duration") is not None:
        bits.append(f"after {format_duration(float(d['duration']))}")
    extra = f" ({'; '.join(bits)})" if bits else ""
    return f"`{task}` attempt {d.get('attempt')} {outcome}{extra}"


def _why(d: Mapping[str, Any]) -> str:
    return f": {d['reason']}" if d.get("reason") else ""


def describe(kind: str, d: Mapping[str, Any], *, resumed: bool = False) -> str:
    """One line of the timeline for one journal event."""
    task = d.get("task")
    if kind == ev.RUN_CREATED:
        return "run created"
    if kind == ev.DRIVER_STARTED:
        verb = "resumed" if resumed else "started"
        return f"driver {verb} (pid {d.get('pid', '?')} on {d.get('host', '?')})"
    if kind == ev.DRIVER_STOPPED:
        return f"driver stopped{_why(d)}"
    if kind == ev.ATTEMPT_STARTED:
        number = int(d.get("attempt", 1))
        how = "fallback" if d.get("command") == "fallback" else "retry" if number > 1 else "start"
        return f"`{task}` attempt {number} started ({how})"
    if kind == ev.ATTEMPT_FINISHED:
        return _attempt_line(str(task), d)
    if kind == ev.TASK_FINISHED:
        note = " (degraded)" if d.get("degraded") else ""
        why = f": {d['reason']}" if d.get("reason") and d.get("state") != "succeeded" else ""
        return f"`{task}` {d.get('state')}{note}{why}"
    if kind == ev.TASK_SKIPPED:
        by = f" (blocked by `{d['blocked_by']}`)" if d.get("blocked_by") else ""
        return f"`{task}` {d.get('state', 'skipped')}{by}{_why(d)}"
    if kind == ev.PHASE_CHECK_STARTED:
        return f"phase `{d.get('phase')}` validation started"
    if kind == ev.PHASE_FINISHED:
        verdict = "passed" if d.get("passed") else "failed"
        return f"phase `{d.get('phase')}` {verdict}{_why(d)}"
    if kind == ev.CANCEL_REQUESTED:
        return f"cancel requested by {d.get('by', '?')}: {d.get('reason') or 'no reason given'}"
    if kind == ev.RUN_FINISHED:
        return f"run {d.get('state')}"
    if kind == ev.ESCALATION_OPENED:
        return f"escalation {d.get('id')} opened on `{task}`: {d.get('question', '')}"
    if kind == ev.ESCALATION_ANSWERED:
        answer = " ".join(str(d[k]) for k in ("decision", "value") if d.get(k) not in (None, ""))
        comment = f" ({d['comment']})" if d.get("comment") else ""
        return f"escalation {d.get('id')} answered by {d.get('by', '?')}: {answer}{comment}"
    if kind == ev.ROLLBACK_DONE:
        what = f"`{task}`" if task else "the run"
        return (
            f"rolled back {what} by {d.get('by', '?')}: {plural(len(d.get('paths') or []), 'path')}"
        )
    detail = ", ".join(f"{k}={v}" for k, v in d.items())
    return f"{kind} {detail}".strip()


def timeline(events: Sequence[ev.Event]) -> list[dict[str, Any]]:
    """Every journal event as a timestamped line, in journal order."""
    lines = []
    drivers = 0
    for e in events:
        if e.kind == ev.DRIVER_STARTED:
            drivers += 1
        lines.append(
            {
                "seq": e.seq,
                "at": iso(e.at),
                "kind": e.kind,
                "text": describe(e.kind, e.data, resumed=drivers > 1),
            }
        )
    return lines


def first_failure(state: RunState, events: Sequence[ev.Event]) -> dict[str, Any] | None:
    """The first task that failed for good, else the first failed phase, else the cancel."""
    for e in events:
        if e.kind == ev.TASK_FINISHED and e.data.get("state") == FAILED:
            ts = state.tasks[str(e.data["task"])]
            last = ts.attempts[-1] if ts.attempts else None
            return {
                "task": ts.task.id,
                "phase": ts.phase,
                "at": iso(e.at),
                "reason": ts.reason or (last.reason if last else "") or "it failed",
                "attempt": last.number if last else None,
                "exit_code": last.exit_code if last else None,
                "outcome": last.state if last else None,
                "critical": ts.task.on_failure == "stop",
                "excerpt": excerpt([a.data for a in ts.attempts]),
            }
    for e in events:
        if e.kind == ev.PHASE_FINISHED and not e.data.get("passed"):
            return {
                "phase": str(e.data["phase"]),
                "at": iso(e.at),
                "reason": str(e.data.get("reason") or "its validation failed"),
            }
    if state.cancel_requested:
        return {"at": None, "reason": f"cancelled: {state.cancel_reason}"}
    return None


def _task_timeout(state: RunState, ts: TaskState) -> float | None:
    return state.plan.timeout_for(ts.task)


def suggestions(state: RunState, events: Sequence[ev.Event]) -> list[str]:
    """Concrete changes the data points to, most urgent first."""
    out: list[str] = []
    first: list[str] = []  # a task that failed for want of the network: say so before all
    for ts in state.tasks.values():
        tid = ts.task.id
        timeouts = [a for a in ts.attempts if a.state == ev.TIMED_OUT]
        if timeouts:
            limit = _task_timeout(state, ts)
            limit_text = format_duration(limit) if limit is not None else "none"
            out.append(
                f"`{tid}` timed out {plural(len(timeouts), 'time')} (timeout {limit_text}): raise "
                "`timeout` if it is simply slow, or find out why it hangs."
            )
        offline = last_symptom(a.data for a in ts.attempts) if ts.state == FAILED else None
        if offline is not None:
            # Neither a fallback nor a retry gives a task the network.
            first.append(advice(tid, offline))
            continue
        last = ts.attempts[-1] if ts.attempts else None
        if ts.state == FAILED and last is not None and last.data.get("code") == Conflict.code:
            continue  # the conflict's own advice names the `needs` that orders the tasks
        if (
            ts.state == FAILED
            and last is not None
            and last.exit_code is not None
            and plain_exit(last.state, last.exit_code, last.data)
        ):
            # A failing test suite said why; neither a fallback nor a retry fixes that.
            out.append(exit_advice(tid, last.exit_code, state.run_id))
            continue
        if ts.state == FAILED and ts.task.on_failure == "stop" and ts.task.fallback is None:
            out.append(
                f"`{tid}` is critical and has no `fallback`: add one, or set "
                "`on_failure: continue` if the run can do without it."
            )
        failures = [a for a in ts.attempts if a.state in (ev.FAILED, ev.TIMED_OUT)]
        if ts.state == FAILED and len(failures) == 1 and state.plan.retry_for(ts.task).attempts < 2:
            out.append(
                f"`{tid}` failed on its only attempt: if the failure can be transient, "
                "give it a `retry`."
            )
        if ts.state == "succeeded" and failures and not ts.degraded:
            out.append(
                f"`{tid}` is flaky: it passed only after "
                f"{plural(len(failures), 'failed attempt')}. "
                "Find the cause before it fails for good."
            )
        if ts.degraded:
            out.append(f"`{tid}` needed its fallback: the main command needs fixing.")
    checked = {str(e.data.get("phase")) for e in events if e.kind == ev.PHASE_CHECK_STARTED}
    for phase in state.phases:
        # A phase also "fails" when a critical task failed or an earlier phase did; only a
        # phase whose own checks ran and failed points at its validation.
        if phase.state == "failed" and phase.id in checked and not phase.critical_failures:
            why = phase.reason or "its validation failed"
            out.append(
                f"Phase `{phase.id}` did not pass ({why}): fix what its `validate` checks, "
                "or the check itself if it is wrong."
            )
    skipped = [ts for ts in state.tasks.values() if ts.state == "skipped"]
    if skipped:
        blockers = sorted({ts.blocked_by for ts in skipped if ts.blocked_by})
        out.append(
            f"{plural(len(skipped), 'task')} never ran because of "
            f"{', '.join(f'`{b}`' for b in blockers) or 'earlier failures'}; "
            "they run once those are fixed."
        )
    if state.interruptions:
        out.append(
            f"vigil itself was interrupted {plural(state.interruptions, 'time')} mid-attempt: "
            "check the host (restarts, OOM kills) before blaming the tasks."
        )
    unanswered = _escalations(events)
    waiting = [e["id"] for e in unanswered if e["answer"] is None]
    if waiting:
        which = "Escalation " if len(waiting) == 1 else "Escalations "
        verb = " was" if len(waiting) == 1 else " were"
        out.append(f"{which}{', '.join(map(str, waiting))}{verb} never answered.")
    conflicts = [conflict_advice(c.to_dict()) for c in commit_conflicts(state)]
    return first + conflicts + out


def _escalations(events: Sequence[ev.Event]) -> list[dict[str, Any]]:
    opened: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.kind == ev.ESCALATION_OPENED:
            opened[str(e.data.get("id"))] = {**e.data, "opened_at": iso(e.at), "answer": None}
        elif e.kind == ev.ESCALATION_ANSWERED:
            item = opened.setdefault(str(e.data.get("id")), {"id": e.data.get("id")})
            item["answer"] = {**e.data, "at": iso(e.at)}
    return list(opened.values())


def build_postmortem(
    record: RunRecord, state: RunState, events: Sequence[ev.Event], log_tail: LogTail
) -> dict[str, Any]:
    """The postmortem as data."""
    report = build_report(run_view(record, state))
    failure = first_failure(state, events)
    if failure is not None:
        if "task" in failure:
            failure["log_tail"] = log_tail(failure["task"], failure["attempt"])
        elif "phase" in failure:
            failure["log_tail"] = log_tail(failure["phase"], None)
    attempts = [
        {
            "task": ts.task.id,
            "attempt": a.number,
            "command": a.command,
            "outcome": a.state,
            "exit_code": a.exit_code,
            "reason": a.reason or None,
            "seconds": round(a.ended_at - a.started_at, 3) if a.ended_at is not None else None,
        }
        for ts in state.tasks.values()
        for a in ts.attempts
        if a.state != "succeeded"
    ]
    rollbacks = [
        {"at": iso(e.at), "task": e.data.get("task"), "paths": list(e.data.get("paths") or [])}
        | {"by": e.data.get("by")}
        for e in events
        if e.kind == ev.ROLLBACK_DONE
    ]
    return {
        "run": record.id,
        "plan": record.plan_name,
        "project": record.project,
        "state": report["state"],
        "started_at": report["started_at"],
        "ended_at": report["ended_at"],
        "duration": report["duration"],
        "summary": report["summary"],
        "first_failure": failure,
        "timeline": timeline(events),
        "failed_attempts": attempts,
        "rollbacks": rollbacks,
        "escalations": _escalations(events),
        "suggestions": suggestions(state, events),
    }


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(pm: dict[str, Any]) -> str:
    """The postmortem for people."""
    s = pm["summary"]
    dur = format_duration(pm["duration"]) if pm["duration"] is not None else "—"
    failure = pm["first_failure"]
    lines = [
        f"# Postmortem: run {pm['run']} {pm['state'].upper()}",
        "",
        "## Summary",
        "",
        f"Plan **{pm['plan']}** (project {pm['project']}) ran "
        f"{pm['started_at'] or '—'} → {pm['ended_at'] or '—'} ({dur}) and **{pm['state']}**.",
        f"{s['tasks']} tasks: {s['succeeded']} succeeded, {s['failed']} failed, "
        f"{s['skipped']} skipped, {s['cancelled']} cancelled, {s['degraded']} degraded; "
        f"{s['attempts']} attempts, {s['retries']} retries.",
    ]
    if failure is not None:
        where = (
            f"task `{failure['task']}`"
            if "task" in failure
            else (f"phase `{failure['phase']}`" if "phase" in failure else "the run")
        )
        lines.append(f"It went wrong first at {where}: {failure['reason']}.")
    lines.append("")
    if failure is not None:
        lines += ["## First failure", ""]
        if "task" in failure:
            exit_text = (
                f", exit code {failure['exit_code']}" if failure["exit_code"] is not None else ""
            )
            how = (
                f"on attempt {failure['attempt']} "
                f"({(failure['outcome'] or '').replace('_', ' ')}{exit_text})"
                if failure["attempt"] is not None
                else "on a person's answer"
            )
            lines.append(
                f"Task `{failure['task']}` (phase `{failure['phase']}`, "
                f"{'critical' if failure['critical'] else 'non-critical'}) failed at "
                f"{failure['at']} {how}: {failure['reason']}."
            )
        else:
            lines.append(f"{failure['reason']}.")
        if failure.get("excerpt"):
            fence = code_fence(failure["excerpt"])
            lines += ["", "What it said:", "", f"{fence}text", *failure["excerpt"], fence]
        tail = failure.get("log_tail")
        if tail:
            lines += ["", f"Last lines of its log (`vigil logs {pm['run']}`):", "", "```text"]
            lines += [tail.rstrip("\n"), "```"]
        elif "log_tail" in failure:
            lines += ["", "Its log is empty or gone."]
        lines.append("")
    lines += ["## What to change", ""]
    lines += [f"- {t}" for t in pm["suggestions"]] or ["- Nothing stands out in the journal."]
    lines += ["", "## Timeline", "", "| time (UTC) | event |", "|---|---|"]
    for item in pm["timeline"]:
        lines.append(f"| {_cell(item['at'])} | {_cell(item['text'])} |")
    lines.append("")
    if pm["failed_attempts"]:
        lines += [
            "## Attempts that did not succeed",
            "",
            "| task | attempt | command | outcome | exit | time | error |",
            "|---|---|---|---|---|---|---|",
        ]
        for a in pm["failed_attempts"]:
            secs = format_duration(a["seconds"]) if a["seconds"] is not None else ""
            lines.append(
                f"| {_cell(a['task'])} | {a['attempt']} | {a['command']} | "
                f"{a['outcome'].replace('_', ' ')} | "
                f"{_cell(a['exit_code'])} | {secs} | {_cell(a['reason'])} |"
            )
        lines.append("")
    from vigil.workspace.render import quote_path

    lines += ["## Rolled back", ""]
    if pm["rollbacks"]:
        for r in pm["rollbacks"]:
            what = f"`{r['task']}`" if r["task"] else "the whole run"
            paths = ", ".join(f"`{quote_path(p)}`" for p in r["paths"][:20])
            more = f" and {len(r['paths']) - 20} more" if len(r["paths"]) > 20 else ""
            lines.append(f"- {r['at']}: {what} by {r['by'] or '?'}: {paths or 'no files'}{more}")
    else:
        lines.append("Nothing was rolled back.")
    lines.append("")
    if pm["escalations"]:
        lines += ["## Escalations", ""]
        for e in pm["escalations"]:
            answer = e.get("answer")
            reply = (
                f"answered by {answer.get('by', '?')} at {answer['at']}: "
                + " ".join(
                    str(answer[k]) for k in ("decision", "value") if answer.get(k) not in (None, "")
                )
                + (f" ({answer['comment']})" if answer.get("comment") else "")
                if answer
                else "never answered"
            )
            lines.append(
                f"- {e.get('id')} on `{e.get('task')}` ({e.get('kind', 'question')}): "
                f"{e.get('question', '')} → {reply}"
            )
        lines.append("")
    return "\n".join(lines)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str | None:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return None
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def postmortem_for(
    config: Config, store: RunStore, run_id: str, *, force: bool = False
) -> dict[str, Any]:
    """Load ``run_id`` and build its postmortem; refuses a run that did not fail."""
    record, state = load_state(store, run_id)
    run_state = state.finished or record.state
    if run_state not in ("failed", "cancelled") and not force:
        raise NothingToExplain(f"run {run_id} is {run_state}, not failed")
    events = [ev.Event(s.kind, s.data, s.at, s.seq) for s in store.events(run_id)]

    def log_tail(name: str, attempt: int | None) -> str | None:
        if attempt is None:
            return _tail(phase_log(config.state_dir, run_id, name))
        return _tail(attempt_log(config.state_dir, run_id, name, attempt))

    return build_postmortem(record, state, events, log_tail)
