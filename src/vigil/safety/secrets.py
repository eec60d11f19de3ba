"""Secrets of a plan: where their values come from, and which task receives which.

A plan declares secrets by name (``{env: VAR}``, ``{file: path}`` or ``{command: ...}``); a
task lists the names it needs and receives exactly those, as environment variables of the
same name. Values are read by vigil, outside any sandbox, when the run starts; they are
never written to the store, and every log line passes through a :class:`Redactor` built
from them.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from vigil.errors import ExitCode, VigilError
from vigil.plan.models import Plan, SecretSource, Task
from vigil.safety.redact import MIN_LENGTH, Redactor

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretUnknown(VigilError):
    code = "VIGIL-SECRET-UNKNOWN"
    title = "a task asks for a secret the plan does not declare"
    remedy = "Declare it under `secrets:` in the plan, or remove it from the task."
    exit_code = ExitCode.USAGE


class SecretUnavailable(VigilError):
    code = "VIGIL-SECRET-UNAVAILABLE"
    title = "a secret's value could not be read"
    remedy = "Set the variable, create the file or fix the command named in the message."
    exit_code = ExitCode.USAGE


def check_secret_names(plan: Plan) -> None:
    """Every secret name is an environment variable name, and every task's secret exists."""
    for name in plan.secrets:
        if not NAME.match(name):
            raise SecretUnknown(f"secret name '{name}' is not a valid environment variable name")
    for _, task in plan.tasks():
        for name in task.secrets:
            if name not in plan.secrets:
                raise SecretUnknown(
                    f"task {task.id} asks for secret '{name}', which is not declared"
                )


def _read(name: str, source: SecretSource, workspace: Path, environ: Mapping[str, str]) -> str:
    if source.env is not None:
        if source.env not in environ:
            raise SecretUnavailable(f"secret '{name}': variable {source.env} is not set")
        return environ[source.env]
    if source.file is not None:
        path = (workspace / Path(source.file).expanduser()).resolve()
        try:
            return path.read_text().removesuffix("\n")
        except OSError as exc:
            raise SecretUnavailable(
                f"secret '{name}': cannot read {path}: {exc.strerror}"
            ) from None
    assert source.command is not None
    try:
        done = subprocess.run(
            source.command,
            shell=True,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=workspace,
            env=dict(environ),
        )
    except subprocess.TimeoutExpired:
        raise SecretUnavailable(f"secret '{name}': command timed out after 60s") from None
    if done.returncode != 0:
        # stderr may echo the value; say only that it failed.
        raise SecretUnavailable(f"secret '{name}': command exited with {done.returncode}")
    return done.stdout.removesuffix("\n")


def resolve_secrets(
    plan: Plan, workspace: Path, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The value of every secret the plan declares."""
    check_secret_names(plan)
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name, source in plan.secrets.items():
        value = _read(name, source, workspace, env)
        if len(value) < MIN_LENGTH:
            raise SecretUnavailable(
                f"secret '{name}' is shorter than {MIN_LENGTH} characters and could not be masked"
            )
        values[name] = value
    return values


def secrets_for(task: Task, values: Mapping[str, str]) -> dict[str, str]:
    """The environment variables ``task`` receives: only the secrets it lists."""
    return {name: values[name] for name in task.secrets if name in values}


def redactor_for(values: Mapping[str, str]) -> Redactor:
    """A redactor masking every resolved secret value."""
    return Redactor(values.values())
