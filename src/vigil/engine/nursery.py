"""Owned background work: every job the driver starts reports back exactly once.

Trio's discipline with threads: a job is started only through :meth:`Nursery.start`,
which takes the job and what to report if it raises. Whatever the job does (returns,
raises ``OSError(ENOSPC)`` from an audit write, raises ``SystemExit``), exactly one
result reaches the report callback, so the driver never waits for a job that vanished.
The nursery knows what is still in flight, and :meth:`Nursery.close` waits for it only
up to a deadline: a job stuck in an uninterruptible call cannot keep the driver (or the
process, since the workers are daemon threads) alive. What such a job left running is
cleaned up by ``vigil resume``, which ends every process carrying the run's tag.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

R = TypeVar("R")

_STOP = object()


class Job(Generic[R]):
    """One piece of work and the result to report if it raises instead of returning."""

    __slots__ = ("done", "key", "on_error", "run")

    def __init__(
        self, key: object, run: Callable[[], R], on_error: Callable[[BaseException], R]
    ) -> None:
        self.key = key
        self.run = run
        self.on_error = on_error
        self.done = False


class Nursery(Generic[R]):
    """A small pool of daemon worker threads that own every job they are handed."""

    def __init__(self, report: Callable[[R], None], *, name: str = "vigil-worker") -> None:
        self._report = report
        self._name = name
        self._queue: queue.SimpleQueue[Job[R] | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._workers: list[threading.Thread] = []
        self._in_flight: dict[int, Job[R]] = {}
        self._closed = False
        self._all_done = threading.Condition(self._lock)

    def start(
        self, key: object, run: Callable[[], R], on_error: Callable[[BaseException], R]
    ) -> None:
        """Run ``run()`` in a worker; report its result, or ``on_error(exc)`` if it raised."""
        job = Job(key, run, on_error)
        with self._lock:
            if self._closed:
                raise RuntimeError("the nursery is closed")
            self._in_flight[id(job)] = job
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        if spawn:
            worker = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._workers)}", daemon=True
            )
            self._workers.append(worker)
            worker.start()
        self._queue.put(job)

    def in_flight(self) -> list[object]:
        """Keys of the jobs started and not yet reported."""
        with self._lock:
            return [job.key for job in self._in_flight.values()]

    def abandon(self, key: object) -> None:
        """Stop waiting for the job ``key``: whatever it reports later is dropped."""
        with self._lock:
            for ident, job in list(self._in_flight.items()):
                if job.key == key:
                    job.done = True
                    del self._in_flight[ident]
            self._all_done.notify_all()

    def close(self, grace: float) -> list[object]:
        """Wait up to ``grace`` seconds for the jobs in flight; return the keys of those
        still running (abandoned: their late results are dropped)."""
        deadline = time.monotonic() + grace
        with self._lock:
            self._closed = True
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._all_done.wait(left)
            stuck = [job.key for job in self._in_flight.values()]
            for job in self._in_flight.values():
                job.done = True
            self._in_flight.clear()
        for _ in self._workers:
            self._queue.put(_STOP)
        return stuck

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Job)
            job: Job[R] = item
            try:
                result = job.run()
            except BaseException as exc:
                try:
                    result = job.on_error(exc)
                except BaseException as second:
                    result = job.on_error(RuntimeError(f"{exc!r}; then {second!r}"))
            self._finish(job, result)

    def _finish(self, job: Job[R], result: R) -> None:
        with self._lock:
            if job.done:
                self._idle += 1
                return
            job.done = True
            self._in_flight.pop(id(job), None)
            self._idle += 1
            # Report under the lock: a job is out of in_flight exactly when its result is
            # queued, so the driver never sees a job neither running nor reported.
            self._report(result)
            self._all_done.notify_all()
