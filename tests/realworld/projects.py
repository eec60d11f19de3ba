"""Real open-source projects and the nightly job run on each, under vigil and directly.

Each project is a source distribution from PyPI, pinned by version and sha256, fetched
once into a cache directory (``$VIGIL_TEST_CACHE``, else ``~/.cache/vigil-tests``) and
unpacked unmodified. The workspace is made a git repository of the unpacked tree, as a
checkout would be, with the usual build outputs in ``.git/info/exclude`` (outside the
project's files).

The nightly job, in the order a shell runs it:

- ``venv``: a virtual environment, the project installed with its test dependency
  (pytest) from the package index (the network);
- ``test``: the project's test suite;
- ``lint``: ``compileall`` over its sources and tests, after the tests;
- ``wheel``: ``pip wheel --no-deps`` (the build backend from the index: the network);
- ``change``: a code change (one comment appended to the package's ``__init__.py``),
  validated by the test suite.

Used by ``tests/realworld`` and ``bench/realworld.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Project:
    name: str
    version: str
    url: str
    sha256: str
    edit: str
    """The file the validated change appends a line to."""
    lint: tuple[str, ...]
    """What ``compileall`` checks."""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


PROJECTS = {
    p.name: p
    for p in (
        # setuptools build backend, src/ layout, tests in a package.
        Project(
            name="cachetools",
            version="5.5.0",
            url="https://files.pythonhosted.org/packages/c3/38/"
            "a0f315319737ecf45b4319a8cd1f3a908e29d9277b46942263292115eee7/"
            "cachetools-5.5.0.tar.gz",
            sha256="2cc24fb4cbe39633fb7badd9db9ca6295d766d9c2995f245725a46715d050f2a",
            edit="src/cachetools/__init__.py",
            lint=("src", "tests"),
        ),
        # flit_core build backend, flat layout, unittest-style tests (and subtests).
        Project(
            name="more-itertools",
            version="10.5.0",
            url="https://files.pythonhosted.org/packages/51/78/"
            "65922308c4248e0eb08ebcbe67c95d48615cc6f27854b6f2e57143e9178f/"
            "more-itertools-10.5.0.tar.gz",
            sha256="5482bfef7849c25dc3c6dd53a6173ae4795da2a41a80faea6700d9f5846c5da6",
            edit="more_itertools/__init__.py",
            lint=("more_itertools", "tests"),
        ),
    )
}

EXCLUDES = [".venv/", "build/", "dist/", "*.egg-info/", "__pycache__/", ".pytest_cache/"]
"""What the projects' own repositories ignore, given to git as ``.git/info/exclude``."""

CHANGE_LINE = "# Checked by the nightly job.\n"
"""What the change appends, after an empty line, to the project's file."""


def cache_dir() -> Path:
    base = os.environ.get("VIGIL_TEST_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "vigil-tests"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_sdist(project: Project) -> Path:
    """The project's sdist from the cache, downloaded first if missing or damaged; its
    hash is checked either way."""
    where = cache_dir() / "sdists"
    path = where / project.filename
    if path.is_file() and _sha256(path) == project.sha256:
        return path
    where.mkdir(parents=True, exist_ok=True)
    tmp = where / f".{project.filename}.{os.getpid()}.part"
    request = urllib.request.Request(project.url, headers={"User-Agent": "vigil-tests"})
    last: Exception | None = None
    for delay in (0, 2, 5):
        time.sleep(delay)
        try:
            with urllib.request.urlopen(request, timeout=60) as response, tmp.open("wb") as out:
                shutil.copyfileobj(response, out)
            break
        except OSError as exc:
            last = exc
    else:
        raise AssertionError(f"cannot download {project.url}: {last}")
    got = _sha256(tmp)
    if got != project.sha256:
        tmp.unlink()
        raise AssertionError(f"{project.filename}: sha256 {got}, pinned {project.sha256}")
    os.replace(tmp, path)
    return path


def unpack(project: Project, dest: Path) -> None:
    """The sdist's tree, unmodified, at ``dest``, made a git repository of it."""
    sdist = fetch_sdist(project)
    dest.mkdir(parents=True)
    top = f"{project.name}-{project.version}/"
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            if member.name == top.rstrip("/"):
                continue
            assert member.name.startswith(top), member.name
            member.name = member.name[len(top) :]
            # Plain files and directories inside the tree, owned by whoever unpacks them
            # (as ``tar --no-same-owner``): Python before 3.11.4 has no extraction filters.
            parts = member.name.split("/")
            assert (member.isfile() or member.isdir()) and ".." not in parts, member.name
            member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
            member.mode &= 0o755
            members.append(member)
        tar.extractall(dest, members=members)
    git = ["git", "-C", str(dest), "-c", "user.name=Nightly", "-c", "user.email=n@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (dest / ".git" / "info" / "exclude").write_text("\n".join(EXCLUDES) + "\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", f"{project.name} {project.version}"], check=True)


def original(project: Project, rel: str) -> bytes:
    """A file's contents as the sdist has it."""
    with tarfile.open(fetch_sdist(project)) as tar:
        fh = tar.extractfile(f"{project.name}-{project.version}/{rel}")
        assert fh is not None
        return fh.read()


def base_python() -> str:
    """The system's Python 3, which both runs use to make their virtual environment (an
    interpreter under /root is out of reach of the user steps run as under root)."""
    found = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert found, "no python3 in /usr/local/bin, /usr/bin or /bin"
    return found


@dataclass(frozen=True)
class Step:
    phase: str
    id: str
    run: str
    network: bool = False
    validate: str | None = None
    needs: tuple[str, ...] = ()


def steps(project: Project) -> list[Step]:
    pytest = ".venv/bin/python -m pytest -q"
    return [
        Step(
            "setup",
            "venv",
            f"{base_python()} -m venv .venv && .venv/bin/pip install -q . pytest",
            network=True,
        ),
        Step("check", "test", pytest),
        # After the tests, as the dry run says: both write the bytecode of the same modules
        # (`compileall` with relative paths in it, an import with absolute ones), so run
        # side by side they would clash (VIGIL-CONFLICT).
        Step(
            "check",
            "lint",
            f".venv/bin/python -m compileall -q {' '.join(project.lint)}",
            needs=("test",),
        ),
        Step("check", "wheel", ".venv/bin/pip wheel -q --no-deps -w dist .", network=True),
        Step(
            "change",
            "change",
            f"printf '\\n{CHANGE_LINE.strip()}\\n' >> {project.edit}",
            validate=f"{pytest} -x",
        ),
    ]


def plan(project: Project) -> dict[str, Any]:
    """The nightly job as a vigil plan: one phase per group, the network where it installs."""
    phases: dict[str, list[dict[str, Any]]] = {}
    for step in steps(project):
        task: dict[str, Any] = {"id": step.id, "run": step.run}
        if step.network:
            task["requires"] = ["network"]
            task["retry"] = {"attempts": 2, "initial": "2s"}
        if step.validate:
            task["validate"] = [step.validate]
        if step.needs:
            task["needs"] = list(step.needs)
        phases.setdefault(step.phase, []).append(task)
    return {
        "name": f"nightly {project.name}",
        "project": project.name,
        "defaults": {"timeout": "10m"},
        "phases": [{"id": phase, "tasks": tasks} for phase, tasks in phases.items()],
    }


VIGIL_TOML = '[workspace]\ncaches = ["~/.cache/pip"]\n'
"""The workspace's configuration: pip's cache kept across attempts and runs."""


def shell_env(home: Path) -> dict[str, str]:
    """The environment the shell's run gets: this process's, with its own ``HOME``, less
    vigil's variables and ``PYTHONDONTWRITEBYTECODE`` (which vigil does not pass to steps:
    both sides write bytecode, as Python does by default)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIGIL_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["HOME"] = str(home)
    return env


def run_direct(project: Project, ws: Path, logs: Path, env: dict[str, str]) -> dict[str, int]:
    """The nightly job's commands in a shell, one after the other, in ``ws``; each step's
    output in ``logs/ID.out`` (the validation's in ``logs/ID.validate.out``). Returns each
    step's exit code; a failing step stops the job, as a failing task would stop what
    comes after it."""
    logs.mkdir(parents=True, exist_ok=True)
    codes: dict[str, int] = {}
    for step in steps(project):
        commands = [(step.id, step.run)]
        if step.validate:
            commands.append((f"{step.id}.validate", step.validate))
        for name, command in commands:
            with (logs / f"{name}.out").open("w") as out:
                done = subprocess.run(
                    ["bash", "-c", command], cwd=ws, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            codes[name] = done.returncode
            if done.returncode != 0:
                return codes
    return codes


_COUNT = re.compile(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?|subtests passed)")


def pytest_counts(output: str) -> dict[str, int]:
    """The counts of pytest's closing summary line (``215 passed, 15 warnings in 0.9s``),
    warnings left out (their number depends on what was compiled before)."""
    lines = [line for line in output.splitlines() if re.search(r" in [\d.]+s", line)]
    assert lines, f"no pytest summary in:\n{output[-2000:]}"
    counts = {kind: int(n) for n, kind in _COUNT.findall(lines[-1])}
    assert counts, lines[-1]
    return counts


def wheel_contents(dist: Path) -> dict[str, dict[str, str]]:
    """Each built wheel's name, with the sha256 of each file it holds."""
    wheels = sorted(dist.glob("*.whl"))
    assert wheels, f"no wheel in {dist}"
    found = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            found[wheel.name] = {
                info.filename: hashlib.sha256(zf.read(info)).hexdigest() for info in zf.infolist()
            }
    return found
