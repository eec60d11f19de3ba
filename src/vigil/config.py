"""Configuration: ``vigil.toml`` in the project, ``~/.config/vigil/config.toml`` for the
user, ``VIGIL_*`` environment variables over both.

Each section has a pydantic model, named in :data:`SECTIONS` (a dotted path, so this
module imports no subsystem). :func:`load_config` checks every file against those models
when it reads it: an unknown section or key (with the nearest known name) or a wrongly
typed value is a VIGIL-CONFIG error naming the file, never a silent default. Adding a
section is one line in :data:`SECTIONS`; adding a key is one field on its model.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from vigil.errors import ConfigError, ExitCode, VigilError
from vigil.layout import secure_state_dir

M = TypeVar("M", bound=BaseModel)

PROJECT_FILE = "vigil.toml"
STATE_DIR_NAME = ".vigil"


class WorkspaceMissing(VigilError):
    code = "VIGIL-WORKSPACE-MISSING"
    title = "the workspace directory does not exist or is not a directory"
    remedy = "Check the --workspace path for a typo, or add --create to make a new workspace."
    exit_code: ClassVar[ExitCode] = ExitCode.USAGE


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSettings(_Section):
    """``[store]``: where runs are kept (``VIGIL_DATABASE_URL`` overrides)."""

    url: str | None = Field(None, min_length=1)


class PlansSettings(_Section):
    """``[plans]``: where ``vigil plans list`` looks for plans and runbooks."""

    dirs: list[str] = Field(default_factory=lambda: ["plans", "runbooks"])


class AuditSettings(_Section):
    """``[audit]``: the audit log."""

    fsync: bool = True


SECTIONS: Final[dict[str, str]] = {
    "store": "vigil.config:StoreSettings",
    "plans": "vigil.config:PlansSettings",
    "workspace": "vigil.workspace.settings:WorkspaceSection",
    "audit": "vigil.config:AuditSettings",
    "policy": "vigil.safety.policy:PolicyConfig",
    "secrets": "vigil.safety.secrets:SecretsConfig",
    "notify": "vigil.notify:NotifySettings",
    "slo": "vigil.report.slo:SloTargets",
    "agents": "vigil.actions.specs:AgentsConfig",
    "llm": "vigil.actions.specs:LlmConfig",
    "budget": "vigil.actions.specs:BudgetConfig",
}
"""Every section of vigil.toml and the model that checks it (``module:Class``)."""

PROJECT_ONLY: Final[frozenset[str]] = frozenset({"secrets"})
"""Sections only the project's vigil.toml may hold: where a secret comes from is decided
per project, in the file steps cannot change, never once for every workspace."""


def section_model(name: str) -> type[BaseModel]:
    """The model of section ``[name]``."""
    module, _, attr = SECTIONS[name].partition(":")
    model = getattr(importlib.import_module(module), attr)
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


def _nearest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds directly (``Model``, ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None and get_origin(annotation) not in (dict, list, tuple):
        models = [m for m in map(_model_of, get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def _mapped_model(annotation: Any) -> type[BaseModel] | None:
    """The model of the values of a ``dict[str, Model]`` field, if it is one."""
    if get_origin(annotation) is dict:
        args = get_args(annotation)
        return _model_of(args[1]) if len(args) == 2 else None
    return None


def unknown_keys(model: type[BaseModel], data: Any, where: str) -> list[str]:
    """Keys in ``data`` that ``model`` (and the models nested in it) do not define."""
    if not isinstance(data, Mapping):
        return []
    if issubclass(model, RootModel):
        inner = model.model_fields["root"].annotation
        mapped = _mapped_model(inner)
        if mapped is None:
            return []
        return [p for k, v in data.items() for p in unknown_keys(mapped, v, f"{where}.{k}")]
    fields = model.model_fields
    by_name = {f.alias or n: f for n, f in fields.items()} | dict(fields)
    problems: list[str] = []
    for key, value in data.items():
        spec = by_name.get(key)
        if spec is None:
            problems.append(f"unknown key {where}.{key}{_nearest(key, sorted(by_name))}")
            continue
        nested = _model_of(spec.annotation)
        if nested is not None:
            problems += unknown_keys(nested, value, f"{where}.{key}")
            continue
        mapped = _mapped_model(spec.annotation)
        if mapped is not None and isinstance(value, Mapping):
            for k, v in value.items():
                problems += unknown_keys(mapped, v, f"{where}.{key}.{k}")
    return problems


def check_config(data: Mapping[str, Any], source: Path) -> None:
    """Refuse unknown sections and keys and wrongly typed values in one file's data."""
    problems: list[str] = []
    for name, raw in data.items():
        if name not in SECTIONS:
            problems.append(f"unknown section [{name}]{_nearest(name, sorted(SECTIONS))}")
            continue
        if not isinstance(raw, Mapping):
            problems.append(f"{name} must be a table ([{name}]), not a single value")
            continue
        model = section_model(name)
        problems += unknown_keys(model, raw, name)
        if problems:
            continue
        try:
            model.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                path = ".".join(str(p) for p in (name, *error["loc"]))
                problems.append(f"{path}: {error['msg']}")
    if problems:
        raise ConfigError(
            f"{source}: {problems[0]}",
            f"Fix {source.name}; `vigil explain VIGIL-CONFIG` and the README list every "
            "section and key.",
            details=problems[1:],
        )


def whoami() -> str:
    """The person (or account) running vigil, for journals and the audit log."""
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def user_config_dir() -> Path:
    """Where the user's keys, grants and config live (``VIGIL_CONFIG_DIR`` overrides)."""
    explicit = os.environ.get("VIGIL_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vigil"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", "Fix the syntax error at the position shown."
        ) from exc


def _read_project_toml(workspace: Path) -> dict[str, Any]:
    """``vigil.toml`` read without following a link: policy comes only from the file itself.

    A symbolic link could point at a file a step may write (vigil protects ``vigil.toml``
    by identity, not whatever it points to), so a linked or non-regular policy file is
    refused. ``workspace`` is already resolved, and the file is one component below it, so
    ``O_NOFOLLOW`` on that component is the whole walk.
    """
    path = workspace / PROJECT_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
        raise ConfigError(
            f"{path} is a symbolic link, not a regular file",
            f"Replace the link with the file itself: vigil reads policy only from "
            f"{PROJECT_FILE} in the project, never through a link a step might redirect.",
        ) from None
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise ConfigError(
                f"{path} is not a regular file",
                f"Make {PROJECT_FILE} a plain file in the project directory.",
            )
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{path} is not valid TOML: {exc}",
                "Fix the syntax error at the position shown.",
            ) from exc


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Config:
    """The effective configuration for one workspace."""

    workspace: Path
    data: dict[str, Any] = field(default_factory=dict)
    sources: tuple[Path, ...] = ()

    @property
    def state_dir(self) -> Path:
        """vigil's own files for this workspace (store, changesets, logs)."""
        explicit = os.environ.get("VIGIL_STATE_DIR")
        return Path(explicit) if explicit else self.workspace / STATE_DIR_NAME

    @property
    def database_url(self) -> str:
        """The store: ``VIGIL_DATABASE_URL``, ``[store] url``, or SQLite in the state dir."""
        url = os.environ.get("VIGIL_DATABASE_URL") or self.data.get("store", {}).get("url")
        if url:
            return str(url)
        return f"sqlite:///{self.state_dir / 'vigil.db'}"

    def settings(self, name: str) -> Any:
        """Section ``[name]`` validated by its model in :data:`SECTIONS`."""
        return self.section(name, section_model(name))

    def section(self, name: str, model: type[M]) -> M:
        """Section ``[name]`` validated by ``model``; a bad value is a VIGIL-CONFIG error."""
        raw = self.data.get(name, {})
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in (name, *first["loc"]))
            raise ConfigError(
                f"{where}: {first['msg']}", f"Fix [{name}] in {PROJECT_FILE}."
            ) from exc


def check_workspace(workspace: Path, *, create: bool = False) -> Path:
    """``workspace`` resolved; a missing one is refused unless ``create``, then made."""
    workspace = workspace.expanduser().resolve()
    if workspace.is_dir():
        return workspace
    if workspace.exists():
        raise WorkspaceMissing(
            f"the workspace {workspace} is a file, not a directory",
            "Give --workspace the project's directory, not a file in it.",
        )
    if not create:
        raise WorkspaceMissing(f"the workspace {workspace} does not exist")
    try:
        workspace.mkdir(parents=True)
    except OSError as exc:
        raise WorkspaceMissing(
            f"cannot create the workspace {workspace}: {exc.strerror or exc}",
            "Choose a path you can write, or create the directory first.",
        ) from exc
    return workspace


def load_config(workspace: Path, *, create: bool = False) -> Config:
    """Read user and project configuration for ``workspace``, checking both files.

    A missing workspace is refused (VIGIL-WORKSPACE-MISSING) unless ``create`` is set.
    """
    workspace = check_workspace(workspace, create=create)
    user_file = user_config_dir() / "config.toml"
    project_file = workspace / PROJECT_FILE
    user_data, project_data = _read_toml(user_file), _read_project_toml(workspace)
    check_config(user_data, user_file)
    for name in sorted(PROJECT_ONLY & set(user_data)):
        raise ConfigError(
            f"{user_file}: [{name}] belongs in the project's {PROJECT_FILE}, not in the "
            "user configuration",
            f"Move [{name}] into {project_file}; each project declares its own.",
        )
    check_config(project_data, project_file)
    data = _merge(user_data, project_data)
    sources = tuple(p for p in (user_file, project_file) if p.exists())
    config = Config(workspace=workspace, data=data, sources=sources)
    secure_state_dir(config.state_dir)  # an older vigil left it readable by everyone
    return config
