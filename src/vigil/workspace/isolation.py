"""Which isolation this machine supports, probed once per process for ``vigil doctor``."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
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


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the programs the sandbox runs before the step."""

    unshare: str
    mount: str
    sh: str
    setpriv: str | None
    ip: str | None


_SEARCH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_tools() -> Tools | None:
    """Locate util-linux and sh; None if a required one is missing."""
    unshare, mount, sh = (shutil.which(n, path=_SEARCH) for n in ("unshare", "mount", "sh"))
    if not (unshare and mount and sh):
        return None
    return Tools(
        unshare, mount, sh, shutil.which("setpriv", path=_SEARCH), shutil.which("ip", path=_SEARCH)
    )


def _probe_overlay(tools: Tools) -> IsolationCheck:
    with tempfile.TemporaryDirectory(prefix="vigil-probe-") as tmp:
        base = Path(tmp)
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir()
        (base / "lower" / "f").write_text("x")
        options = f"lowerdir={base}/lower,upperdir={base}/upper,workdir={base}/work,userxattr"
        script = f'{tools.mount} -t overlay overlay -o "$1" "$2" && rm "$2/f"'
        argv = [tools.unshare, "--user", "--map-root-user", "--mount", "--pid", "--fork"]
        argv += ["--kill-child", tools.sh, "-c", script, "probe", options, f"{base}/merged"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return IsolationCheck("overlayfs in a user namespace", False, str(exc))
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            return IsolationCheck("overlayfs in a user namespace", False, detail)
        whiteout = (base / "upper" / "f").lstat()
        if whiteout.st_rdev != os.makedev(0, 0):
            return IsolationCheck("overlayfs in a user namespace", False, "no 0/0 whiteout")
    return IsolationCheck("overlayfs in a user namespace", True, "mounted; whiteouts as 0/0")


@functools.cache
def _probe() -> IsolationReport:
    checks = [IsolationCheck("linux", sys.platform.startswith("linux"), sys.platform)]
    if not checks[0].ok:
        return IsolationReport("snapshot", "not Linux: no namespaces", checks)
    tools = find_tools()
    checks.append(IsolationCheck("unshare, mount, sh", tools is not None, _SEARCH))
    if tools is None:
        return IsolationReport("snapshot", "util-linux unshare/mount not found", checks)
    checks.append(IsolationCheck("ip (loopback up when offline)", tools.ip is not None))
    overlay = _probe_overlay(tools)
    checks.append(overlay)
    if not overlay.ok:
        return IsolationReport("snapshot", f"overlay sandbox unavailable: {overlay.detail}", checks)
    return IsolationReport("overlay", "user+mount+pid namespaces with overlayfs work", checks)


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
