"""Verifying the audit log: find the first entry that was edited, inserted, moved or removed.

Three kinds of evidence, each pointing at a line:

* the hash chain: every entry records the leaf hash of the line before it, so an edited
  entry is betrayed by its successor, and an entry out of place by its ``seq`` and ``prev``;
* signed checkpoints: the Merkle root over the first N entries, signed by a trusted key,
  catches a rewritten tail and truncation below N;
* the ``sealed`` field: an entry written after a checkpoint names its size, so deleting
  checkpoints is noticed.

Without an outside copy of the newest checkpoint (``extra_notes``) nobody can tell a log cut
back to an older checkpoint, together with its checkpoint file, from a younger log: publish
checkpoints somewhere the workspace cannot write (see docs/security.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vigil.safety import merkle, note
from vigil.safety.audit import FIELDS, GENESIS, checkpoints_path
from vigil.safety.keys import TrustedKey
from vigil.words import plural


@dataclass(frozen=True)
class Problem:
    """One thing wrong, and where: the first bad entry's seq and the line in ``file``."""

    message: str
    seq: int | None
    line: int | None
    file: str


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :func:`verify`."""

    entries: int
    checkpoints: int
    sealed: int
    root: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the log is intact."""
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        """Seq of the first entry that cannot be trusted, if any."""
        return self.problems[0].seq if self.problems else None

    @property
    def first_bad_line(self) -> int | None:
        """Line (in the file named by the first problem) where trouble starts."""
        return self.problems[0].line if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "sealed": self.sealed,
            "root": self.root,
            "first_bad_seq": self.first_bad_seq,
            "first_bad_line": self.first_bad_line,
            "problems": [asdict(p) for p in self.problems],
        }


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict) or set(value) != set(FIELDS):
        return None
    if not isinstance(value["seq"], int) or not isinstance(value["prev"], str):
        return None
    if not isinstance(value["sealed"], int):
        return None
    return value


def _scan_entries(lines: list[bytes], leaves: list[bytes], log: str) -> list[Problem]:
    """Problems the chain alone reveals; at most one, the first."""
    parsed = [_parse(line) for line in lines]
    for i, entry in enumerate(parsed):
        number = i + 1
        if entry is None:
            return [Problem(f"line {number} is not a valid audit entry", number, number, log)]
        if entry["seq"] != number:
            return [
                Problem(
                    f"line {number} holds seq {entry['seq']}, expected {number}: "
                    "an entry was inserted, deleted or moved here",
                    number,
                    number,
                    log,
                )
            ]
        expected = GENESIS if i == 0 else leaves[i - 1].hex()
        if entry["prev"] != expected:
            return [
                Problem(f"entry {number} does not chain to the line before it", number, number, log)
            ]
        nxt = parsed[i + 1] if i + 1 < len(parsed) else None
        # The successor vouches for this line unless it is itself out of place (a gap in
        # seq means an entry was removed between them) or a verbatim copy of this one.
        if (
            nxt is not None
            and nxt["seq"] in (number, number + 1)
            and lines[i + 1] != lines[i]
            and nxt["prev"] != leaves[i].hex()
        ):
            return [
                Problem(
                    f"entry {number} was changed: it no longer matches the hash in entry "
                    f"{number + 1}",
                    number,
                    number,
                    log,
                )
            ]
    return []


def verify(
    path: Path,
    trusted: list[TrustedKey],
    *,
    extra_notes: tuple[str, ...] = (),
    head: tuple[int, str] | None = None,
    check_store: bool = False,
) -> VerifyReport:
    """Check the log at ``path`` and its checkpoints; the report names the first bad entry.

    ``extra_notes`` are checkpoints kept elsewhere (a witness), checked like the local ones.
    With ``check_store``, ``head`` is the store's record of the newest sealed ``(size, hex
    root)`` (None: the store has none): a log cut below it or edited within it, a store
    record older than the log's newest signed checkpoint (a rolled-back store), or no
    record for a non-empty log, is a problem.
    """
    log, ckpt_file = str(path), str(checkpoints_path(path))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    lines = raw.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    leaves = [merkle.leaf_hash(line) for line in lines]
    problems = _scan_entries(lines, leaves, log)
    if torn:
        number = len(lines) + 1
        problems.append(Problem(f"line {number} is incomplete", number, number, log))

    checkpoints, ckpt_problems = _read_checkpoints(checkpoints_path(path), trusted, extra_notes)
    problems += ckpt_problems
    sizes = {c.size for c in checkpoints}

    for i, line in enumerate(lines):
        entry = _parse(line)
        if entry is not None and entry["sealed"] and entry["sealed"] not in sizes:
            problems.append(
                Problem(
                    f"entry {i + 1} was written after a checkpoint of {entry['sealed']} "
                    "entries that is missing: checkpoints were removed",
                    i + 1,
                    i + 1,
                    ckpt_file,
                )
            )
            break

    sealed = 0
    ranges: list[tuple[Problem, int]] = []
    frontier = merkle.Frontier()
    for ckpt in sorted(checkpoints, key=lambda c: c.size):
        if ckpt.size > len(lines):
            seq = len(lines) + 1
            problems.append(
                Problem(
                    f"the log has {plural(len(lines), 'entry', 'entries')} but a signed "
                    "checkpoint seals "
                    f"{ckpt.size}: it was truncated",
                    seq,
                    seq,
                    log,
                )
            )
            break
        while frontier.size < ckpt.size:
            frontier.add(leaves[frontier.size])
        if frontier.root() != ckpt.root:
            mismatch = Problem(
                f"entries {sealed + 1}..{ckpt.size} do not match the signed checkpoint "
                f"of {ckpt.size} entries",
                sealed + 1,
                sealed + 1,
                log,
            )
            problems.append(mismatch)
            ranges.append((mismatch, ckpt.size))
            break
        sealed = ckpt.size

    if check_store:
        problems += _compare_head(head, leaves, checkpoints, log)

    # A chain finding names the exact entry; a checkpoint mismatch only bounds a range, so
    # the exact finding goes first when it falls inside that range.
    exact = [p.seq for p in problems if p.seq is not None and all(p is not r for r, _ in ranges)]

    def order(p: Problem) -> tuple[bool, float]:
        for r, end in ranges:
            if p is r and any(r.seq is not None and r.seq <= s <= end for s in exact):
                return (False, end + 0.5)
        return (p.seq is None, float(p.seq or 0))

    problems.sort(key=order)
    return VerifyReport(
        entries=len(lines),
        checkpoints=len(checkpoints),
        sealed=sealed,
        root=merkle.root_of(leaves).hex(),
        problems=problems,
    )


STORE = "store"


def _compare_head(
    head: tuple[int, str] | None,
    leaves: list[bytes],
    checkpoints: list[note.Checkpoint],
    log: str,
) -> list[Problem]:
    """Problems found by comparing the log with the store's record of its head."""
    newest = max((c.size for c in checkpoints), default=0)
    if head is None:
        if leaves:
            return [
                Problem(
                    "the store holds no record of this log, which has "
                    f"{plural(len(leaves), 'entry', 'entries')}: "
                    "the record was deleted or the store was replaced",
                    None,
                    None,
                    STORE,
                )
            ]
        return []
    size, root = head
    if size > len(leaves):
        seq = len(leaves) + 1
        return [
            Problem(
                f"the store records {size} sealed entries but the log has {len(leaves)}: "
                "the log's tail was cut",
                seq,
                seq,
                log,
            )
        ]
    if merkle.root_of(leaves[:size]).hex() != root:
        return [
            Problem(
                f"entries 1..{size} do not match the store's record of the sealed log: "
                "the log was edited",
                size,
                size,
                log,
            )
        ]
    if newest > size:
        return [
            Problem(
                f"the store's record ({size} entries) is older than the log's newest signed "
                f"checkpoint ({newest}): the store's record was rolled back",
                None,
                None,
                STORE,
            )
        ]
    return []


def _read_checkpoints(
    path: Path, trusted: list[TrustedKey], extra_notes: tuple[str, ...]
) -> tuple[list[note.Checkpoint], list[Problem]]:
    found: list[note.Checkpoint] = []
    problems: list[Problem] = []
    try:
        rows = path.read_text().split("\n")
    except FileNotFoundError:
        rows = []
    notes: list[tuple[str, int | None, str]] = []
    for number, row in enumerate(rows, 1):
        if not row.strip():
            continue
        try:
            notes.append((str(json.loads(row)["note"]), number, str(path)))
        except (ValueError, KeyError, TypeError):
            problems.append(
                Problem(f"checkpoint line {number} is damaged", None, number, str(path))
            )
    notes += [(text, None, "witness") for text in extra_notes]
    previous = 0
    for text, row_number, where in notes:
        try:
            ckpt = note.open_checkpoint(text, trusted)
        except note.NoteError as exc:
            label = f"checkpoint line {row_number}" if row_number else "witness checkpoint"
            problems.append(Problem(f"{label}: {exc}", None, row_number, where))
            continue
        if row_number is not None and ckpt.size < previous:
            problems.append(
                Problem(
                    f"checkpoint line {row_number} seals fewer entries than the one before",
                    None,
                    row_number,
                    where,
                )
            )
        if row_number is not None:
            previous = max(previous, ckpt.size)
        found.append(ckpt)
    return found, problems
