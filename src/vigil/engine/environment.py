"""What of the host's environment a run's network tasks do not get, named at its start.

A task with the network that misses ``PIP_INDEX_URL`` or a proxy variable quietly goes to
the public internet instead of the company's mirror; vigil names (never shows the values
of) the host variables such tasks will not get, so a person can pass them with
``[workspace] pass_env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from vigil.config import Config
from vigil.envnames import NEVER_PASSED_PREFIX, always_passed, passed_env
from vigil.plan.models import Plan
from vigil.workspace.settings import WorkspaceSection

# A shell's own bookkeeping: no tool reads it from its parent, naming it helps nobody.
_SHELL_NOISE = frozenset({"_", "PWD", "OLDPWD", "SHLVL"})


@dataclass(frozen=True)
class Withheld:
    """Host variables that tasks with the network do not get."""

    tasks: tuple[str, ...]
    """The tasks that declare or need the network, in plan order."""
    names: tuple[str, ...]
    """Host variables at least one of them does not get, sorted."""

    def line(self) -> str:
        """One line for the start of a run (names only, never values)."""
        shown = ", ".join(self.tasks[:5]) + (" ..." if len(self.tasks) > 5 else "")
        return (
            f"withheld from tasks with the network ({shown}): {', '.join(self.names)}; "
            "pass what they need with [workspace] pass_env in vigil.toml"
        )


def network_tasks(plan: Plan, config: Config) -> list[str]:
    """Tasks that declare the network (theirs, their phase's, or their action's need)."""
    from vigil.engine.authority import action_capabilities

    return [
        task.id
        for phase, task in plan.tasks()
        if "network" in (*task.requires, *phase.requires, *action_capabilities(task, config))
    ]


def withheld_from_network(
    config: Config, plan: Plan, environ: Mapping[str, str] | None = None
) -> Withheld | None:
    """The host variables (of ``environ``, default this process's) that some task with the
    network will not get; None when no task has the network or nothing is withheld."""
    tasks = network_tasks(plan, config)
    if not tasks:
        return None
    env = os.environ if environ is None else environ
    allowed = config.section("workspace", WorkspaceSection).pass_env
    host = {
        name
        for name in env
        if not always_passed(name)
        and not name.startswith(NEVER_PASSED_PREFIX)
        and name not in _SHELL_NOISE
    }
    missing: set[str] = set()
    for task_id in tasks:
        task = plan.task(task_id)
        given = set(passed_env(allowed, task.pass_env, env)) | set(plan.env) | set(task.env)
        missing |= host - given - set(task.secrets)
    if not missing:
        return None
    return Withheld(tuple(tasks), tuple(sorted(missing)))
