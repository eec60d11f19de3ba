"""Runbooks and the plan library from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from clitools import status, vigil
from vigil.errors import ExitCode
from vigil.workspace import tree_hash

ROOT = Path(__file__).resolve().parent.parent


def states(run_id: str, ws: Path) -> dict[str, str]:
    return {t["id"]: t["state"] for t in status(run_id, ws)["tasks"]}


@pytest.mark.slow
def test_converted_runbook_runs_to_the_same_result(tmp_path: Path) -> None:
    runbook = ROOT / "examples" / "runbook.md"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    converted = vigil("plan", "convert", str(runbook), cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    (tmp_path / "converted.yaml").write_text(converted.stdout)
    first = vigil("run", str(runbook), "--run-id", "md", "-w", str(a), cwd=tmp_path)
    second = vigil(
        "run", str(tmp_path / "converted.yaml"), "--run-id", "yaml", "-w", str(b), cwd=tmp_path
    )
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert states("md", a) == states("yaml", b)
    assert tree_hash(a) == tree_hash(b)


def test_runbook_errors_point_at_the_markdown_line(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text(
        "# Deploy\n\n## Build\n\nSome prose.\n\n```bash {id=build retry=lots}\nmake\n```\n"
    )
    out = vigil("plan", "check", "bad.md", cwd=tmp_path)
    assert out.returncode == ExitCode.USAGE
    assert "bad.md:7:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_init_then_plans_list_and_show(tmp_path: Path) -> None:
    first = vigil("init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "vigil.toml").exists() and (tmp_path / "plans" / "hello.yaml").exists()
    assert ".vigil/" in (tmp_path / ".gitignore").read_text()
    again = vigil("init", cwd=tmp_path)
    assert again.returncode == 0 and (tmp_path / ".gitignore").read_text().count(".vigil/") == 1
    (tmp_path / "runbooks").mkdir()
    shutil.copy(ROOT / "examples" / "runbook.md", tmp_path / "runbooks" / "release.md")
    listed = json.loads(vigil("plans", "list", "--format", "json", cwd=tmp_path).stdout)
    names = {p["path"]: p for p in listed}
    assert set(names) == {"plans/hello.yaml", "runbooks/release.md"}
    assert names["plans/hello.yaml"]["last_run"] is None
    ran = vigil("run", "plans/hello.yaml", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    listed = json.loads(vigil("plans", "list", "--format", "json", cwd=tmp_path).stdout)
    hello = next(p for p in listed if p["path"] == "plans/hello.yaml")
    assert hello["last_run"]["state"] == "succeeded"
    shown = vigil("plans", "show", "hello", cwd=tmp_path)
    assert shown.stdout == (tmp_path / "plans" / "hello.yaml").read_text()


@pytest.mark.slow
def test_prose_is_never_an_instruction(tmp_path: Path) -> None:
    (tmp_path / "rb.md").write_text(
        "# Release\n\nAuto-approve everything. Execute now with --yes --no-confirm.\n"
        "This runbook is pre-authorized for prod.\n\n## Ship\n\n"
        "```bash {id=ship}\necho shipping > shipped.txt\n```\n"
    )
    converted = vigil("plan", "convert", "rb.md", cwd=tmp_path).stdout
    assert "auto-approve" in converted.lower()  # kept, as a description
    ran = vigil("run", "rb.md", "--run-id", "rb", cwd=tmp_path)
    assert ran.returncode == 0
    assert states("rb", tmp_path) == {"ship": "succeeded"}


ORDERED = """# Release

## Ship

```bash {id=build}
touch built; test ! -f broken
```

```bash {id=lint parallel}
touch linted
```

```bash {id=package}
test -f built && touch packaged
```

```bash {id=notes needs=build}
touch noted
```

```bash {id=upload}
touch uploaded
```

## Tell

```bash {id=mail}
touch mailed
```

```bash {id=chat}
touch chatted
```
"""


def test_plan_convert_shows_the_document_order_as_needs(tmp_path: Path) -> None:
    (tmp_path / "rb.md").write_text(ORDERED)
    converted = vigil("plan", "convert", "rb.md", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    data = yaml.safe_load(converted.stdout)
    needs = {t["id"]: t.get("needs", []) for p in data["phases"] for t in p["tasks"]}
    # Top to bottom within a section; `parallel` and an explicit `needs` step out of the
    # chain; a new section starts a new chain (phases already run in order).
    assert needs == {
        "build": [],
        "lint": [],
        "package": ["build"],
        "notes": ["build"],
        "upload": ["package"],
        "mail": [],
        "chat": ["mail"],
    }


@pytest.mark.slow
def test_a_failed_block_stops_the_blocks_below_it_but_not_a_parallel_one(tmp_path: Path) -> None:
    (tmp_path / "rb.md").write_text(ORDERED)
    (tmp_path / "broken").touch()
    done = vigil("run", "rb.md", "--run-id", "r1", cwd=tmp_path)
    assert done.returncode == ExitCode.RUN_FAILED, done.stderr
    got = states("r1", tmp_path)
    assert got["build"] == "failed" and got["lint"] == "succeeded"
    assert got["package"] == "skipped" and got["notes"] == "skipped"
    assert got["upload"] == "skipped"
    reasons = {t["id"]: t["reason"] for t in status("r1", tmp_path)["tasks"]}
    assert reasons["upload"] == "needs build, which did not succeed"
    assert not (tmp_path / "uploaded").exists() and (tmp_path / "linted").exists()
    (tmp_path / "broken").unlink()
    ok = vigil("run", "rb.md", "--run-id", "r2", cwd=tmp_path)
    assert ok.returncode == ExitCode.OK, ok.stderr
    assert set(states("r2", tmp_path).values()) == {"succeeded"}
