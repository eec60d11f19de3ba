"""Service levels: how well vigil has been doing its job over a window of time.

Four indicators, each compared with a target from ``[slo]`` in ``vigil.toml``:

- **run success**: succeeded runs / runs that finished (succeeded, failed, cancelled);
- **first-attempt pass**: tasks whose first attempt with a verdict succeeded / tasks that
  got a verdict (interrupted and cancelled attempts say nothing about the task, so they
  are passed over);
- **policy enforcement**: privileged decisions in the audit log (those about a capability
  the policy reserves for grants, which is what an entry's ``capability`` names) that were
  enforced (a deny, or an allow backed by a grant) / all such decisions. Commits, run
  ends, reviews and answers are on the record too but are not privileged decisions;
- **time to recovery, p95**: for each failed run, the time from its end to the end of
  the next successful run of the same plan and project, or to a rollback of it,
  whichever came first. A failure not recovered yet counts with its age so far, so an
  open failure can only make the number worse.

:func:`compute_slo` is pure: runs, journals and audit entries in, numbers out. The
I/O (:func:`collect`) is a thin layer that reads them from a store and an audit log.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from vigil.config import Config
from vigil.engine import events as ev
from vigil.plan.models import Duration
from vigil.report.view import iso
from vigil.safety.audit import audit_path, read_entries

if TYPE_CHECKING:
    from vigil.store import RunStore

FINISHED = ("succeeded", "failed", "cancelled")
VERDICTS = frozenset({"succeeded", "failed", "timed_out"})


class SloTargets(BaseModel):
    """``[slo]`` in vigil.toml: the targets each indicator is held to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    success: float = Field(0.95, ge=0.0, le=1.0, description="run success rate")
    first_attempt: float = Field(0.9, ge=0.0, le=1.0, description="first-attempt pass rate")
    enforcement: float = Field(1.0, ge=0.0, le=1.0, description="policy enforcement rate")
    ttr_p95: Duration = Field(86400.0, description="time to recovery, 95th percentile")
    window: Duration = Field(7 * 86400.0, gt=0, description="default window")


@dataclass(frozen=True)
class RunFacts:
    """What the indicators need to know about one run."""

    id: str
    plan: str
    project: str
    state: str
    ended_at: float | None
    # Journal events as (kind, data, at), in journal order.
    events: Sequence[tuple[str, Mapping[str, Any], float]] = field(default_factory=tuple)


@dataclass(frozen=True)
class Indicator:
    """One service level indicator, measured and judged."""

    name: str
    title: str
    value: float | None
    target: float
    unit: str  # "ratio" or "seconds"
    numerator: int | None = None
    denominator: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``met``, ``missed``, or ``n/a`` when there was nothing to measure."""
        if self.value is None:
            return "n/a"
        if self.unit == "seconds":
            return "met" if self.value <= self.target else "missed"
        return "met" if self.value >= self.target else "missed"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "title": self.title,
            "value": self.value,
            "target": self.target,
            "unit": self.unit,
            "status": self.status,
            "numerator": self.numerator,
            "denominator": self.denominator,
            **self.detail,
        }


def p95(values: Iterable[float]) -> float | None:
    """The 95th percentile by nearest rank (a value that occurred), or None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def run_success(runs: Sequence[RunFacts], target: float) -> Indicator:
    """Succeeded runs over finished runs."""
    finished = [r for r in runs if r.state in FINISHED]
    ok = sum(1 for r in finished if r.state == "succeeded")
    counts = {s: sum(1 for r in finished if r.state == s) for s in FINISHED}
    return Indicator(
        "run_success",
        "Run success rate",
        _ratio(ok, len(finished)),
        target,
        "ratio",
        ok,
        len(finished),
        {"runs": counts},
    )


def first_attempts(events: Iterable[tuple[str, Mapping[str, Any], float]]) -> dict[str, str]:
    """Task id to the outcome of its first attempt that reached a verdict."""
    first: dict[str, str] = {}
    for kind, data, _at in events:
        if kind != ev.ATTEMPT_FINISHED:
            continue
        task, outcome = str(data.get("task")), str(data.get("outcome"))
        if outcome in VERDICTS and task not in first:
            first[task] = outcome
    return first


def first_attempt_pass(runs: Sequence[RunFacts], target: float) -> Indicator:
    """Tasks whose first attempt succeeded over tasks that ran."""
    ran = passed = 0
    for run in runs:
        if run.state not in FINISHED:
            continue
        outcomes = first_attempts(run.events)
        ran += len(outcomes)
        passed += sum(1 for o in outcomes.values() if o == "succeeded")
    return Indicator(
        "first_attempt_pass",
        "First-attempt validation pass rate",
        _ratio(passed, ran),
        target,
        "ratio",
        passed,
        ran,
    )


def _timestamp(entry: Mapping[str, Any]) -> float | None:
    try:
        return datetime.fromisoformat(str(entry["time"])).timestamp()
    except (KeyError, ValueError):
        return None


def enforcement(
    audit: Iterable[Mapping[str, Any]], target: float, start: float, end: float
) -> Indicator:
    """Enforced privileged decisions (denied, or allowed under a grant) over all of them.

    Only entries about a privileged capability count: a brand-new project that commits
    changes and ends runs has made no privileged decision, so it measures n/a, not 0%.
    """
    allowed = denied = unbacked = 0
    for entry in audit:
        at = _timestamp(entry)
        if at is None or not start <= at <= end or not entry.get("capability"):
            continue
        decision = entry.get("decision")
        if decision == "deny":
            denied += 1
        elif decision == "allow":
            allowed += 1
            if not entry.get("grant"):
                unbacked += 1
    total = allowed + denied
    return Indicator(
        "policy_enforcement",
        "Policy enforcement rate",
        _ratio(total - unbacked, total),
        target,
        "ratio",
        total - unbacked,
        total,
        {"allowed": allowed, "denied": denied, "allowed_without_grant": unbacked},
    )


def recovery_times(runs: Sequence[RunFacts], now: float, start: float) -> tuple[list[float], int]:
    """Seconds to recovery of each run that failed in the window, and how many are open."""
    successes: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r.state == "succeeded" and r.ended_at is not None:
            successes.setdefault((r.plan, r.project), []).append(r.ended_at)
    times: list[float] = []
    still_open = 0
    for r in runs:
        if r.state != "failed" or r.ended_at is None or not start <= r.ended_at <= now:
            continue
        ended = r.ended_at
        candidates = [t for t in successes.get((r.plan, r.project), ()) if t > ended]
        candidates += [at for kind, _d, at in r.events if kind == ev.ROLLBACK_DONE and at >= ended]
        if candidates:
            times.append(min(candidates) - ended)
        else:
            still_open += 1
            times.append(max(0.0, now - ended))
    return times, still_open


def time_to_recovery(
    runs: Sequence[RunFacts], target: float, now: float, start: float
) -> Indicator:
    """The 95th percentile of time to recovery after a failed run."""
    times, still_open = recovery_times(runs, now, start)
    value = p95(times)
    return Indicator(
        "ttr_p95",
        "Time to recovery (p95)",
        None if value is None else round(value, 3),
        target,
        "seconds",
        None,
        len(times),
        {"failures": len(times), "unrecovered": still_open},
    )


def compute_slo(
    runs: Sequence[RunFacts],
    audit: Iterable[Mapping[str, Any]],
    targets: SloTargets,
    *,
    now: float,
    window: float,
) -> list[Indicator]:
    """Every indicator over runs that ended in ``[now - window, now]``."""
    start = now - window
    in_window = [r for r in runs if r.ended_at is not None and start <= r.ended_at <= now]
    return [
        run_success(in_window, targets.success),
        first_attempt_pass(in_window, targets.first_attempt),
        enforcement(audit, targets.enforcement, start, now),
        # Recovery looks at every run: the success that ends a failure is always later
        # than it, so within the window too, but the whole list costs nothing extra.
        time_to_recovery(runs, targets.ttr_p95, now, start),
    ]


def collect(store: RunStore, *, now: float, window: float) -> list[RunFacts]:
    """Runs that ended in ``[now - window, now]``, with their journals, from ``store``."""
    start = now - window
    facts: list[RunFacts] = []
    # Newest first by creation; a long run created before the window may still have
    # ended inside it, so the listing is not cut off at the window's start.
    for record in store.list_runs(states=list(FINISHED), limit=100_000):
        if record.ended_at is None or not start <= record.ended_at <= now:
            continue
        events = tuple((e.kind, e.data, e.at) for e in store.events(record.id))
        facts.append(
            RunFacts(
                record.id, record.plan_name, record.project, record.state, record.ended_at, events
            )
        )
    return facts


def slo_report(
    config: Config, store: RunStore, *, now: float, window: float | None = None
) -> dict[str, Any]:
    """The service levels of the workspace's runs and audit log, as JSON-ready data."""
    targets = config.section("slo", SloTargets)
    span = targets.window if window is None else window
    runs = collect(store, now=now, window=span)
    audit = read_entries(audit_path(config.state_dir))
    indicators = compute_slo(runs, audit, targets, now=now, window=span)
    return {
        "from": iso(now - span),
        "to": iso(now),
        "window": span,
        "met": all(i.status != "missed" for i in indicators),
        "indicators": [i.as_dict() for i in indicators],
    }
