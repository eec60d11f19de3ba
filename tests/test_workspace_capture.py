"""Changesets capture exactly what a step did, in overlay and snapshot mode alike."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from test_workspace_support import EDIT_SCRIPT, attempt, make_project, overlay_available, run
from vigil.workspace import SnapshotSandbox, Workspace, combined_diff, tree_hash

needs_overlay = pytest.mark.skipif(not overlay_available(), reason="needs userns + overlayfs")

EXPECTED = {
    "added.txt": "added",
    "README.md": "modified",
    "src/app.py": "deleted",
    "script.sh": "mode",
    "link": "symlink",
    "old/sub": "deleted",
    "old/sub/b.txt": "deleted",
    "src/lib/util.py": "deleted",
    "src/lib/fresh.py": "added",
    "build": "added",
    "build/out": "added",
    "build/out/x.o": "added",
    "emptydir": "added",
    "blob.bin": "added",
}


@pytest.fixture(params=["overlay", "snapshot"])
def ws(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Workspace:
    # This project's machines support overlay isolation: its absence is a failure here.
    if request.param == "overlay":
        assert overlay_available(), "unprivileged user namespaces + overlayfs are required"
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = make_project(tmp_path / "project")
    return Workspace(root, root / ".vigil", mode=request.param)


def test_capture_records_every_kind_of_change(ws: Workspace) -> None:
    cs = attempt(ws, "k", [EDIT_SCRIPT])
    assert {e.path: e.kind for e in cs.entries} == EXPECTED
    ignored = {e.path for e in cs.entries if e.ignored}
    assert ignored == {"build", "build/out", "build/out/x.o"}
    readme = next(e for e in cs.entries if e.path == "README.md")
    assert readme.before is not None and readme.after is not None
    assert ws.objects.read(readme.before.sha256 or "") == b"hello\n"
    assert ws.objects.read(readme.after.sha256 or "") == b"hello\nchanged\n"
    link = next(e for e in cs.entries if e.path == "link")
    assert link.after is not None and link.after.target == "src/lib"


def test_validation_commands_see_the_changes(ws: Workspace) -> None:
    cs = attempt(ws, "v", ["echo one > v.txt", 'test "$(cat v.txt)" = one && echo two >> v.txt'])
    entry = cs.entries[0]
    assert entry.after is not None
    assert ws.objects.read(entry.after.sha256 or "") == b"one\ntwo\n"


def test_changeset_json_round_trips(ws: Workspace) -> None:
    cs = attempt(ws, "j", [EDIT_SCRIPT])
    again = type(cs).from_dict(json.loads(json.dumps(cs.to_dict())))
    assert again == cs
    assert again.id == cs.id


def test_commit_applies_exactly_what_the_sandbox_saw(ws: Workspace) -> None:
    sandbox = ws.prepare("c")
    with sandbox.lock():
        run(sandbox, EDIT_SCRIPT)
        probe = (
            f"{sys.executable} -c 'import pathlib, vigil.workspace as w;"
            f' print(w.tree_hash(pathlib.Path("{ws.root}")))\''
        )
        seen = run(sandbox, probe).stdout.strip()
        cs = sandbox.capture()
        sandbox.discard()
        ws.commit(cs)
    assert tree_hash(ws.root) == seen
    assert (ws.root / "src" / "lib" / "fresh.py").read_text() == "fresh\n"
    assert not (ws.root / "old" / "sub").exists()
    assert (ws.root / "script.sh").stat().st_mode & 0o777 == 0o755


def test_failed_attempt_leaves_workspace_unchanged(ws: Workspace) -> None:
    before = tree_hash(ws.root)
    sandbox = ws.prepare("fail")
    with sandbox.lock():
        run(sandbox, EDIT_SCRIPT + " && exit 3", check=False)
        sandbox.discard()
    assert tree_hash(ws.root) == before


def test_opaque_directory_replaced_wholesale(ws: Workspace) -> None:
    cs = attempt(ws, "o", ["rm -rf old && mkdir old && echo c > old/c.txt"])
    assert {e.path: e.kind for e in cs.entries} == {
        "old/a.txt": "deleted",
        "old/sub": "deleted",
        "old/sub/b.txt": "deleted",
        "old/c.txt": "added",
    }


def test_type_changes(ws: Workspace) -> None:
    cs = attempt(ws, "t", ["rm -r old && echo now-a-file > old && rm README.md && mkdir README.md"])
    kinds = {e.path: e.kind for e in cs.entries}
    assert kinds["old"] == "type" and kinds["README.md"] == "type"
    assert kinds["old/sub/b.txt"] == "deleted"
    ws.commit(cs)
    assert (ws.root / "old").read_text() == "now-a-file\n"
    assert (ws.root / "README.md").is_dir()


def test_snapshot_and_overlay_give_the_same_changeset(tmp_path: Path) -> None:
    assert overlay_available(), "unprivileged user namespaces + overlayfs are required"
    results = {}
    for mode in ("overlay", "snapshot"):
        root = make_project(tmp_path / mode)
        results[mode] = attempt(Workspace(root, root / ".vigil", mode=mode), "same", [EDIT_SCRIPT])
    # The same changes; the files' times differ (the two trees were made one after the
    # other), so they are left out of the comparison.
    assert _timeless(results["overlay"].to_dict()) == _timeless(results["snapshot"].to_dict())


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k != "mtime_ns"}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_stacked_layers_show_dependency_changes(ws: Workspace) -> None:
    first = attempt(ws, "dep", ["echo base > dep.txt && rm src/app.py && rm -r old"])
    before = tree_hash(ws.root)
    second = attempt(
        ws,
        "next",
        ["cat dep.txt && test ! -e src/app.py && echo more >> dep.txt"],
        base_layers=[first],
    )
    assert tree_hash(ws.root) == before
    (entry,) = second.entries
    assert entry.path == "dep.txt" and entry.kind == "modified"
    assert entry.before == first.entries[0].after if first.entries[0].path == "dep.txt" else True
    text = combined_diff([first, second], ws.objects)
    assert "+base\n+more\n" in text
    assert "src/app.py" in text


def test_discarded_snapshot_attempt_restored_after_crash(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p")
    ws = Workspace(root, root / ".vigil", mode="snapshot")
    before = tree_hash(root)
    sandbox = ws.prepare("crash")
    spec = sandbox.command(["sh", "-c", EDIT_SCRIPT], env={})
    import subprocess

    subprocess.run(spec.argv, env=spec.env, cwd=spec.cwd, check=True)
    assert tree_hash(root) != before
    # vigil dies here; a new process recovers from the manifest on disk.
    done = Workspace(root, root / ".vigil", mode="snapshot").recover()
    assert done and tree_hash(root) == before


@needs_overlay
def test_odd_characters_in_the_path_work(tmp_path: Path) -> None:
    root = make_project(tmp_path / "has space, comma: colon \\ backslash")
    ws = Workspace(root, root / ".vigil", mode="overlay")
    changes = attempt(ws, "odd", ["echo x > new.txt && cat README.md"])
    assert changes.paths == ["new.txt"]


@needs_overlay
def test_unsupported_path_is_a_clear_error(tmp_path: Path) -> None:
    from vigil.workspace import SandboxUnavailable

    root = make_project(tmp_path / "has\nnewline")
    ws = Workspace(root, root / ".vigil", mode="overlay")
    with pytest.raises(SandboxUnavailable) as err:
        ws.prepare("k")
    assert err.value.code == "VIGIL-SANDBOX"
    assert "snapshot" in err.value.remedy


def test_environment_forces_snapshot_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_ISOLATION", "snapshot")
    root = make_project(tmp_path / "p")
    ws = Workspace(root, root / ".vigil")
    assert ws.isolation.mode == "snapshot"
    assert ws.isolation.warning is not None and "no network isolation" in ws.isolation.warning
    assert isinstance(ws.prepare("k"), SnapshotSandbox)
