"""How long one ``Store.append`` takes: SQLite with synchronous NORMAL and FULL, and
PostgreSQL when reachable. Prints numbers; passes or fails nothing.

    python bench/store_append.py [--count 2000] [--batch 1] [--pg URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from vigil.errors import StoreError
from vigil.store import NewRun, Store, open_store


def measure(store: Store, count: int, batch: int) -> list[float]:
    """Seconds per append call, for ``count`` calls of ``batch`` events each."""
    run_id = uuid.uuid4().hex
    store.create_run(NewRun(run_id, "bench", "bench", "h", "{}", "p", "/w", time.time(), {}))
    payload = {"task": "build", "attempt": 1, "detail": "x" * 120}
    events = [("task.progress", payload)] * batch
    timings = []
    for _ in range(count):
        start = time.perf_counter()
        store.append(run_id, events, at=time.time(), state="running")
        timings.append(time.perf_counter() - start)
    return timings


def report(label: str, timings: list[float], batch: int) -> None:
    """Print mean, median and 99th percentile in milliseconds."""
    ms = sorted(t * 1000 for t in timings)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{label:<22} batch={batch:<3} n={len(ms):<6} mean={statistics.fmean(ms):7.3f} ms"
        f"  p50={statistics.median(ms):7.3f} ms  p99={p99:7.3f} ms"
        f"  ({len(ms) / (sum(ms) / 1000):8.0f} appends/s)"
    )


def main() -> None:
    """Run the benchmark for each backend."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("NORMAL", "FULL"):
            url = f"sqlite:///{Path(tmp) / sync / 'vigil.db'}"
            with open_store(url, sqlite_synchronous=sync) as store:
                measure(store, 50, args.batch)  # warm the statement cache
                report(f"sqlite {sync}", measure(store, args.count, args.batch), args.batch)
    try:
        with scratch_schema(args.pg) as url, open_store(url) as store:
            measure(store, 50, args.batch)
            report("postgresql", measure(store, args.count, args.batch), args.batch)
    except (StoreError, sa.exc.OperationalError) as exc:
        print(f"postgresql             skipped: {exc}")


@contextmanager
def scratch_schema(base_url: str) -> Iterator[str]:
    """A throwaway schema in ``base_url``'s database, so the benchmark leaves nothing."""
    schema = f"vigil_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            url = sa.make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


if __name__ == "__main__":
    main()
