"""The run store: runs, their append-only journals, run locks and halts.

SQLAlchemy Core over SQLite (default, a file under the workspace's ``.vigil/``) or
PostgreSQL, with Alembic migrations applied by :func:`open_store`. See
``docs/adr/0002-store.md`` for why it is built this way.
"""

from vigil.store.locks import RunLock
from vigil.store.migrate import HEAD_REVISION
from vigil.store.protocol import EventEntry, RunStore
from vigil.store.records import ALL_PROJECTS, RUN_STATES, Halt, NewRun, RunRecord, StoredEvent
from vigil.store.store import Store, open_store

__all__ = [
    "ALL_PROJECTS",
    "HEAD_REVISION",
    "RUN_STATES",
    "EventEntry",
    "Halt",
    "NewRun",
    "RunLock",
    "RunRecord",
    "RunStore",
    "Store",
    "StoredEvent",
    "open_store",
]
