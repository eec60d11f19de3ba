"""What the engine passes to ``subprocess.Popen`` for one command of an attempt."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.envnames import ENV_ALLOWLIST as ENV_ALLOWLIST
from vigil.envnames import ENV_PREFIXES as ENV_PREFIXES

# Re-exported: the sandboxes drop their attempt directories with it.
from vigil.workspace.removal import remove_tree as remove_tree

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
    # Descriptors the child inherits, and what the spawner calls right after the spawn
    # with the child's pid (None if spawning failed): the sandbox moving its processes
    # into the attempt's cgroup before the step starts. Every spawner must honour both
    # (start() and run() below, executors.process.run_process): without them bubblewrap
    # cannot report its sandbox and fails. Such a spec is for one spawn only.
    pass_fds: tuple[int, ...] = ()
    started: Callable[[int | None], None] | None = None


def start(spec: SpawnSpec, **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` for ``spec``, with its ``pass_fds`` and ``started`` honoured
    (``popen``: further Popen arguments, such as ``stdout``, or another ``env``)."""
    options = {"env": spec.env, "cwd": spec.cwd, **popen}
    try:
        proc: subprocess.Popen[Any] = subprocess.Popen(spec.argv, pass_fds=spec.pass_fds, **options)
    except BaseException:
        if spec.started is not None:
            spec.started(None)
        raise
    if spec.started is not None:
        try:
            spec.started(proc.pid)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return proc


def run(
    spec: SpawnSpec,
    *,
    input: Any = None,
    timeout: float | None = None,
    capture_output: bool = False,
    **popen: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` for ``spec``: :func:`start`, then wait for it to end."""
    if capture_output:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if input is not None:
        popen["stdin"] = subprocess.PIPE
    with start(spec, **popen) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            exc.stdout, exc.stderr = proc.communicate()
            raise
        except BaseException:
            proc.kill()
            raise
    return subprocess.CompletedProcess(spec.argv, proc.returncode, out, err)


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
