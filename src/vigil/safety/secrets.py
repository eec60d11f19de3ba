"""Secrets: where their values come from is a person's decision; which task gets which is
the plan's.

Sources are declared only in the project's ``vigil.toml``, which steps cannot change::

    [secrets]
    API_TOKEN = { env = "SHOP_API_TOKEN" }
    DB_PASSWORD = { file = "~/.secrets/db" }
    NPM_TOKEN = { command = "pass show npm/token", pass_env = ["PASSWORD_STORE_DIR"] }

A plan only names secrets (``secrets: [NPM_TOKEN]`` on a task); a plan that says where a
value comes from is refused when it is loaded (``VIGIL-PLAN-SECRET-SOURCE``). A task
receives exactly the secrets it names, as environment variables of the same name. Values
are read by vigil, outside any sandbox, when the driver starts, and only those the plan
names; each read is audited (name and kind of source, never the value), values are never
written to the store, and every log line passes through a :class:`Redactor` built from them.

How each kind is read:

- ``env``: a variable of vigil's own environment.
- ``file``: a regular file of at most :data:`MAX_SECRET_BYTES`, never waited on (no FIFO
  or device). A relative path (or one inside the workspace) is read beneath the
  workspace without following a link in any component; any other path may pass through
  links the person made. Either way it is refused (``VIGIL-PATH-REFUSED``) when it is, or
  lies in, a hidden path, or is under any name (a hard link) a file of the user
  configuration directory, the store, the audit log or ``vigil.toml``.
- ``command``: run by ``sh -c`` in the user's home directory (never the workspace, whose
  files steps change), with only the environment steps get (:data:`ENV_ALLOWLIST`) plus
  the variables ``pass_env`` names, for at most :data:`COMMAND_TIMEOUT` seconds; its
  standard output, without the last newline, is the value.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from vigil.errors import ExitCode, VigilError
from vigil.plan.models import Plan, Task
from vigil.safety.redact import MIN_LENGTH, Redactor

if TYPE_CHECKING:
    from vigil.workspace.hidden import Hidden

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SECRET_BYTES = 64 * 1024
"""A secret larger than this is refused: it is a file named by mistake, not a secret."""
COMMAND_TIMEOUT = 60.0
"""Seconds a ``command`` source may take."""

SourceKind = Literal["env", "file", "command"]


class SecretSource(BaseModel):
    """Where one secret's value comes from: exactly one of ``env``, ``file``, ``command``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = Field(None, min_length=1, description="variable of vigil's environment")
    file: str | None = Field(None, min_length=1, description="file holding the value")
    command: str | None = Field(None, min_length=1, description="command printing the value")
    pass_env: tuple[str, ...] = Field(
        default=(), description="variables of vigil's environment the command also receives"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        given = [k for k in ("env", "file", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a secret has exactly one of 'env', 'file' or 'command'")
        if self.pass_env and self.command is None:
            raise ValueError("'pass_env' goes with 'command' only")
        for name in self.pass_env:
            if not NAME.match(name):
                raise ValueError(f"pass_env entry {name!r} is not an environment variable name")
        return self

    @property
    def kind(self) -> SourceKind:
        """Which kind of source this is."""
        if self.env is not None:
            return "env"
        return "file" if self.file is not None else "command"


class SecretsConfig(RootModel[dict[str, SecretSource]]):
    """``[secrets]`` in ``vigil.toml``: every secret a plan of the project may name."""

    root: dict[str, SecretSource] = Field(default_factory=dict)

    @field_validator("root")
    @classmethod
    def _names(cls, value: dict[str, SecretSource]) -> dict[str, SecretSource]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(f"secret name {name!r} is not an environment variable name")
        return value


class SecretUnknown(VigilError):
    code = "VIGIL-SECRET-UNKNOWN"
    title = "a task asks for a secret vigil.toml does not declare"
    remedy = "Declare it under [secrets] in vigil.toml, or remove it from the task."
    exit_code = ExitCode.USAGE


class SecretUnavailable(VigilError):
    code = "VIGIL-SECRET-UNAVAILABLE"
    title = "a secret's value could not be read"
    remedy = (
        "Set the variable, create the file or fix the command that [secrets] in vigil.toml "
        "names for it."
    )
    exit_code = ExitCode.USAGE


def check_secret_names(plan: Plan, declared: Mapping[str, SecretSource]) -> None:
    """Every secret a task names is declared in ``[secrets]``; before anything runs."""
    for _, task in plan.tasks():
        for name in task.secrets:
            if name not in declared:
                raise SecretUnknown(
                    f"task {task.id} asks for secret '{name}', which [secrets] in vigil.toml "
                    "does not declare",
                    f'Add it to vigil.toml, e.g.:  [secrets]  {name} = {{ env = "{name}" }}'
                    if NAME.match(name)
                    else "Name secrets with letters, digits and '_' only.",
                )


def _read_file(name: str, spec: str, workspace: Path, hidden: Hidden) -> bytes:
    from vigil.workspace.hidden import read_beneath, read_host_file

    what = f"secret '{name}': file"
    path = Path(spec).expanduser()
    root = workspace.resolve()
    if path.is_absolute():
        normal = Path(os.path.normpath(path))
        if normal != root and root not in normal.parents:
            return read_host_file(normal, hidden, limit=MAX_SECRET_BYTES, what=what)
        spec = normal.relative_to(root).as_posix()
    return read_beneath(root, spec, hidden, limit=MAX_SECRET_BYTES, what=what)


def _run_command(name: str, source: SecretSource, environ: Mapping[str, str]) -> bytes:
    from vigil.workspace.spawn import reduced_env

    env = reduced_env({}, environ)
    env.update({k: environ[k] for k in source.pass_env if k in environ})
    assert source.command is not None
    proc = subprocess.Popen(
        ["/bin/sh", "-c", source.command],
        cwd=Path.home(),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # it may echo the value; say only that it failed
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise SecretUnavailable(
            f"secret '{name}': command timed out after {COMMAND_TIMEOUT:.0f}s"
        ) from None
    if proc.returncode != 0:
        raise SecretUnavailable(f"secret '{name}': command exited with {proc.returncode}")
    if len(out) > MAX_SECRET_BYTES:
        raise SecretUnavailable(
            f"secret '{name}': command printed more than {MAX_SECRET_BYTES} bytes"
        )
    return out


def read_secret(
    name: str,
    source: SecretSource,
    *,
    workspace: Path,
    hidden: Hidden,
    environ: Mapping[str, str],
) -> str:
    """The value of one declared secret (a trailing newline dropped)."""
    if source.env is not None:
        if source.env not in environ:
            raise SecretUnavailable(f"secret '{name}': variable {source.env} is not set")
        return environ[source.env]
    if source.file is not None:
        try:
            raw = _read_file(name, source.file, workspace, hidden)
        except ValueError as exc:
            raise SecretUnavailable(str(exc)) from None
        except OSError as exc:
            raise SecretUnavailable(
                f"secret '{name}': cannot read {source.file}: {exc.strerror or exc}"
            ) from None
    else:
        raw = _run_command(name, source, environ)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretUnavailable(f"secret '{name}': the value is not UTF-8 text") from None
    return text.removesuffix("\n")


Recorder = Callable[[str, SecretSource, VigilError | None], None]
"""Told of each read: the secret's name, its source, and the error if it failed."""


def resolve_secrets(
    names: Iterable[str],
    declared: Mapping[str, SecretSource],
    *,
    workspace: Path,
    hidden: Hidden,
    environ: Mapping[str, str] | None = None,
    record: Recorder | None = None,
) -> dict[str, str]:
    """The values of the declared secrets among ``names`` (others are left out)."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name in sorted(set(names)):
        source = declared.get(name)
        if source is None:
            continue
        try:
            value = read_secret(name, source, workspace=workspace, hidden=hidden, environ=env)
            if len(value) < MIN_LENGTH:
                raise SecretUnavailable(
                    f"secret '{name}' is shorter than {MIN_LENGTH} characters and could not "
                    "be masked"
                )
        except VigilError as exc:
            if record is not None:
                record(name, source, exc)
            raise
        if record is not None:
            record(name, source, None)
        values[name] = value
    return values


def secrets_for(task: Task, values: Mapping[str, str]) -> dict[str, str]:
    """The environment variables ``task`` receives: only the secrets it lists."""
    return {name: values[name] for name in task.secrets if name in values}


def redactor_for(values: Mapping[str, str]) -> Redactor:
    """A redactor masking every resolved secret value."""
    return Redactor(values.values())
