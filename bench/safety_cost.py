"""Cost of the safety checks on the hot path: grant authorization and audit appends.

Run: ``python bench/safety_cost.py``. Prints microseconds per operation.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def per_op(fn: Callable[[], object], n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VIGIL_CONFIG_DIR"] = str(Path(tmp) / "config")
        from vigil.safety import tokens
        from vigil.safety.audit import AuditLog
        from vigil.safety.grants import create_grant, load_grant
        from vigil.safety.keys import init_key, trusted_keys
        from vigil.safety.policy import Requirement, authorize

        key = init_key()
        grant = create_grant(
            project="shop", environments=("prod",), capabilities=("deploy",), expires_in=3600
        )
        req = Requirement("deploy", "prod", "deploy", "shop")
        now = datetime.now(UTC)
        b64 = grant.token.to_base64()
        trusted = trusted_keys()
        verify_us = per_op(lambda: tokens.verify(b64, trusted), 2000)
        load_us = per_op(lambda: load_grant(grant.id), 1000)
        authorize_us = per_op(lambda: authorize(req, grant, now, None), 5000)
        print(f"verify token (signature, once per run): {verify_us:8.1f} us")
        print(f"load_grant (file + verify, once per run): {load_us:8.1f} us")
        print(f"authorize (per action: revocation + Datalog): {authorize_us:8.1f} us")

        for fsync in (False, True):
            log = AuditLog(Path(tmp) / f"audit-{fsync}" / "log.jsonl", key=key, fsync=fsync)
            n = 2000 if not fsync else 300
            cost = per_op(
                lambda log=log: log.append(
                    actor="a", action="deploy", decision="allow", reason="x"
                ),
                n,
            )
            print(f"audit append (fsync={fsync}, checkpoint every 256): {cost:8.1f} us")
        log = AuditLog(Path(tmp) / "audit-ck" / "log.jsonl", key=key, fsync=False)
        for _ in range(10_000):
            log.append(actor="a", action="deploy", decision="allow")
        print(f"checkpoint after 10k entries (incremental): {per_op(log.checkpoint, 50):8.1f} us")


if __name__ == "__main__":
    main()
