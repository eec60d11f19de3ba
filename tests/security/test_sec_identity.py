"""Running vigil as root does not give steps root: they run as an unprivileged host user
with no capabilities, yet can still change every file of a root-owned workspace in their
private view (through an idmapped mount). Without root, steps run as the caller."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from sec_support import as_root, make_workspace, needs_overlay, open_to_all, sh

from test_workspace_support import make_project
from vigil.workspace import SandboxSettings, SandboxUnavailable, Workspace

pytestmark = needs_overlay
root_only = pytest.mark.skipif(not as_root, reason="vigil must run as root for this attack")
user_only = pytest.mark.skipif(as_root, reason="vigil must run as a normal user for this one")


def test_step_has_no_capabilities_and_is_never_host_root(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    sandbox = ws.prepare("caps")
    try:
        proc = sh(sandbox, "id -u; grep -E '^Cap(Eff|Prm|Inh|Bnd|Amb)' /proc/self/status")
    finally:
        sandbox.discard()
    lines = proc.stdout.split("\n")
    uid = int(lines[0])
    assert uid != 0
    for line in lines[1:]:
        if line:
            assert line.split()[1] == "0000000000000000", line
    if as_root:
        assert ws.identity is not None and ws.identity.uid == pwd.getpwnam("nobody").pw_uid
    else:
        assert uid == os.getuid()


@root_only
def test_root_run_step_cannot_read_shadow_kmsg_or_other_users_files(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    (private / "root-only.txt").write_text("ROOT-PRIVATE\n")
    os.chmod(private / "root-only.txt", 0o600)
    open_to_all(private)
    ws = make_workspace(tmp_path, settings=SandboxSettings(read_only_paths=(str(private),)))
    for round_ in range(2):
        sandbox = ws.prepare(f"shadow-{round_}")
        try:
            proc = sh(
                sandbox,
                f"cat /etc/shadow /etc/gshadow; head -c 64 /dev/kmsg; cat {private}/root-only.txt;"
                " dmesg | head -1; true",
            )
        finally:
            sandbox.discard()
        shadow = Path("/etc/shadow").read_text()
        root_line = next(line for line in shadow.splitlines() if line.startswith("root:"))
        assert root_line not in proc.stdout
        assert "ROOT-PRIVATE" not in proc.stdout
        assert proc.stdout.strip() == "", proc.stdout


@root_only
def test_root_run_step_can_change_a_root_owned_workspace(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    secret = ws.root / "src" / "private.cfg"
    secret.write_text("mode 600, owned by root\n")
    os.chmod(secret, 0o600)
    assert ws.root.stat().st_uid == 0
    sandbox = ws.prepare("write")
    try:
        proc = sh(
            sandbox,
            "id -u; echo more >> src/private.cfg && echo new > src/new.txt && rm README.md"
            " && mkdir -p build/out && stat -c %u src/private.cfg",
        )
        assert proc.returncode == 0, proc.stderr
        changes = sandbox.capture()
    finally:
        sandbox.discard()
    assert {"src/private.cfg", "src/new.txt", "README.md", "build/out"} <= set(changes.paths)
    # The real workspace is untouched until a commit, which vigil (root) does itself.
    assert secret.read_text() == "mode 600, owned by root\n"
    ws.commit(changes)
    assert secret.read_text() == "mode 600, owned by root\nmore\n"
    assert (ws.root / "src" / "new.txt").stat().st_uid == 0


@root_only
def test_root_run_steps_run_as_the_workspace_owner_when_not_root(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    root = make_project(tmp_path / "owned")
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(
                os.path.join(parent, name), nobody.pw_uid, nobody.pw_gid, follow_symlinks=False
            )
    os.chown(root, nobody.pw_uid, nobody.pw_gid)
    ws = Workspace(root, tmp_path / "state", mode="overlay")
    assert ws.identity is not None and ws.identity.uid == nobody.pw_uid
    sandbox = ws.prepare("owner")
    try:
        proc = sh(sandbox, "id -u && echo x >> README.md")
        assert proc.returncode == 0, proc.stderr
        assert sandbox.capture().paths == ["README.md"]
    finally:
        sandbox.discard()
    assert int(proc.stdout.split()[0]) == nobody.pw_uid


@root_only
@pytest.mark.parametrize("run_as", ["root", "0", "no-such-user-vigil"])
def test_root_run_refuses_to_run_steps_as_root_or_unknown_users(
    tmp_path: Path, run_as: str
) -> None:
    root = make_project(tmp_path / "p")
    with pytest.raises(SandboxUnavailable) as err:
        Workspace(root, root / ".vigil", mode="overlay", settings=SandboxSettings(run_as=run_as))
    assert err.value.code == "VIGIL-SANDBOX"
    assert err.value.remedy


@user_only
def test_normal_user_cannot_pick_another_identity(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    with pytest.raises(SandboxUnavailable):
        Workspace(root, root / ".vigil", mode="overlay", settings=SandboxSettings(run_as="root"))


def test_writes_outside_the_workspace_never_reach_the_host(tmp_path: Path) -> None:
    open_to_all(tmp_path)
    ws = make_workspace(tmp_path)
    targets = [
        tmp_path / "outside.txt",
        Path("/tmp") / f"vigil-sec-out-{os.getpid()}",
        Path("/etc") / "vigil-sec-out",
        Path("/usr") / "vigil-sec-out",
        Path.home() / "vigil-sec-out",
        Path("/run") / "vigil-sec-out",
        Path("/var/tmp") / f"vigil-sec-out-{os.getpid()}",
    ]
    script = "; ".join(f"echo x > {t}; mkdir -p {t}.d" for t in targets) + "; true"
    sandbox = ws.prepare("outside")
    try:
        sh(sandbox, script)
        changes = sandbox.capture()
    finally:
        sandbox.discard()
    for target in targets:
        assert not target.exists(), target
        assert not Path(f"{target}.d").exists(), target
    assert changes.paths == []


def test_step_cannot_create_user_namespaces(tmp_path: Path) -> None:
    """No way back to capabilities: a new user namespace would grant them (inside it)."""
    ws = make_workspace(tmp_path)
    sandbox = ws.prepare("userns")
    try:
        proc = sh(sandbox, "unshare -U true; echo rc=$?; unshare -rm true; echo rc=$?")
    finally:
        sandbox.discard()
    assert "rc=0" not in proc.stdout
    assert proc.stdout.count("rc=") == 2
