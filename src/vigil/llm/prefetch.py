"""Model replies prepared ahead of time, used only if the workspace did not move on.

While earlier tasks run, the engine can ask for the replies of ``llm`` tasks about to
become ready. A reply is keyed by (task id, prompt hash, workspace fingerprint): the
prompt hash changes when the inputs the prompt was rendered from change, the fingerprint
when the files the task starts on do. :meth:`Prefetcher.take` hands a reply over only if
both match what the task actually starts with; a reply prepared from another fingerprint
is *stale* and discarded (and counted), unless the run allows stale prompts.

The prefetcher owns its worker threads; :meth:`Prefetcher.close` cancels what has not
started and joins the rest, so no call outlives the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class PrefetchStats:
    """What became of prepared replies."""

    submitted: int = 0
    used: int = 0
    stale_discarded: int = 0
    stale_used: int = 0
    mismatched: int = 0
    failed: int = 0


@dataclass
class _Job(Generic[T]):
    prompt_hash: str
    fingerprint: str
    future: Future[T]


class Prefetcher(Generic[T]):
    """Prepares replies on up to ``max_parallel`` owned threads."""

    def __init__(self, max_parallel: int = 2) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="vigil-prefetch")
        self._jobs: dict[str, _Job[T]] = {}
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(PrefetchStats.__dataclass_fields__, 0)
        self._closed = False

    def submit(
        self, task_id: str, prompt_hash: str, fingerprint: str, call: Callable[[], T]
    ) -> bool:
        """Start preparing ``task_id``'s reply with ``call``; False if one is already there."""
        with self._lock:
            if self._closed:
                return False
            job = self._jobs.get(task_id)
            if job and job.prompt_hash == prompt_hash and job.fingerprint == fingerprint:
                return False
            if job is not None:
                job.future.cancel()
            self._jobs[task_id] = _Job(prompt_hash, fingerprint, self._pool.submit(call))
            self._counts["submitted"] += 1
            return True

    def take(
        self,
        task_id: str,
        prompt_hash: str,
        fingerprint: str,
        *,
        allow_stale: bool = False,
        timeout: float | None = None,
    ) -> T | None:
        """The prepared reply if it fits this start of the task, else None (then call now).

        Waits for a matching call still in flight. The entry is removed either way: a
        reply is used at most once.
        """
        with self._lock:
            job = self._jobs.pop(task_id, None)
        if job is None:
            return None
        if job.prompt_hash != prompt_hash:
            job.future.cancel()
            self._count("mismatched")
            return None
        stale = job.fingerprint != fingerprint
        if stale and not allow_stale:
            job.future.cancel()
            self._count("stale_discarded")
            return None
        try:
            reply = job.future.result(timeout=timeout)
        except Exception:
            # The task makes the call itself and meets the real error there.
            self._count("failed")
            return None
        self._count("stale_used" if stale else "used")
        return reply

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def stats(self) -> PrefetchStats:
        """Counts so far."""
        with self._lock:
            return PrefetchStats(**self._counts)

    def close(self) -> None:
        """Cancel calls not started, wait for those running; idempotent."""
        with self._lock:
            self._closed = True
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            job.future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
