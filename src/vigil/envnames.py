"""Which host environment variables reach a step: the allowlist every step gets, the
``pass_env`` patterns of ``vigil.toml`` and of a task, and vigil's own variables, which
none ever gets. Pure: the plan models check ``pass_env`` entries with it."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping, Sequence

# Enough for shells, compilers and test runners to behave normally; nothing that carries
# credentials (tokens, SSH agent sockets, cloud profiles). Steps get the rest explicitly.
ENV_ALLOWLIST = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "COLORTERM"}
    | {"NO_COLOR", "TZ"}
)
ENV_PREFIXES = ("LC_",)
NEVER_PASSED_PREFIX = "VIGIL_"
"""vigil's own variables (the configuration and state directories, the store's URL with
its password, the dashboard's token) reach no step, whatever ``pass_env`` says."""
ENV_PATTERN = r"^[A-Za-z0-9_*?]+$"
"""A ``pass_env`` entry: a variable name, or a glob of one with ``*`` and ``?``."""


def check_pass_env(patterns: Iterable[str]) -> None:
    """ValueError for a ``pass_env`` entry that is no name or glob, or that names vigil's
    own variables."""
    for pattern in patterns:
        if not re.fullmatch(ENV_PATTERN, pattern):
            raise ValueError(
                f"pass_env entry {pattern!r} is not a variable name or a glob of one "
                "(letters, digits, _, * and ?)"
            )
        if pattern.startswith(NEVER_PASSED_PREFIX):
            raise ValueError(
                f"pass_env entry {pattern!r}: {NEVER_PASSED_PREFIX}* variables are vigil's "
                "own and never passed to a step"
            )


def passed_env(
    allowed: Sequence[str],
    narrow: Sequence[str] | None = None,
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables of ``source`` (default: this process's environment) that the
    configuration's ``allowed`` patterns pass and, when ``narrow`` is given (a task's own
    ``pass_env``), that it names too; never one of vigil's own."""
    env = os.environ if source is None else source
    return {
        name: value
        for name, value in env.items()
        if not name.startswith(NEVER_PASSED_PREFIX)
        and any(fnmatch.fnmatchcase(name, p) for p in allowed)
        and (narrow is None or any(fnmatch.fnmatchcase(name, p) for p in narrow))
    }


def always_passed(name: str) -> bool:
    """Whether the allowlist passes ``name`` to every step."""
    return name in ENV_ALLOWLIST or name.startswith(ENV_PREFIXES)
