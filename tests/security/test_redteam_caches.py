"""Red team: ``[workspace] caches``, host directories every sandbox mounts read-write.

A hostile step may write anything into a cache. These tests try to turn that into code
run on the host (a program planted in a ``PATH`` directory the cache holds, which vigil
itself runs after the attempt: ``git`` for the ignore rules, ``setpriv``), into a write
into vigil's own installation, and into a cache a plan (not ``vigil.toml``) declares.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from sec_support import needs_overlay

from clitools import vigil, write_plan
from vigil.errors import ExitCode

pytestmark = needs_overlay


def plan(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "c", "project": "c", "phases": [{"id": "p", "tasks": list(tasks)}]}


def setup_home(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    home = tmp_path / "home"
    keys = home / ".config" / "vigil"
    keys.mkdir(parents=True)
    (keys / "signing.key").write_text("KEY-MATERIAL-NEVER-SHOWN\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return ws, home, {**env, "VIGIL_ISOLATION": "overlay"}


def open_to_steps(path: Path) -> None:
    """Writable by whoever steps run as (``nobody`` under a root vigil), as a cache must be."""
    for parent, dirs, _ in os.walk(path):
        os.chmod(parent, 0o777)
        for name in dirs:
            os.chmod(os.path.join(parent, name), 0o777)


def planting(marker: Path, where: str) -> str:
    """A step that leaves programs named git and setpriv in ``where``: run anywhere outside
    the sandbox, they touch ``marker`` and then do what the real ones do."""
    lines = ["#!/bin/sh", f"touch {marker}", 'exec /usr/bin/$(basename "$0") "$@"']
    body = " ".join(f"'{line}'" for line in lines)
    return (
        f"mkdir -p {where} && for p in git setpriv; do printf '%s\\n' {body} > {where}/$p; "
        f"chmod 755 {where}/$p; done; echo planted > planted.txt"
    )


@pytest.mark.parametrize(
    ("cache", "on_path"),
    [
        ("~/.cargo", "{home}/.cargo/bin"),  # cargo's whole home, its bin on PATH
        ("~/.cargo", "{home}/.cargo/bin-not-yet"),  # a PATH directory the step creates
        ("~/bin", "{home}/bin"),  # the PATH directory itself
    ],
)
def test_a_cache_holding_a_path_directory_cannot_plant_a_program_vigil_runs(
    tmp_path: Path, cache: str, on_path: str
) -> None:
    ws, home, env = setup_home(tmp_path)
    path_dir = Path(on_path.format(home=home))
    cache_dir = Path(cache.replace("~", str(home)))
    cache_dir.mkdir(parents=True)
    if path_dir.name != "bin-not-yet":
        path_dir.mkdir(parents=True, exist_ok=True)
    open_to_steps(cache_dir)
    marker = tmp_path / "ran-on-the-host"
    env["PATH"] = f"{path_dir}{os.pathsep}{os.environ['PATH']}"
    (ws / "vigil.toml").write_text(f"[workspace]\ncaches = [{json.dumps(cache)}]\n")
    write_plan(
        tmp_path / "plant.yaml",
        plan({"id": "plant", "run": planting(marker, on_path.format(home=home))}),
    )
    write_plan(tmp_path / "next.yaml", plan({"id": "next", "run": "echo next > next.txt"}))
    first = vigil("run", str(tmp_path / "plant.yaml"), "--format", "json", cwd=ws, env=env)
    # The next run, by the same person, in the same shell: a planted git or setpriv
    # would run here, outside any sandbox.
    second = vigil("run", str(tmp_path / "next.yaml"), cwd=ws, env=env)
    assert not marker.exists(), "a program a step planted in a cache ran on the host"
    assert not (path_dir / "git").exists() and not (path_dir / "setpriv").exists()
    assert first.returncode == ExitCode.USAGE, first.stdout + first.stderr
    error = json.loads(first.stdout)["error"]
    assert error["code"] == "VIGIL-CACHE-PATH" and "PATH" in error["cause"], error
    assert not (ws / "planted.txt").exists()
    assert (
        second.returncode == ExitCode.USAGE and "VIGIL-CACHE-PATH" in second.stdout + second.stderr
    )


def test_a_cache_inside_vigils_own_installation_is_refused(tmp_path: Path) -> None:
    ws, _, env = setup_home(tmp_path)
    # The site-packages of the interpreter that runs vigil: a module or .pth file a step
    # left there would run as vigil's user on its next start.
    site = Path(sysconfig.get_paths()["purelib"])
    assert (site / "vigil").is_dir() or any(site.glob("*vigil*")), site
    cache = site / f"redteam-cache-{os.getpid()}"
    (ws / "vigil.toml").write_text(f"[workspace]\ncaches = [{json.dumps(str(cache))}]\n")
    step = f"echo 'import os' > {cache}/x.pth; echo ran > ran.txt"
    write_plan(tmp_path / "p.yaml", plan({"id": "t", "run": step}))
    try:
        out = vigil("run", str(tmp_path / "p.yaml"), "--format", "json", cwd=ws, env=env)
        assert not cache.exists(), "vigil made a cache directory in its own installation"
    finally:
        if cache.exists():
            for f in cache.iterdir():
                f.unlink()
            cache.rmdir()
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "VIGIL-CACHE-PATH" and "installed" in error["cause"], error
    assert not (ws / "ran.txt").exists()
    assert sys.prefix  # the interpreter under test is the one the CLI runs


@pytest.mark.parametrize(
    "entry",
    [
        "~/.config//vigil/",
        "~/.cache/./../.config/vigil/.",
        "~/.config/vigil/../vigil/grants",
        "~/.cache/../../home/.config",
    ],
)
def test_odd_spellings_of_the_configuration_directory_are_refused(
    tmp_path: Path, entry: str
) -> None:
    ws, _, env = setup_home(tmp_path)
    (ws / "vigil.toml").write_text(f"[workspace]\ncaches = [{json.dumps(entry)}]\n")
    write_plan(tmp_path / "p.yaml", plan({"id": "t", "run": "echo ran > ran.txt"}))
    out = vigil("run", str(tmp_path / "p.yaml"), "--format", "json", cwd=ws, env=env)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    assert json.loads(out.stdout)["error"]["code"] == "VIGIL-CACHE-PATH"
    assert not (ws / "ran.txt").exists()


@pytest.mark.parametrize(
    "where",
    [
        {"workspace": {"caches": ["~/.config/vigil"]}},  # a top-level [workspace] table
        {"caches": ["~/.config/vigil"]},  # at the top of the plan
        "task",  # on a task
    ],
)
def test_a_plan_cannot_declare_a_cache(tmp_path: Path, where: Any) -> None:
    ws, home, env = setup_home(tmp_path)
    step = "cat ~/.config/vigil/signing.key > got.txt 2>&1; echo ran > ran.txt"
    task: dict[str, Any] = {"id": "t", "run": step}
    body = plan(task)
    if where == "task":
        task["caches"] = ["~/.config/vigil"]
    else:
        body.update(where)
    write_plan(tmp_path / "p.yaml", body)
    out = vigil("run", str(tmp_path / "p.yaml"), "--format", "json", cwd=ws, env=env)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert not (ws / "ran.txt").exists() and not (ws / "got.txt").exists()
    assert "KEY-MATERIAL" not in out.stdout + out.stderr
    assert (home / ".config" / "vigil" / "signing.key").read_text().startswith("KEY-MATERIAL")


# Giving a directory to another user takes root; a user can still open a parent to all.
SWAPPABLE = [
    "open-parent",
    *(["other-users-parent", "sticky-other-users-leaf"] * (os.getuid() == 0)),
]


@pytest.mark.parametrize("how", SWAPPABLE)
def test_a_cache_another_user_could_swap_for_a_link_is_refused(tmp_path: Path, how: str) -> None:
    # Between vigil's check and the mount, whoever may rename an entry on the cache's path
    # could put a link to the keys there: the sandbox would bind the keys read-write.
    ws, home, env = setup_home(tmp_path)
    shared = home / "shared"
    shared.mkdir()
    cache = shared / "pip"
    cache.mkdir()
    if how == "open-parent":
        os.chmod(shared, 0o777)
    else:
        other = 65534  # nobody
        if how == "other-users-parent":
            os.chown(shared, other, other)
        else:
            os.chmod(shared, 0o1777)
            os.chown(cache, other, other)
    (ws / "vigil.toml").write_text(f"[workspace]\ncaches = [{json.dumps(str(cache))}]\n")
    write_plan(tmp_path / "p.yaml", plan({"id": "t", "run": "echo ran > ran.txt"}))
    out = vigil("run", str(tmp_path / "p.yaml"), "--format", "json", cwd=ws, env=env)
    assert out.returncode == ExitCode.USAGE, out.stdout + out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "VIGIL-CACHE-PATH" and "another user" in error["cause"], error
    assert not (ws / "ran.txt").exists()


def test_a_cache_in_a_sticky_directory_that_is_vigils_own_is_used(tmp_path: Path) -> None:
    ws, home, env = setup_home(tmp_path)
    sticky = home / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    (ws / "vigil.toml").write_text(f'[workspace]\ncaches = ["{sticky}/mine"]\n')
    write_plan(tmp_path / "p.yaml", plan({"id": "t", "run": f"echo x > {sticky}/mine/f"}))
    out = vigil("run", str(tmp_path / "p.yaml"), cwd=ws, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (sticky / "mine" / "f").read_text() == "x\n"
