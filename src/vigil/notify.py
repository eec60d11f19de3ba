"""Telling people when something needs them: a command and/or a webhook per event.

``[notify]`` in vigil.toml::

    command = "notify-send vigil"          # gets the event JSON on stdin
    webhook = "https://hooks.example/vigil" # gets it as a JSON POST
    on = ["escalation", "failure", "run_end"]
    link = "https://vigil.example/runs/{run}"   # optional; fills the event's "url"

Delivery never blocks or fails a run. :meth:`Notifier.send` only puts the event on a
bounded queue (dropping it, and counting the drop, if the queue is full); one worker
thread owned by the notifier delivers, each delivery bounded by a timeout, and
:meth:`Notifier.close` drains what is queued and joins the worker.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from vigil.config import Config
from vigil.engine import events as ev
from vigil.engine.state import RunState

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

EventKind = Literal["escalation", "failure", "run_end"]
KINDS: tuple[EventKind, ...] = ("escalation", "failure", "run_end")


class NotifySettings(BaseModel):
    """``[notify]`` in vigil.toml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | None = Field(None, description="shell command; the event JSON on stdin")
    webhook: str | None = Field(None, pattern=r"^https?://", description="URL to POST to")
    on: tuple[EventKind, ...] = Field(KINDS, description="which events to send")
    link: str | None = Field(None, description="URL of a run, with {run} for its id")
    timeout: float = Field(10.0, gt=0, le=300, description="seconds one delivery may take")
    retries: int = Field(2, ge=0, le=10, description="webhook retries after the first try")
    queue: int = Field(100, ge=1, le=10_000, description="events held while delivery lags")


@dataclass
class Counts:
    """What happened to the events handed to a notifier."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0


_STOP = object()


def notification(
    event: EventKind,
    *,
    run: str,
    plan: str,
    project: str,
    state: str,
    task: str | None = None,
    message: str = "",
    url: str | None = None,
) -> dict[str, Any]:
    """The JSON object a command or webhook receives."""
    return {
        "event": event,
        "run": run,
        "plan": plan,
        "project": project,
        "state": state,
        "task": task,
        "message": message,
        "url": url,
    }


class Notifier:
    """Sends notifications in the background; the owner calls :meth:`close` at shutdown."""

    def __init__(self, settings: NotifySettings) -> None:
        self.settings = settings
        self.counts = Counts()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._deadline: float | None = None
        self._worker: threading.Thread | None = None
        self._client: httpx.Client | None = None
        if self.enabled:
            if settings.webhook:
                import httpx  # only runs that post webhooks pay for importing it

                self._client = httpx.Client(timeout=settings.timeout, follow_redirects=False)
            # Joined by close(); daemon only so a notifier someone forgot to close cannot
            # keep the interpreter alive at exit.
            self._worker = threading.Thread(target=self._work, name="vigil-notify", daemon=True)
            self._worker.start()

    @classmethod
    def from_config(cls, config: Config) -> Notifier:
        """A notifier as ``[notify]`` configures it (one that sends nothing if unset)."""
        return cls(config.section("notify", NotifySettings))

    @property
    def enabled(self) -> bool:
        """Whether there is anywhere to send to."""
        return bool(self.settings.command or self.settings.webhook)

    def send(self, event: dict[str, Any]) -> bool:
        """Queue ``event`` for delivery without waiting; False if it was not queued."""
        if not self.enabled or event.get("event") not in self.settings.on:
            return False
        if self._closing.is_set():
            return False
        try:
            self._queue.put_nowait(dict(event))
        except queue.Full:
            with self._lock:
                self.counts.dropped += 1
            log.warning("notification dropped: %d already waiting", self.settings.queue)
            return False
        return True

    def observe(self, events: Sequence[ev.Event], state: RunState) -> None:
        """A driver observer: notify about failures, escalations and the run's end."""
        for event in notifications_for(events, state, link=self.settings.link):
            self.send(event)

    def close(self, drain: float | None = None) -> None:
        """Deliver what is queued (for up to ``drain`` seconds), then stop and join the worker.

        Events still queued after ``drain`` (default: the delivery timeout) are dropped, so
        shutdown takes at most that plus the one delivery in flight.
        """
        if self._worker is None:
            return
        wait = self.settings.timeout if drain is None else drain
        self._deadline = time.monotonic() + wait
        self._closing.set()
        # The sentinel goes in behind whatever is queued; a blocking put is fine because
        # the worker keeps taking items until it sees it.
        self._queue.put(_STOP)
        self._worker.join()
        self._worker = None
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ delivery

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, dict)
            if self._deadline is not None and time.monotonic() > self._deadline:
                with self._lock:
                    self.counts.dropped += 1
                continue
            ok = True
            if self.settings.command:
                ok = self._run_command(self.settings.command, item) and ok
            if self.settings.webhook:
                ok = self._post(self.settings.webhook, item) and ok
            with self._lock:
                if ok:
                    self.counts.delivered += 1
                else:
                    self.counts.failed += 1

    def _run_command(self, command: str, event: dict[str, Any]) -> bool:
        env = {**os.environ, "VIGIL_NOTIFY_EVENT": str(event.get("event"))}
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("notify command could not start: %s", exc)
            return False
        try:
            _out, err = proc.communicate(json.dumps(event).encode(), self.settings.timeout)
        except subprocess.TimeoutExpired:
            # Its own session: the whole group goes, not just the shell.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            log.warning("notify command timed out after %gs", self.settings.timeout)
            return False
        if proc.returncode != 0:
            log.warning(
                "notify command exited with %d: %s", proc.returncode, err.decode()[-200:].strip()
            )
            return False
        return True

    def _post(self, url: str, event: dict[str, Any]) -> bool:
        import httpx

        assert self._client is not None
        for attempt in range(self.settings.retries + 1):
            if attempt:
                # Short, growing pauses; a closing notifier stops waiting and tries at once.
                self._closing.wait(min(0.5 * 2 ** (attempt - 1), 5.0))
            try:
                response = self._client.post(url, json=event)
            except httpx.HTTPError as exc:
                log.warning("webhook %s failed: %s", url, exc)
                continue
            if response.status_code < 500:
                if response.is_success:
                    return True
                # 4xx: the receiver refused this event; trying again will not change that.
                log.warning("webhook %s refused the event: HTTP %d", url, response.status_code)
                return False
            log.warning("webhook %s answered HTTP %d", url, response.status_code)
        return False


def notifications_for(
    events: Sequence[ev.Event], state: RunState, *, link: str | None = None
) -> list[dict[str, Any]]:
    """The notifications a batch of journal events calls for."""
    plan = state.plan
    url = link.replace("{run}", state.run_id) if link else None
    out: list[dict[str, Any]] = []

    def add(kind: EventKind, run_state: str, task: str | None, message: str) -> None:
        out.append(
            notification(
                kind,
                run=state.run_id,
                plan=plan.name,
                project=plan.project,
                state=run_state,
                task=task,
                message=message,
                url=url,
            )
        )

    for e in events:
        d = e.data
        if e.kind == ev.TASK_FINISHED and d.get("state") == "failed":
            task = str(d.get("task"))
            add("failure", "running", task, f"task {task} failed: {d.get('reason') or 'failed'}")
        elif e.kind == ev.PHASE_FINISHED and not d.get("passed"):
            phase = str(d.get("phase"))
            why = d.get("reason") or "its validation failed"
            add("failure", "running", None, f"phase {phase} did not pass: {why}")
        elif e.kind == ev.ESCALATION_OPENED:
            task = str(d.get("task"))
            add("escalation", "waiting", task, str(d.get("question") or "a person is needed"))
        elif e.kind == ev.RUN_FINISHED:
            final = str(d.get("state"))
            add("run_end", final, None, f"run {state.run_id} of {plan.name} {final}")
    return out
