"""Retry delays: capped exponential backoff with deterministic jitter.

Jitter is derived from a hash of (run, task, attempt) rather than a random number so the
schedule is a pure function of the journal: a resumed run waits exactly as the original
would have, and tests can predict every delay.
"""

from __future__ import annotations

import hashlib

from vigil.plan.models import RetryPolicy


def unit_jitter(*key: object) -> float:
    """A stable pseudo-random number in [-1, 1] for ``key``."""
    digest = hashlib.sha256("\x1f".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**63 - 1.0


def retry_delay(policy: RetryPolicy, failures: int, *key: object) -> float:
    """Seconds to wait before the retry that follows the ``failures``-th failure (1-based)."""
    if failures < 1:
        return 0.0
    base = min(policy.max, policy.initial * policy.factor ** (failures - 1))
    spread = base * policy.jitter * unit_jitter(*key, failures)
    return max(0.0, min(policy.max * (1 + policy.jitter), base + spread))
