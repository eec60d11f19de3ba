"""The run store: one summary row per run and its append-only journal of events.

A :class:`Store` keeps two long-lived connections: a writer whose transactions take the
database's write lock up front (``BEGIN IMMEDIATE`` on SQLite) and a reader for queries.
It is safe to share between threads of one process (calls are serialised); each process
opens its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from vigil.errors import RunNotFound, StoreError, StoreRefused
from vigil.layout import make_state_dir
from vigil.store import migrate
from vigil.store.connect import (
    WRITE_OPTION,
    Target,
    create_engine,
    damaged,
    parse_target,
    sqlite_synchronous_from_env,
    store_errors,
)
from vigil.store.history import history_in
from vigil.store.locks import (
    AdvisoryRunLock,
    FileRunLock,
    RunLock,
    advisory_lock_held,
    file_lock_held,
)
from vigil.store.protocol import EventEntry
from vigil.store.records import (
    RUN_ID_PATTERN,
    RUN_STATES,
    AuditHead,
    Halt,
    NewRun,
    RunRecord,
    StoredEvent,
)
from vigil.store.schema import audit_heads, halts, run_plans, runs
from vigil.store.schema import events as events_table


def _dumps(value: Mapping[str, Any]) -> str:
    # Strict JSON (no NaN) so every reader, in any language, can parse the journal.
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if not text.isascii() and not _encodes(text):
        # Lone surrogates (undecodable file names) cannot go to the database as UTF-8;
        # \u escapes carry them and still load back to the same str.
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_state(state: str) -> None:
    if state not in RUN_STATES:
        raise ValueError(f"unknown run state {state!r}")


def _check_text(name: str, value: str, max_length: int | None = None) -> None:
    # Checked here because the backends differ: PostgreSQL refuses NUL and over-long
    # VARCHARs, SQLite stores both. Refusing them up front keeps the two identical.
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")
    if not value.isascii() and not _encodes(value):
        raise ValueError(f"{name} is not valid Unicode text")
    if max_length is not None and not 0 < len(value) <= max_length:
        raise ValueError(f"{name} must be 1 to {max_length} characters, got {len(value)}")


class _Undecodable(Exception):
    """A row the database returned that is not what vigil wrote (a damaged store)."""


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Undecodable(f"text expected, found {type(value).__name__}")
    return value


def _optional_number(value: object) -> float | None:
    return None if value is None else _number(value)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Undecodable(f"number expected, found {type(value).__name__}")
    return float(value)


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Undecodable(f"integer expected, found {type(value).__name__}")
    return value


def _object(value: object) -> dict[str, Any]:
    try:
        loaded = json.loads(_text(value))
    except ValueError as exc:
        raise _Undecodable(f"invalid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise _Undecodable("a JSON object expected")
    return loaded


def _record(row: sa.Row[Any]) -> RunRecord:
    m = row._mapping
    state = _text(m["state"])
    if state not in RUN_STATES:
        raise _Undecodable(f"unknown run state {state!r}")
    return RunRecord(
        id=_text(m["id"]),
        plan_name=_text(m["plan_name"]),
        project=_text(m["project"]),
        plan_hash=_text(m["plan_hash"]),
        plan_json=_text(m["plan_json"]),
        plan_path=_text(m["plan_path"]),
        workspace=_text(m["workspace"]),
        options=_object(m["options"]),
        state=state,
        created_at=_number(m["created_at"]),
        started_at=_optional_number(m["started_at"]),
        ended_at=_optional_number(m["ended_at"]),
        updated_at=_number(m["updated_at"]),
        last_seq=_integer(m["last_seq"]),
    )


def _event(row: sa.Row[Any]) -> StoredEvent:
    return StoredEvent(
        run_id=_text(row.run_id),
        seq=_integer(row.seq),
        kind=_text(row.kind),
        data=_object(row.data),
        at=_number(row.at),
    )


_ID_LIMIT = 200
_KIND_LIMIT = 100
_RUN_TEXT_LIMITS: dict[str, int | None] = {
    "id": _ID_LIMIT,
    "plan_name": None,
    "project": None,
    "plan_hash": 128,
    "plan_json": None,
    "plan_path": None,
    "workspace": None,
}


_RUN_WITH_PLAN = sa.select(runs, run_plans.c.plan_json).join(
    run_plans, run_plans.c.run_id == runs.c.id
)


class Store:
    """Runs, their journals, and halts, in SQLite or PostgreSQL."""

    def __init__(self, url: str, target: Target, engine: sa.Engine) -> None:
        self.url = url
        self._target = target
        self._engine = engine
        self._mutex = threading.RLock()
        self._reader: sa.Connection | None = None
        self._writer: sa.Connection | None = None
        with self._errors():
            self._reader = engine.connect()
            self._writer = engine.connect().execution_options(**{WRITE_OPTION: True})

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._target.backend

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, for messages and reports."""
        return self._target.display

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with self._mutex, store_errors(self._target):
            yield

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        with self._errors():
            conn = self._open(self._reader)
            try:
                with conn.begin():
                    yield conn
            except _Undecodable as exc:
                raise damaged(self._target, str(exc)) from exc

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self._errors():
            conn = self._open(self._writer)
            with conn.begin():
                yield conn

    @staticmethod
    def _open(conn: sa.Connection | None) -> sa.Connection:
        if conn is None:
            raise StoreError("the store is closed", "Open it again with open_store().")
        return conn

    def _upsert_dialect(self) -> Any:
        # INSERT .. ON CONFLICT is dialect-specific in SQLAlchemy; both backends have it.
        return postgresql if self._target.backend == "postgresql" else sqlite

    def _is_empty(self) -> bool:
        """Whether the database holds no tables at all (a store never created)."""
        with self._read() as conn:
            return not sa.inspect(conn).get_table_names()

    def _migrate(self) -> None:
        with self._errors():
            migrate.upgrade(self._open(self._reader), self._open(self._writer))

    def create_run(self, run: NewRun) -> bool:
        """Record a new run in state ``pending``; False (and no change) if the id exists."""
        for name, limit in _RUN_TEXT_LIMITS.items():
            _check_text(name, getattr(run, name), limit)
        if RUN_ID_PATTERN.fullmatch(run.id) is None:
            raise ValueError(f"run id {run.id!r} is not letters, digits, '_', '.', '-'")
        options = _dumps(run.options)
        values = {
            "id": run.id,
            "plan_name": run.plan_name,
            "project": run.project,
            "plan_hash": run.plan_hash,
            "plan_path": run.plan_path,
            "workspace": run.workspace,
            "options": options,
            "state": "pending",
            "created_at": run.created_at,
            "started_at": None,
            "ended_at": None,
            "updated_at": run.created_at,
            "last_seq": 0,
        }
        stmt = (
            self._upsert_dialect()
            .insert(runs)
            .values(values)
            .on_conflict_do_nothing()
            .returning(runs.c.id)
        )
        with self._write() as conn:
            # RETURNING, not rowcount: drivers disagree on rowcount for INSERT .. ON CONFLICT.
            if conn.execute(stmt).first() is None:
                return False
            conn.execute(run_plans.insert().values(run_id=run.id, plan_json=run.plan_json))
            return True

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run's summary row, or None."""
        with self._read() as conn:
            row = conn.execute(_RUN_WITH_PLAN.where(runs.c.id == run_id)).first()
            return None if row is None else _record(row)

    def list_runs(
        self,
        *,
        project: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Runs newest first, optionally of one project and in some states."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = _RUN_WITH_PLAN.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        if project is not None:
            query = query.where(runs.c.project == project)
        if states is not None:
            query = query.where(runs.c.state.in_(list(states)))
        with self._read() as conn:
            return [_record(row) for row in conn.execute(query)]

    def run_ids(
        self, *, prefix: str = "", workspace: str | None = None, limit: int = 10
    ) -> list[str]:
        """Ids of runs starting with ``prefix`` (of one workspace if given), newest first."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = (
            sa.select(runs.c.id).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit)
        )
        if prefix:
            # Not LIKE: SQLite's ignores case, and `_` and `%` would be wildcards.
            query = query.where(sa.func.substr(runs.c.id, 1, len(prefix)) == prefix)
        if workspace is not None:
            query = query.where(runs.c.workspace == workspace)
        with self._read() as conn:
            return [str(row[0]) for row in conn.execute(query)]

    def append(
        self,
        run_id: str,
        events: Sequence[EventEntry],
        *,
        at: float,
        state: str | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
    ) -> int:
        """Append events (all or none) and update the run's summary; returns the last seq.

        Seq numbers are allocated by bumping ``runs.last_seq`` in the same transaction, so
        concurrent appenders from several processes get consecutive, gap-free ranges. The
        events are durable when this returns.
        """
        for kind, _ in events:
            _check_text("event kind", kind, _KIND_LIMIT)
        # str(): a kind may be an enum member (vigil.engine.events.Kind); its text is stored.
        rows = [{"kind": str(kind), "data": _dumps(data), "at": at} for kind, data in events]
        summary: dict[str, Any] = {"updated_at": at, "last_seq": runs.c.last_seq + len(rows)}
        if state is not None:
            _check_state(state)
            summary["state"] = state
        if started_at is not None:
            summary["started_at"] = started_at
        if ended_at is not None:
            summary["ended_at"] = ended_at
        bump = runs.update().where(runs.c.id == run_id).values(summary).returning(runs.c.last_seq)
        with self._write() as conn:
            last = conn.execute(bump).scalar()
            if last is None:
                raise RunNotFound(f"no run {run_id!r} in {self.display_url}")
            first = last - len(rows) + 1
            for offset, row in enumerate(rows):
                row["run_id"] = run_id
                row["seq"] = first + offset
            if rows:
                conn.execute(events_table.insert(), rows)
        return int(last)

    def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        """The run's events with seq greater than ``after``, in seq order."""
        cols = events_table.c
        query = (
            sa.select(cols.seq, cols.kind, cols.data, cols.at)
            .where(events_table.c.run_id == run_id, events_table.c.seq > after)
            .order_by(events_table.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            # Rows unpacked as tuples, not read by attribute: a 10,000-task run has 30,000
            # events. Each field is still checked, so a damaged row is VIGIL-STORE.
            return [
                StoredEvent(run_id, _integer(seq), _text(kind), _object(data), _number(at))
                for seq, kind, data, at in conn.execute(query)
            ]

    def lock_run(self, run_id: str) -> RunLock:
        """Take the run's lock; raises RunLocked (naming the holder) if another has it."""
        with self._errors():
            if self._target.lock_dir is not None:
                return FileRunLock.acquire(self._target.lock_dir, run_id)
            return AdvisoryRunLock.acquire(self._engine, run_id)

    def run_lock_held(self, run_id: str) -> bool | None:
        """Whether a process holds the run's lock (so drives it), without taking the lock;
        None when that cannot be told."""
        if self._target.lock_dir is not None:
            return file_lock_held(self._target.lock_dir, run_id)
        with self._read() as conn:
            return advisory_lock_held(conn, run_id)

    def set_halt(
        self, project: str, reason: str, actor: str, at: float, statement: str | None = None
    ) -> None:
        """Halt ``project`` (``"*"`` for all), replacing any earlier halt or unhalt of it."""
        _check_text("project", project, _ID_LIMIT)
        _check_text("reason", reason)
        _check_text("actor", actor)
        values = {
            "project": project,
            "reason": reason,
            "actor": actor,
            "at": at,
            "statement": statement,
        }
        stmt = self._upsert_dialect().insert(halts).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[halts.c.project],
            set_={"reason": reason, "actor": actor, "at": at, "statement": statement},
        )
        with self._write() as conn:
            conn.execute(stmt)

    def lift_halt(self, project: str, statement: str) -> bool:
        """Keep the halt row of ``project`` as a tombstone holding the signed unhalt."""
        with self._write() as conn:
            stmt = (
                halts.update()
                .where(halts.c.project == project)
                .values(statement=statement)
                .returning(halts.c.project)
            )
            return conn.execute(stmt).first() is not None

    def clear_halt(self, project: str) -> bool:
        """Delete the halt row of ``project``; False if there was none."""
        with self._write() as conn:
            stmt = halts.delete().where(halts.c.project == project).returning(halts.c.project)
            return conn.execute(stmt).first() is not None

    def halts(self) -> list[Halt]:
        """Every halt row (halts and lifted tombstones), by project name."""
        with self._read() as conn:
            rows = conn.execute(sa.select(halts).order_by(halts.c.project))
            return [
                Halt(
                    _text(row.project),
                    _text(row.reason),
                    _text(row.actor),
                    _number(row.at),
                    row.statement,
                )
                for row in rows
            ]

    def set_audit_head(self, log: str, size: int, root: str, at: float) -> None:
        """Record the newest sealed size and root of the audit log ``log``."""
        values = {"log": log, "size": size, "root": root, "updated_at": at}
        stmt = self._upsert_dialect().insert(audit_heads).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[audit_heads.c.log],
            set_={"size": size, "root": root, "updated_at": at},
        )
        with self._write() as conn:
            conn.execute(stmt)

    def audit_head(self, log: str) -> AuditHead | None:
        """The recorded head of the audit log ``log``, if any."""
        with self._read() as conn:
            row = conn.execute(sa.select(audit_heads).where(audit_heads.c.log == log)).first()
            if row is None:
                return None
            return AuditHead(row.log, int(row.size), str(row.root), float(row.updated_at))

    def close(self) -> None:
        """Close the connections; locks taken from this store stay as they are."""
        with self._mutex:
            for conn in (self._reader, self._writer):
                if conn is not None:
                    conn.close()
            self._reader = self._writer = None
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"


def open_store(
    url: str,
    *,
    sqlite_synchronous: str | None = None,
    history: Path | None = None,
    new_store: bool = False,
) -> Store:
    """Open the store at ``url``, creating the SQLite directory and migrating to head.

    ``sqlite_synchronous`` overrides ``VIGIL_SQLITE_SYNCHRONOUS`` (FULL or NORMAL).
    ``history`` is the workspace's state directory: a missing or empty store beside the
    history of earlier runs there is refused (VIGIL-STORE, exit 4) unless ``new_store``.
    """
    target = parse_target(url)
    sync = sqlite_synchronous or sqlite_synchronous_from_env()
    found = [] if history is None or new_store else history_in(history)
    if found and target.sqlite_path is not None and _sqlite_missing(target.sqlite_path):
        raise _history_refusal(target, history, found)
    engine = create_engine(target, sqlite_synchronous=sync.upper())
    if (
        history is not None
        and target.sqlite_path is not None
        and target.sqlite_path.parent == history
    ):
        make_state_dir(history)  # created for the database: keep it out of `git status`
    try:
        store = Store(url, target, engine)
    except BaseException:
        engine.dispose()
        raise
    try:
        if found and store._is_empty():
            raise _history_refusal(target, history, found)
        store._migrate()
    except BaseException:
        store.close()
        raise
    return store


def _sqlite_missing(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False  # opening it reports the real problem (permission, not a file)


def _history_refusal(target: Target, state_dir: Path | None, found: list[str]) -> StoreRefused:
    kind = "missing or empty" if target.backend == "sqlite" else "empty"
    return StoreRefused(
        f"the store {target.display} is {kind}, but {state_dir} holds earlier runs "
        f"({', '.join(found)}); vigil will not start their history afresh",
        "Restore the store from a backup, point VIGIL_DATABASE_URL at the right one, or "
        "start a new store here with `vigil store init --force`.",
        failure="history-without-store",
    )
