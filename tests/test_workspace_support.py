"""Shared helpers for the workspace and sandbox tests."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from enginetools import HANG
from vigil.workspace import AttemptSandbox, Changeset, Workspace, spawn


def make_project(root: Path) -> Path:
    """A small project tree with files, a nested dir, a symlink and a policy file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("hello\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('app')\n")
    (root / "src" / "lib").mkdir()
    (root / "src" / "lib" / "util.py").write_text("X = 1\n")
    (root / "old").mkdir()
    (root / "old" / "a.txt").write_text("a\n")
    (root / "old" / "sub").mkdir()
    (root / "old" / "sub" / "b.txt").write_text("b\n")
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "link").symlink_to("README.md")
    (root / "vigil.toml").write_text("[policy]\nallow = []\n")
    (root / ".gitignore").write_text("build/\n*.log\n")
    return root


def run(
    sandbox: AttemptSandbox,
    script: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a sh script in the sandbox the way the engine would."""
    spec = sandbox.command(["sh", "-c", script], env=dict(env or {}), cwd=cwd)
    proc = spawn.run(spec, capture_output=True, text=True, timeout=HANG)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def attempt(ws: Workspace, key: str, scripts: Sequence[str], **kw: object) -> Changeset:
    """Prepare, run each script, capture and discard; return the changeset."""
    sandbox = ws.prepare(key, **kw)  # type: ignore[arg-type]
    with sandbox.lock():
        try:
            for script in scripts:
                run(sandbox, script)
            return sandbox.capture()
        finally:
            sandbox.discard()


EDIT_SCRIPT = (
    "echo new > added.txt && echo changed >> README.md && rm src/app.py && chmod 755 script.sh"
    " && ln -sfn src/lib link && rm -r old/sub && rm -r src/lib && mkdir src/lib"
    " && echo fresh > src/lib/fresh.py && mkdir -p build/out && echo o > build/out/x.o"
    " && mkdir emptydir && printf '\\000\\001binary' > blob.bin"
)


def overlay_available() -> bool:
    """Whether this machine runs the real overlay sandbox."""
    from vigil.workspace import detect_isolation

    return detect_isolation("auto").mode == "overlay"
