"""How steps are confined: identity, limits and extra read-only paths (``[workspace]``)."""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from vigil.envnames import check_pass_env
from vigil.workspace.errors import SandboxUnavailable
from vigil.workspace.limits import WorkspaceConfig

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes from ``4096``, ``"512M"``, ``"4GiB"`` or ``"1g"``; 0 means no limit."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([kmgt]?)(?:i?b)?\s*", value.lower())
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512M or 4GiB)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _half_the_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 4 << 30


class SandboxSettings(BaseModel):
    """The sandbox part of ``[workspace]`` in ``vigil.toml`` (other keys are ignored here)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Host user steps run as when vigil runs as root (name or uid). Default: the owner
    # of the workspace, or ``nobody`` when root owns it. Never root.
    run_as: str | int | None = None
    # Processes and threads one command of a step may have at once (RLIMIT_NPROC,
    # counted in the sandbox's own user namespace); 0: no limit.
    max_processes: int = 1024
    # Data memory of each process (RLIMIT_DATA); "auto": half the machine's memory; 0: none.
    max_memory: int | str = "auto"
    # Size of each private tmpfs (/tmp, /dev/shm, /run, /var/tmp, HOME); 0: the kernel's.
    tmp_size: int | str = "1GiB"
    # Extra host directories steps may read (mounted read-only at the same path).
    read_only_paths: tuple[str, ...] = ()
    # Host directories steps may write, kept across attempts and runs and outside every
    # changeset (mounted read-write at the same path; ``~/`` is the home directory).
    # Checked by :func:`vigil.workspace.homefiles.check_caches`.
    caches: tuple[str, ...] = ()
    # Show the host's git configuration (~/.gitconfig, ~/.config/git/config) read-only.
    git_config: bool = True
    # Host environment variables steps get besides the allowlist: names or globs
    # ("PIP_*", "*_PROXY"); a task's own pass_env can only narrow them. Never VIGIL_*.
    pass_env: tuple[str, ...] = ()

    @field_validator("max_memory", "tmp_size")
    @classmethod
    def _size(cls, value: int | str) -> int | str:
        if value == "auto":
            return value
        parse_size(value)
        return value

    @field_validator("read_only_paths")
    @classmethod
    def _absolute(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not os.path.isabs(path):
                raise ValueError(f"read_only_paths entries must be absolute: {path!r}")
        return value

    @field_validator("caches")
    @classmethod
    def _cache_spelling(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            if not (os.path.isabs(path) or path == "~" or path.startswith("~/")):
                raise ValueError(f"caches entries must be absolute or start with ~/: {path!r}")
        return value

    @field_validator("pass_env")
    @classmethod
    def _env_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        check_pass_env(value)
        return value

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> SandboxSettings:
        """From the merged configuration's data (``[workspace]`` section)."""
        from vigil.config import PROJECT_FILE
        from vigil.errors import ConfigError

        try:
            return cls.model_validate(data.get("workspace", {}))
        except ValueError as exc:
            raise ConfigError(
                f"[workspace] in {PROJECT_FILE}: {exc}".splitlines()[0],
                f"Fix [workspace] in {PROJECT_FILE}.",
            ) from exc

    @property
    def memory_bytes(self) -> int:
        """The per-process memory limit in bytes (0: none)."""
        return _half_the_memory() if self.max_memory == "auto" else parse_size(self.max_memory)

    @property
    def tmp_bytes(self) -> int:
        """The size of each private tmpfs in bytes (0: the kernel's default)."""
        return parse_size(self.tmp_size) if self.tmp_size != "auto" else 0


class WorkspaceSection(SandboxSettings, WorkspaceConfig):
    """All of ``[workspace]``, as ``vigil.toml`` is checked against it: isolation, the
    sandbox's settings and the changeset limits. Each reader then takes its own part."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    isolation: Literal["auto", "overlay", "snapshot", "off"] = "auto"


@dataclass(frozen=True)
class Identity:
    """The host user and group steps run as."""

    uid: int
    gid: int
    name: str


def step_identity(run_as: str | int | None, workspace: Path) -> Identity | None:
    """Who steps run as on the host; None when vigil is not root (steps run as the caller,
    with no capabilities). A root-run vigil never lets a step run as root."""
    if os.getuid() != 0:
        if run_as is not None and _lookup(run_as).pw_uid != os.getuid():
            raise SandboxUnavailable(
                f"[workspace] run_as = {run_as!r} needs vigil to run as root",
                "Remove run_as, or run vigil as that user.",
            )
        return None
    if run_as is None:
        owner = workspace.stat().st_uid
        entry = pwd.getpwuid(owner) if owner != 0 else _lookup("nobody")
    else:
        entry = _lookup(run_as)
    if entry.pw_uid == 0:
        raise SandboxUnavailable(
            f"steps would run as root ({run_as or 'the workspace owner'})",
            "Set [workspace] run_as to an unprivileged user (for example nobody).",
        )
    return Identity(entry.pw_uid, entry.pw_gid, entry.pw_name)


def _lookup(user: str | int) -> pwd.struct_passwd:
    try:
        if isinstance(user, int) or user.isdigit():
            return pwd.getpwuid(int(user))
        return pwd.getpwnam(user)
    except KeyError:
        raise SandboxUnavailable(
            f"[workspace] run_as names no user on this machine: {user!r}",
            "Set run_as to an existing unprivileged user, e.g. nobody.",
        ) from None
