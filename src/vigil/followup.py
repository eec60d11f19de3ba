"""What people get from a run as it goes: notifications of its events and, once it has
ended, its completion report written under the state directory.

These are the :class:`vigil.engine.hooks.RunHooks` the ``vigil`` command installs for
every run it drives; code that drives runs through the library installs them the same
way (``vigil.engine.hooks.install(follow_up)``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from vigil.config import Config
from vigil.notify import Notifier

if TYPE_CHECKING:
    from vigil.engine.events import Event
    from vigil.engine.state import RunState
    from vigil.store import RunStore


class FollowUp:
    """Notifications through ``notifier`` while a run is driven; its report at the end."""

    def __init__(self, config: Config, store: RunStore, notifier: Notifier) -> None:
        self.config = config
        self.store = store
        self.notifier = notifier

    def observe(self, events: Sequence[Event], state: RunState) -> None:
        """Notify about failures, escalations and the run's end."""
        self.notifier.observe(events, state)

    def ended(self, run_id: str) -> None:
        """Write the completion report (Markdown and JSON) of the run that ended."""
        from vigil.report import write_report

        write_report(self.config, self.store, run_id)


@contextmanager
def follow_up(config: Config, store: RunStore) -> Iterator[FollowUp]:
    """The follow-up of one drive; on exit the notifier delivers what it holds, then stops."""
    with Notifier.from_config(config) as notifier:
        yield FollowUp(config, store, notifier)
