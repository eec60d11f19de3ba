"""What the engine passes to ``subprocess.Popen`` for one command of an attempt."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Re-exported: the sandboxes drop their attempt directories with it.
from vigil.workspace.removal import remove_tree as remove_tree

# Enough for shells, compilers and test runners to behave normally; nothing that carries
# credentials (tokens, SSH agent sockets, cloud profiles). Steps get the rest explicitly.
ENV_ALLOWLIST = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "COLORTERM"}
    | {"NO_COLOR", "TZ"}
)
ENV_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class SpawnSpec:
    """argv, environment and working directory for ``subprocess.Popen``."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    # argv[0] supervises the step (bubblewrap): it dies with its parent by itself and must
    # not be signalled before the step when stopping (see executors.process.run_process).
    supervisor: bool = False


def reduced_env(given: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allowlisted part of ``base`` (default: this process's environment) plus ``given``."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k in ENV_ALLOWLIST or k.startswith(ENV_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(given)
    return env


def resolve_cwd(root: Path, cwd: str | None) -> Path:
    """The absolute working directory for ``cwd`` relative to ``root``; it may not escape."""
    if cwd is None:
        return root
    candidate = (root / cwd).resolve() if not Path(cwd).is_absolute() else Path(cwd).resolve()
    if candidate != root and root not in candidate.parents:
        from vigil.errors import UsageError

        raise UsageError(f"working directory {cwd!r} is outside the workspace {root}")
    return candidate
