"""Finding a project's plans and starting a project, on real directories."""

from __future__ import annotations

import shutil
from pathlib import Path

from vigil.config import load_config
from vigil.plan import discover_plans, load_plan, scaffold_project

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_discovery_lists_valid_and_broken_plans(tmp_path: Path) -> None:
    (tmp_path / "plans" / "nested").mkdir(parents=True)
    (tmp_path / "runbooks").mkdir()
    shutil.copy(EXAMPLES / "release.yaml", tmp_path / "plans" / "release.yaml")
    shutil.copy(EXAMPLES / "runbook.md", tmp_path / "runbooks" / "status.md")
    (tmp_path / "plans" / "nested" / "broken.yml").write_text("name: x\nname: y\n")
    (tmp_path / "plans" / "binary.yaml").write_bytes(b"\x00\x01\x02")
    (tmp_path / "plans" / "notes.txt").write_text("not a plan")
    (tmp_path / "plans" / ".hidden.yaml").write_text("name: x\n")
    (tmp_path / "plans" / "dir.yaml").mkdir()
    entries = discover_plans(tmp_path)
    by_path = {e.path: e for e in entries}
    assert list(by_path) == [
        "plans/binary.yaml",
        "plans/nested/broken.yml",
        "plans/release.yaml",
        "runbooks/status.md",
    ]
    release = by_path["plans/release.yaml"]
    assert (release.name, release.kind, release.problems) == ("Release greeter", "yaml", 0)
    assert release.description == "Build, test and package the greeter tool."
    status = by_path["runbooks/status.md"]
    assert (status.kind, status.problems, status.name) == ("markdown", 0, "Publish the status page")
    broken = by_path["plans/nested/broken.yml"]
    assert broken.problems >= 1 and broken.name == "broken"
    assert broken.first_problem is not None
    assert broken.first_problem.startswith("plans/nested/broken.yml:1:1: ")
    assert by_path["plans/binary.yaml"].problems == 1


def test_discovery_of_missing_dirs_is_empty(tmp_path: Path) -> None:
    assert discover_plans(tmp_path) == []
    assert discover_plans(tmp_path, dirs=["nowhere"]) == []


def test_scaffold_creates_a_working_project(tmp_path: Path) -> None:
    result = scaffold_project(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in result.created) == [
        ".gitignore",
        "plans/hello.yaml",
        "vigil.toml",
    ]
    assert (tmp_path / ".gitignore").read_text() == ".vigil/\n"
    assert load_plan(tmp_path / "plans" / "hello.yaml").plan.project == "hello"
    config = load_config(tmp_path)
    assert config.data["plans"]["dirs"] == ["plans", "runbooks"]
    assert [e.problems for e in discover_plans(tmp_path)] == [0]


def test_scaffold_never_overwrites_and_is_idempotent(tmp_path: Path) -> None:
    (tmp_path / "vigil.toml").write_text("# mine\n")
    (tmp_path / ".gitignore").write_text("node_modules/")
    first = scaffold_project(tmp_path)
    assert (tmp_path / "vigil.toml").read_text() == "# mine\n"
    assert tmp_path / "vigil.toml" in first.skipped
    assert first.updated == [tmp_path / ".gitignore"]
    assert (tmp_path / ".gitignore").read_text() == "node_modules/\n.vigil/\n"
    hello = tmp_path / "plans" / "hello.yaml"
    hello.write_text("changed by the user\n")
    second = scaffold_project(tmp_path)
    assert second.created == [] and second.updated == []
    assert sorted(second.skipped) == sorted(
        [tmp_path / "vigil.toml", tmp_path / ".gitignore", hello]
    )
    assert (tmp_path / ".gitignore").read_text().count(".vigil") == 1
    assert hello.read_text() == "changed by the user\n"
