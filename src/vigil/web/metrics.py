"""Prometheus metrics computed from the store on each scrape.

A custom collector rather than global counters: the journal already holds every fact,
several processes write it, and a dashboard restart must not reset a counter. Each
scrape reads the runs, their ``attempt.*`` events and the audit log, so the numbers are
the store's numbers, whoever wrote them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from vigil.engine import events as ev
from vigil.safety.audit import audit_path, read_entries
from vigil.store import RUN_STATES
from vigil.web.escalations import open_escalation_count

if TYPE_CHECKING:
    from vigil.store import RunStore

DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
OUTCOMES = (ev.SUCCEEDED, ev.FAILED, ev.TIMED_OUT, ev.INTERRUPTED, ev.CANCELLED)
MAX_RUNS = 1_000_000


class StoreCollector:
    """Collects vigil's metrics from ``store`` and the audit log under ``state_dir``."""

    def __init__(self, store: RunStore, state_dir: Path) -> None:
        self.store = store
        self.state_dir = state_dir

    def collect(self) -> Iterator[Metric]:
        """Every metric family, read fresh from the store."""
        runs = self.store.list_runs(limit=MAX_RUNS)
        by_state = Counter(r.state for r in runs)
        gauge = GaugeMetricFamily("vigil_runs", "Runs by state.", labels=["state"])
        for state in sorted(RUN_STATES):
            gauge.add_metric([state], by_state.get(state, 0))
        yield gauge

        durations: dict[str, list[float]] = {o: [] for o in OUTCOMES}
        retries = 0
        for record in runs:
            for event in self.store.events(record.id):
                if event.kind == ev.ATTEMPT_STARTED:
                    if event.data.get("attempt", 1) > 1 and event.data.get("command") != "fallback":
                        retries += 1
                elif event.kind == ev.ATTEMPT_FINISHED and "duration" in event.data:
                    outcome = str(event.data.get("outcome"))
                    durations.setdefault(outcome, []).append(float(event.data["duration"]))
        yield _histogram(durations)

        counter = CounterMetricFamily(
            "vigil_task_retries", "Attempts that retried a task after a failure, timeout or crash."
        )
        counter.add_metric([], retries)
        yield counter

        open_now = GaugeMetricFamily("vigil_escalations_open", "Questions waiting for a person.")
        open_now.add_metric([], open_escalation_count(self.store))
        yield open_now

        denials = CounterMetricFamily(
            "vigil_grant_denials", "Privileged actions the audit log records as denied."
        )
        denials.add_metric([], grant_denials(self.state_dir))
        yield denials


# Audit actions that record a person's answer: a "no" there is a decision, not a refusal.
PEOPLE_ACTIONS = ("escalation.", "review.")


def grant_denials(state_dir: Path) -> int:
    """Audit entries where authority (grant, policy, halt) refused an action."""
    entries = read_entries(audit_path(state_dir))
    return sum(
        1
        for e in entries
        if e.get("decision") == "deny" and not str(e.get("action", "")).startswith(PEOPLE_ACTIONS)
    )


def _histogram(durations: dict[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "vigil_task_duration_seconds",
        "Duration of finished task attempts, by outcome.",
        labels=["outcome"],
    )
    for outcome, values in sorted(durations.items()):
        buckets: list[tuple[str, float]] = [
            (repr(bound), float(sum(1 for v in values if v <= bound))) for bound in DURATION_BUCKETS
        ]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([outcome], buckets, sum(values))
    return family


def metrics_text(store: RunStore, state_dir: Path) -> bytes:
    """The Prometheus text exposition of the store's metrics, computed now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, state_dir))
    return generate_latest(registry)
