"""Fixtures the end-to-end attack tests share: a user configuration with a signing key
outside the workspace, and a store on each backend."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clitools import vigil


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside every workspace and outside pytest's own tmp tree."""
    base = Path(tempfile.mkdtemp(prefix="vigil-sec-", dir="/var/tmp"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """The workspace, where the SQLite store fixture puts its database."""
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def env(outside: Path, store_url: str) -> dict[str, str]:
    """vigil's environment: a configuration with a signing key, the store of the backend."""
    values = {"VIGIL_CONFIG_DIR": str(outside / "config"), "VIGIL_DATABASE_URL": store_url}
    done = vigil("keys", "init", cwd=outside, env=values)
    assert done.returncode == 0, done.stderr
    return values
