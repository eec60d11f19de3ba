"""What a drive tells the layers above the engine: each journalled batch, and the end.

The engine never imports notifications or reports (an import-linter contract in
``pyproject.toml`` keeps it so); they are plugged in here instead. The application
installs a :class:`HooksFactory` once (the ``vigil`` command installs
:func:`vigil.followup.follow_up` at start-up), and every run the process drives,
whichever library call drives it (start, resume, cancel, or an answer or a review that
resumes the run), opens hooks from it for that drive and closes them after. A process
that installs none drives runs without notifications or a written report.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from vigil.config import Config
    from vigil.engine.events import Event
    from vigil.engine.state import RunState
    from vigil.store import RunStore


class RunHooks(Protocol):
    """Told about one drive of one run."""

    def observe(self, events: Sequence[Event], state: RunState) -> None:
        """A batch of events is in the journal and folded into ``state``."""

    def ended(self, run_id: str) -> None:
        """The run has ended (succeeded, failed or cancelled) and is no longer driven."""


class HooksFactory(Protocol):
    """Opens the hooks of one drive; closing them may wait (a notifier drains)."""

    def __call__(self, config: Config, store: RunStore) -> AbstractContextManager[RunHooks]:
        """Hooks for a run of ``config``'s workspace kept in ``store``."""


class _Silent:
    """The hooks of a process that installed none."""

    def observe(self, events: Sequence[Event], state: RunState) -> None:
        """Nothing to tell."""

    def ended(self, run_id: str) -> None:
        """Nothing to do."""


class _Installed:
    factory: HooksFactory | None = None


def install(factory: HooksFactory | None) -> HooksFactory | None:
    """Open hooks from ``factory`` around every drive of this process (None: no hooks);
    returns the factory it replaces."""
    previous, _Installed.factory = _Installed.factory, factory
    return previous


@contextmanager
def installed(factory: HooksFactory | None) -> Iterator[None]:
    """:func:`install` ``factory`` for the block, then put the previous one back."""
    previous = install(factory)
    try:
        yield
    finally:
        install(previous)


def opened(config: Config, store: RunStore) -> AbstractContextManager[RunHooks]:
    """The hooks of one drive, from the installed factory (silent when there is none)."""
    factory = _Installed.factory
    if factory is None:
        return nullcontext(_Silent())
    return factory(config, store)
