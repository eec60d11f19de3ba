"""Configuration: ``vigil.toml`` in the project, ``~/.config/vigil/config.toml`` for the
user, ``VIGIL_*`` environment variables over both.

The file is read once into plain data; each subsystem validates its own section with its
own pydantic model through :meth:`Config.section`, so adding a section touches no other
code.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from vigil.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

PROJECT_FILE = "vigil.toml"
STATE_DIR_NAME = ".vigil"


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
    by identity, not whatever it points to), so a linked policy file is refused.
    """
    from vigil.workspace.beneath import Blocked, Tree

    try:
        with Tree(workspace) as tree:
            fd = tree.open_file(PROJECT_FILE)
    except FileNotFoundError:
        return {}
    except Blocked as exc:
        raise ConfigError(
            f"{workspace / PROJECT_FILE} is a {exc.what}, not a regular file",
            f"Replace the link with the file itself: vigil reads policy only from "
            f"{PROJECT_FILE} in the project, never through a link a step might redirect.",
        ) from None
    with open(fd, "rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"{workspace / PROJECT_FILE} is not valid TOML: {exc}",
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


def load_config(workspace: Path) -> Config:
    """Read user and project configuration for ``workspace``."""
    workspace = workspace.resolve()
    user_file = user_config_dir() / "config.toml"
    project_file = workspace / PROJECT_FILE
    data = _merge(_read_toml(user_file), _read_project_toml(workspace))
    sources = tuple(p for p in (user_file, project_file) if p.exists())
    return Config(workspace=workspace, data=data, sources=sources)
