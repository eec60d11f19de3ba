"""Ignored changes are the ones git ignores: nested .gitignore files, .git/info/exclude and
the user's global excludes file, with git's precedence, checked against real git.

Ignore rules only decide how a change is shown; the security side (hostile rules files,
protected paths) is in tests/security/test_sec_ignore_files.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clitools import vigil, write_plan
from test_workspace_support import attempt, overlay_available
from vigil.workspace import Changeset, Workspace
from vigil.workspace.ignore import IgnoreRules, global_excludes_file, tree_reader

PYTEST_CACHE = (
    "mkdir -p .pytest_cache/v/cache"
    " && printf '# Created by pytest automatically.\\n*\\n' > .pytest_cache/.gitignore"
    " && echo 'Signature: 8a477f597d28d172789f06886806bc55' > .pytest_cache/CACHEDIR.TAG"
    " && echo '# pytest cache directory #' > .pytest_cache/README.md"
    " && echo '[]' > .pytest_cache/v/cache/nodeids"
)
"""What pytest writes on its first run in a project."""


def git(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Real git with the test's environment (HOME and global config of the ``home`` fixture)."""
    return subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=False
    )


def tree_paths(root: Path) -> dict[str, bool]:
    """Every path under ``root`` except ``.git/`` and ``.vigil/``: is it a directory?"""
    out = {}
    for parent, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".vigil"))
        for name in [*dirs, *files]:
            path = Path(parent, name)
            out[path.relative_to(root).as_posix()] = path.is_dir() and not path.is_symlink()
    return out


def git_ignored(root: Path, paths: list[str]) -> set[str]:
    """The paths ``git check-ignore`` says are ignored (tracked or not)."""
    done = git("check-ignore", "--no-index", "-z", "--stdin", cwd=root, stdin="\0".join(paths))
    assert done.returncode in (0, 1), done.stderr
    return {p for p in done.stdout.split("\0") if p}


def assert_agrees_with_git(root: Path, rules: IgnoreRules) -> set[str]:
    """Every path of the tree gets git's verdict; returns the ignored ones."""
    paths = tree_paths(root)
    expected = git_ignored(root, sorted(paths))
    ours = {p for p, is_dir in paths.items() if rules.matches(p, is_dir=is_dir)}
    assert ours == expected, {"only ours": ours - expected, "only git": expected - ours}
    return ours


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A HOME of the test's own, no system git config, and no cached global excludes path."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("XDG_CONFIG_HOME", "GIT_CONFIG_GLOBAL", "GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(name, raising=False)
    global_excludes_file.cache_clear()
    yield path
    global_excludes_file.cache_clear()


@pytest.fixture
def repo(tmp_path: Path, home: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    assert git("init", "-q", cwd=path).returncode == 0
    return path


# ---------------------------------------------------------------- the rules, against git

TABLE = {
    ".gitignore": "*.log\nbuild/\n!build/keep.txt\n/top-only\ncache/**\n!cache/kept\ndocs/*.md\n"
    "!docs/README.md\n*.tmp\nnested\n",
    "src/.gitignore": "!important.log\n*.gen\n/local\n",
    "src/deep/.gitignore": "!*.gen\nsecret/\n",
    "src/deep/x.gen": "",
    "src/y.gen": "",
    "src/important.log": "",
    "src/other.log": "",
    "src/local": "",
    "src/deep/local": "",
    "src/deep/secret/s.txt": "",
    "src/deep/secret.txt": "",
    "build/keep.txt": "",
    "build/.gitignore": "!keep.txt\n!*.o\n",
    "build/a.o": "",
    "top-only": "",
    "src/top-only": "",
    "cache/kept": "",
    "cache/sub/gone": "",
    "docs/a.md": "",
    "docs/README.md": "",
    "docs/sub/b.md": "",
    "a.tmp": "",
    "keep.tmp": "",
    "src/nested/n.txt": "",
    "nested": "",
    "excluded.bak": "",
    "src/re.bak": "",
    "global.swp": "",
    "src/g.swp": "",
    "src/wanted.swp": "",
    "plain.txt": "",
    "UPPER.LOG": "",
    ".git/info/exclude": "*.bak\n!re.bak\n!keep.tmp\n",
}


def test_a_table_of_paths_gets_git_check_ignore_verdicts(repo: Path, home: Path) -> None:
    write(repo, TABLE)
    write(home, {"global-ignore": "*.swp\n!src/wanted.swp\n*.bak\n"})
    done = git("config", "--global", "core.excludesFile", "~/global-ignore", cwd=repo)
    assert done.returncode == 0, done.stderr
    ours = assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo))
    # The table exercises each rule it names: these verdicts come from every level.
    assert {"src/other.log", "build/keep.txt", "build/a.o", "src/deep/secret/s.txt"} <= ours
    assert {"excluded.bak", "global.swp", "src/g.swp", "cache/sub/gone", "src/y.gen"} <= ours
    assert "keep.tmp" in ours  # .gitignore's *.tmp outranks info/exclude's !keep.tmp
    assert {"src/important.log", "src/deep/x.gen", "docs/README.md", "plain.txt"}.isdisjoint(ours)
    assert {"src/re.bak", "src/wanted.swp", "cache/kept", "UPPER.LOG"}.isdisjoint(ours)


NAMES = ["a", "b", "ab", "x.log", "k.py", "[a]", "é", "a "]
SEGMENTS = [
    *NAMES,
    *["*", "?", "**", "***", "*.log", "a**", "**b", "x.*", "\\*", "\\[a]", "a\\ "],
    *["[ab]", "[!a]", "[^a]", "[a-c]", "[]a]", "[a-]", "[[:alpha:]]*", "[[:digit:]]"],
    *["[x", "[[:b]", "[[:nope:]]"],
]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3))
    text = "/".join(segments)
    if draw(st.booleans()):
        text = "/" + text
    if draw(st.booleans()):
        text += "/"
    return ("!" if draw(st.booleans()) else "") + text


@st.composite
def trees(draw: st.DrawFn) -> dict[str, str]:
    """Files at random paths, with rules files in the root, some directories and
    ``.git/info/exclude``."""
    paths = {
        "/".join(parts)
        for parts in draw(st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)))
    }
    above = {p[:i] for p in paths for i, c in enumerate(p) if c == "/"}
    files = {p: "" for p in paths - above}  # a path with paths below it is a directory
    dirs = sorted({p.rsplit("/", 1)[0] + "/" for p in files if "/" in p} | {""})
    rules_in = draw(st.lists(st.sampled_from(dirs), max_size=3, unique=True))
    for where in [*rules_in, ".git/info/"]:
        lines = draw(st.lists(patterns(), max_size=5))
        files[f"{where}exclude" if where == ".git/info/" else f"{where}.gitignore"] = "".join(
            line + "\n" for line in lines
        )
    return files


@settings(
    max_examples=int(os.environ.get("IGNORE_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=trees(), global_lines=st.lists(patterns(), max_size=4))
def test_random_rules_agree_with_git(
    repo: Path, home: Path, files: dict[str, str], global_lines: list[str]
) -> None:
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (repo / ".git" / "info" / "exclude").unlink(missing_ok=True)
    write(repo, files)
    excludes = home / "excludes"
    excludes.write_text("".join(line + "\n" for line in global_lines))
    assert git("config", "--global", "core.excludesFile", str(excludes), cwd=repo).returncode == 0
    global_excludes_file.cache_clear()
    assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo))


def test_a_nested_star_ignores_its_own_directory_only(repo: Path) -> None:
    write(repo, {".pytest_cache/.gitignore": "*\n", ".pytest_cache/v/x": "", "src/a.py": ""})
    ours = assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo))
    assert ours == {".pytest_cache/.gitignore", ".pytest_cache/v", ".pytest_cache/v/x"}


def test_a_deeper_negation_re_includes(repo: Path) -> None:
    write(repo, {".gitignore": "*.log\n", "logs/.gitignore": "!keep.log\n"})
    write(repo, {"logs/keep.log": "", "logs/drop.log": "", "keep.log": ""})
    ours = assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo))
    assert ours == {"logs/drop.log", "keep.log"}


def test_a_path_in_an_ignored_directory_cannot_be_re_included(repo: Path) -> None:
    write(repo, {".gitignore": "out/\n!out/keep\n", "out/.gitignore": "!keep\n", "out/keep": ""})
    ours = assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo))
    assert ours == {"out", "out/.gitignore", "out/keep"}


def test_info_exclude_is_below_every_gitignore(repo: Path) -> None:
    write(repo, {".git/info/exclude": "*.tmp\nscratch/\n", ".gitignore": "!keep.tmp\n"})
    write(repo, {"a.tmp": "", "keep.tmp": "", "scratch/s": ""})
    ours = assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo))
    assert ours == {"a.tmp", "scratch", "scratch/s"}


def test_the_global_excludes_file_set_in_git_config_is_below_info_exclude(
    repo: Path, home: Path
) -> None:
    write(home, {"my-ignores": "*.swp\n*.tmp\n"})
    done = git("config", "--global", "core.excludesFile", "~/my-ignores", cwd=repo)
    assert done.returncode == 0, done.stderr
    write(repo, {".git/info/exclude": "!keep.tmp\n", "a.swp": "", "a.tmp": "", "keep.tmp": ""})
    assert global_excludes_file() == home / "my-ignores"
    ours = assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo))
    assert ours == {"a.swp", "a.tmp"}


def test_without_the_setting_git_s_default_file_is_read(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(home, {"dotfiles/git-ignore": "*.swp\n"})
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".config" / "git" / "ignore").symlink_to(home / "dotfiles" / "git-ignore")
    write(repo, {"a.swp": "", "b.txt": ""})
    assert global_excludes_file() == home / ".config" / "git" / "ignore"
    assert assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo)) == {"a.swp"}
    xdg = home / "xdg"
    write(xdg, {"git/ignore": "*.txt\n"})
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    global_excludes_file.cache_clear()
    assert global_excludes_file() == xdg / "git" / "ignore"
    assert assert_agrees_with_git(repo, IgnoreRules.for_workspace(repo)) == {"b.txt"}


def test_a_repository_s_own_config_never_names_the_excludes_file(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A workspace's .git/config is the steps' to write: only the user's config counts.
    write(home, {"outside-rules": "*\n"})
    assert git("config", "core.excludesFile", str(home / "outside-rules"), cwd=repo).returncode == 0
    monkeypatch.chdir(repo)
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    assert global_excludes_file() == home / ".config" / "git" / "ignore"
    monkeypatch.delenv("GIT_DIR")
    global_excludes_file.cache_clear()
    assert (
        git("config", "--global", "core.excludesFile", "relative-rules", cwd=repo).returncode == 0
    )
    assert global_excludes_file() is None


def test_the_exclude_file_of_a_linked_worktree_is_not_read(repo: Path, tmp_path: Path) -> None:
    write(tmp_path, {"main/info/exclude": "*\n"})
    shutil.rmtree(repo / ".git")
    write(repo, {".git": f"gitdir: {tmp_path / 'main'}\n", "a.txt": ""})
    assert not IgnoreRules.for_workspace(repo).matches("a.txt")


def test_without_git_installed_the_default_file_is_read(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(home, {".config/git/ignore": "*.swp\n", "elsewhere": "*.txt\n"})
    # git's setting points elsewhere, but without a git to ask, git's default path counts.
    assert git("config", "--global", "core.excludesFile", "~/elsewhere", cwd=repo).returncode == 0
    monkeypatch.setenv("PATH", str(home / "no-such-bin"))
    assert global_excludes_file() == home / ".config" / "git" / "ignore"
    write(repo, {"a.swp": "", "b.txt": ""})
    assert {p for p in ("a.swp", "b.txt") if IgnoreRules.for_workspace(repo).matches(p)} == {
        "a.swp"
    }


def test_rules_files_are_read_only_on_the_changed_paths(tmp_path: Path) -> None:
    asked: list[str] = []
    read = tree_reader(tmp_path)

    def counting(rel: str) -> bytes | None:
        asked.append(rel)
        return read(rel)

    rules = IgnoreRules(counting)
    for path in ("a/b/c.txt", "a/b/d.txt", "a/e.txt"):
        rules.matches(path)
    assert sorted(asked) == [
        ".git/info/exclude",
        ".gitignore",
        "a/.gitignore",
        "a/b/.gitignore",
    ]


def test_past_the_work_limit_nothing_more_is_flagged_or_read() -> None:
    asked: list[str] = []

    def read(rel: str) -> bytes | None:
        asked.append(rel)
        return (
            b"".join(b"never%d\n" % i for i in range(9)) + b"*.o\n" if rel == ".gitignore" else None
        )

    # Compiling the ten patterns counts 150 tests each; each path then tests all ten.
    rules = IgnoreRules(read, work_limit=150 * 10 + 5 * 10)
    assert [rules.matches(f"x{i}.o") for i in range(8)] == [True] * 5 + [False] * 3
    assert not rules.matches("d/x.o")
    assert asked == [".gitignore", ".git/info/exclude"]


# ------------------------------------------------------------------ capture of attempts

MODES = sorted({"overlay" if overlay_available() else "snapshot", "snapshot"})


@pytest.fixture(params=MODES)
def ws(
    request: pytest.FixtureRequest, tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> Workspace:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    root = tmp_path / "project"
    write(root, {".gitignore": "*.log\n", "src/app.py": "print('app')\n", "gen/.gitignore": "*\n"})
    return Workspace(root, root / ".vigil", mode=request.param)


def ignored_of(cs: Changeset) -> set[str]:
    return {e.path for e in cs.entries if e.ignored}


def test_a_cache_the_step_creates_is_ignored_by_its_own_gitignore(ws: Workspace) -> None:
    cs = attempt(ws, "cache", [PYTEST_CACHE + " && echo x >> src/app.py"])
    cache = {p for p in cs.paths if p.startswith(".pytest_cache")}
    assert len(cache) == 7 and ignored_of(cs) == cache
    diff = cs.diff(ws.objects)
    assert diff.count("diff --vigil") == 1 and "+x" in diff
    assert diff.endswith("# 7 ignored paths changed (git ignore rules): .pytest_cache/ (7 paths)\n")
    # Ignored or not, the changes land.
    ws.commit(cs)
    assert (ws.root / ".pytest_cache" / "v" / "cache" / "nodeids").read_text() == "[]\n"


def test_deleting_an_ignored_cache_is_judged_by_the_rules_it_was_deleted_from(
    ws: Workspace,
) -> None:
    ws.commit(attempt(ws, "make", [PYTEST_CACHE]))
    cs = attempt(ws, "clear", ["rm -r .pytest_cache"])
    assert len(cs.paths) == 7 and ignored_of(cs) == set(cs.paths)
    assert "diff --vigil" not in cs.diff(ws.objects)


def test_a_gitignore_in_changes_stacked_under_the_attempt_counts(ws: Workspace) -> None:
    # A dry run stacks a dependency's uncommitted changes under the attempt.
    made = attempt(ws, "make", [PYTEST_CACHE])
    more = attempt(ws, "more", ["echo '{}' > .pytest_cache/v/cache/lastfailed"], base_layers=[made])
    assert more.paths == [".pytest_cache/v/cache/lastfailed"] and ignored_of(more) == {
        ".pytest_cache/v/cache/lastfailed"
    }
    # A change to a file that existed is always shown, ignored or not: an ignore rule must
    # not hide an edit from review.
    edit = attempt(ws, "edit", ["echo '[1]' > .pytest_cache/v/cache/nodeids"], base_layers=[made])
    assert edit.paths == [".pytest_cache/v/cache/nodeids"] and ignored_of(edit) == set()
    cleared = attempt(ws, "clear", ["rm -r .pytest_cache"], base_layers=[made])
    assert len(cleared.paths) == 7 and ignored_of(cleared) == set(cleared.paths)


def test_a_gitignore_the_step_changes_counts_as_the_step_left_it(ws: Workspace) -> None:
    cs = attempt(ws, "edit", ["echo '*.tmp' >> .gitignore && echo t > a.tmp && echo l > b.log"])
    assert ignored_of(cs) == {"a.tmp", "b.log"}


def test_a_gitignore_the_step_deletes_no_longer_counts(ws: Workspace) -> None:
    cs = attempt(ws, "rm", ["rm gen/.gitignore && echo o > gen/out.txt"])
    # The deleted file itself was ignored by its own rule where it was deleted from.
    assert ignored_of(cs) == {"gen/.gitignore"}


def test_a_directory_the_step_replaces_hides_the_gitignore_below(ws: Workspace) -> None:
    cs = attempt(ws, "replace", ["rm -r gen && mkdir gen && echo o > gen/out.txt"])
    assert "gen/out.txt" in cs.paths and ignored_of(cs) == {"gen/.gitignore"}


def test_a_directory_with_shown_and_ignored_changes_is_shown(ws: Workspace) -> None:
    cs = attempt(ws, "mixed", ["mkdir -p new/sub && echo a > new/sub/a.log && echo b > new/b.py"])
    assert ignored_of(cs) == {"new/sub", "new/sub/a.log"}
    empty = attempt(ws, "empty", ["mkdir -p made/empty"])
    assert empty.paths == ["made", "made/empty"] and ignored_of(empty) == set()


# ------------------------------------------------------------------- through the CLI


def test_vigil_diff_summarises_a_run_that_only_made_caches(tmp_path: Path, home: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    assert git("init", "-q", cwd=ws).returncode == 0
    write(ws, {"README.md": "hello\n"})
    write(home, {"ignores": "*.scratch\n"})
    assert git("config", "--global", "core.excludesFile", "~/ignores", cwd=ws).returncode == 0
    plan = write_plan(
        tmp_path / "plan.yaml",
        {
            "name": "tests",
            "project": "demo",
            "phases": [
                {"id": "p", "tasks": [{"id": "t", "run": PYTEST_CACHE + " && echo n > a.scratch"}]}
            ],
        },
    )
    env = {"HOME": str(home), "VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    done = vigil("run", str(plan), "--workspace", str(ws), "--run-id", "r1", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ws / ".pytest_cache" / "README.md").exists() and (ws / "a.scratch").exists()
    # vigil's own state directory stays out of git without `vigil init`.
    assert (ws / ".vigil" / ".gitignore").read_text() == "*\n"
    (ws / ".vigil" / ".gitignore").unlink()
    diff = vigil("diff", "r1", "--workspace", str(ws), cwd=tmp_path, env=env)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.strip() == (
        "# 8 ignored paths changed (git ignore rules): .pytest_cache/ (7 paths), a.scratch"
    )
    review = vigil(
        "review", "r1", "--workspace", str(ws), "--format", "json", cwd=tmp_path, env=env
    )
    assert review.returncode == 0, review.stderr
    [task] = json.loads(review.stdout)
    assert len(task["paths"]) == 8 and all(p["ignored"] for p in task["paths"])
    assert (ws / ".vigil" / ".gitignore").read_text() == "*\n"  # written again
    porcelain = git("status", "--porcelain", "--untracked-files=all", cwd=ws)
    assert porcelain.stdout == "?? README.md\n"
