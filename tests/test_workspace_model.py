"""Pure changeset logic: JSON round-trip, composition, inverse and rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.workspace import ChangeEntry, Changeset, FileState, IgnoreRules, ObjectStore, compose

pytestmark = pytest.mark.slow

hashes = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
states = st.one_of(
    st.none(),
    st.builds(FileState, st.just("file"), st.integers(0, 0o7777), hashes, st.integers(0, 10**9)),
    st.builds(FileState, st.just("dir"), st.integers(0, 0o7777)),
    st.builds(
        FileState, st.just("symlink"), st.just(0), st.none(), st.just(0), st.text(min_size=1)
    ),
)
paths = st.lists(st.text(alphabet="abc._-", min_size=1, max_size=4), min_size=1, max_size=3).map(
    "/".join
)
entries = st.builds(ChangeEntry, paths, states, states, st.booleans())
changesets = st.lists(entries, max_size=8, unique_by=lambda e: e.path).map(
    lambda es: Changeset(tuple(es))
)


@given(changesets)
def test_json_round_trip(cs: Changeset) -> None:
    assert Changeset.from_dict(json.loads(json.dumps(cs.to_dict()))) == cs


@given(changesets)
def test_inverse_composes_to_nothing(cs: Changeset) -> None:
    real = Changeset(tuple(e for e in cs.entries if e.before != e.after))
    assert compose([real, real.inverse()]).is_empty


@given(changesets, changesets)
def test_compose_keeps_first_before_and_last_after(a: Changeset, b: Changeset) -> None:
    combined = {e.path: e for e in compose([a, b]).entries}
    for path in set(a.paths) | set(b.paths):
        first = next(e for e in (*a.entries, *b.entries) if e.path == path)
        last = [e for e in (*a.entries, *b.entries) if e.path == path][-1]
        if first.before == last.after:
            assert path not in combined
        else:
            assert combined[path].before == first.before
            assert combined[path].after == last.after


def test_diff_summarises_binary_and_ignored(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects")
    old = objects.put_bytes(b"line 1\nline 2\n")
    new = objects.put_bytes(b"line 1\nline two\n")
    blob = objects.put_bytes(b"\x00\x01\x02")
    text_file = ChangeEntry(
        "a.txt", FileState("file", 0o644, old, 14), FileState("file", 0o644, new, 16)
    )
    binary = ChangeEntry("b.bin", None, FileState("file", 0o644, blob, 3))
    ignored = ChangeEntry("build/x", None, FileState("file", 0o644, new, 16))
    rules = IgnoreRules(lambda rel: b"build/\n" if rel == ".gitignore" else None)
    cs = Changeset(rules.flag([text_file, binary, ignored]))
    diff = cs.diff(objects)
    assert "-line 2\n+line two\n" in diff
    assert "Binary files a/b.bin and b/b.bin differ" in diff
    assert "build/x" not in diff.split("# 1 ignored")[0]
    assert "1 ignored path" in diff
    stat = cs.stat()
    assert "a.txt" in stat and "b.bin" in stat and "2 paths changed" in stat
