"""A step cannot fill the host's disk through its changeset: VIGIL-LIMIT, before any copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clitools import status, vigil, write_plan
from test_workspace_support import attempt, overlay_available
from vigil.errors import LimitExceeded
from vigil.workspace import Workspace
from vigil.workspace.limits import Limits
from vigil.workspace.state import tree_hash

MakeWs = Callable[[Limits], Workspace]
MODES = sorted({"overlay" if overlay_available() else "snapshot", "snapshot"})


def _objects(ws: Workspace) -> list[str]:
    """The stored blobs (after a first attempt: snapshot mode stores the workspace once)."""
    attempt(ws, "warm-up", ["true"])
    root = ws.objects.root
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture(params=MODES)
def make_ws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> MakeWs:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "ws"
    root.mkdir()
    (root / "small.txt").write_text("small\n")

    def make(limits: Limits) -> Workspace:
        return Workspace(root, root / ".vigil", mode=request.param, limits=limits)

    return make


def test_a_huge_sparse_file_fails_the_attempt_without_being_copied(make_ws: MakeWs) -> None:
    ws = make_ws(Limits(max_bytes=64 * 1024 * 1024, max_files=1000))
    before, stored = tree_hash(ws.root), _objects(ws)
    with pytest.raises(LimitExceeded) as err:
        attempt(ws, "sparse", ["truncate -s 1T huge.bin && echo x > other.txt"])
    assert err.value.code == "VIGIL-LIMIT"
    assert "max_changeset_bytes" in err.value.remedy and "sparse" in err.value.cause
    assert tree_hash(ws.root) == before
    assert _objects(ws) == stored, "content was copied before the limit was checked"
    # The same step within the limit is fine.
    ok = attempt(ws, "fits", ["truncate -s 1M fits.bin"])
    assert [e.path for e in ok.entries] == ["fits.bin"]


def test_too_many_files_fail_the_attempt(make_ws: MakeWs) -> None:
    ws = make_ws(Limits(max_bytes=1 << 30, max_files=50))
    stored = _objects(ws)
    with pytest.raises(LimitExceeded) as err:
        attempt(ws, "many", ["mkdir out && for i in $(seq 1 400); do echo $i > out/f$i; done"])
    assert "max_changeset_files" in err.value.remedy
    assert _objects(ws) == stored
    assert not (ws.root / "out").exists()


def test_many_small_files_add_up(make_ws: MakeWs) -> None:
    ws = make_ws(Limits(max_bytes=100_000, max_files=1000))
    with pytest.raises(LimitExceeded):
        attempt(ws, "sum", ["for i in $(seq 1 30); do head -c 5000 /dev/zero > f$i; done"])


@pytest.mark.slow
def test_the_limit_reaches_a_real_run_from_vigil_toml(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "vigil.toml").write_text("[workspace]\nmax_changeset_files = 5\n")
    write_plan(path / "p.yaml", {"name": "p", "project": "p", "phases": [{"id": "a", "tasks": [
        {"id": "many", "run": "for i in 1 2 3 4 5 6 7 8; do echo $i > f$i; done"},
        {"id": "few", "run": "echo 1 > g"},
    ]}]})  # fmt: skip
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    out = vigil("run", "p.yaml", "--run-id", "lim", cwd=path, env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    view = {t["id"]: t for t in status("lim", path, env)["tasks"]}
    assert view["many"]["state"] == "failed" and view["few"]["state"] == "succeeded"
    assert "VIGIL-LIMIT" in vigil("logs", "lim", "many", cwd=path, env=env).stdout
    assert not any(p.name.startswith("f") for p in path.iterdir())
    assert (path / "g").exists()


@pytest.mark.slow
def test_a_bad_limit_in_vigil_toml_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "vigil.toml").write_text('[workspace]\nmax_changeset_bytes = "lots"\n')
    write_plan(path / "p.yaml", {"name": "p", "project": "p", "phases": [
        {"id": "a", "tasks": [{"id": "t", "run": "true"}]}
    ]})  # fmt: skip
    out = vigil("run", "p.yaml", cwd=path, env={"VIGIL_CONFIG_DIR": str(tmp_path / "c")})
    assert out.returncode == 2 and "VIGIL-CONFIG" in out.stderr, out.stderr
    assert "max_changeset_bytes" in out.stderr
