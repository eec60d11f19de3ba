"""Markdown runbooks: ``## headings`` are phases, ```` ```bash ```` blocks are tasks.

A runbook is read into the same plain data a YAML plan gives and validated by the same
code, so its mistakes are reported the same way, at the Markdown line to edit. Only
fenced blocks tagged ``sh``, ``bash`` or ``shell`` ever become work; every other part of
the document (prose, lists, other code) is description and nothing else, whatever it
says.
"""

from __future__ import annotations

import difflib
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import PurePath

from markdown_it import MarkdownIt
from markdown_it.token import Token

from vigil.plan.fence_attrs import SHELL_LANGUAGES, Attribute, read_fence_info
from vigil.plan.ids import slug, unique
from vigil.plan.lint import PlanWarning, example_warning, looks_like_an_alternative
from vigil.plan.models import Plan
from vigil.plan.problems import PlanProblem
from vigil.plan.sourcemap import DataPath, SourceMap
from vigil.plan.yaml_source import read_yaml

FRONT_MATTER_KEYS = tuple(
    (info.alias or name) for name, info in Plan.model_fields.items() if name != "phases"
)
"""Plan-level keys a runbook's front matter may set; phases come from its headings."""

_TEXT_ATTRIBUTES = ("timeout", "on_failure", "fallback", "workdir", "environment", "review")
_LIST_ATTRIBUTES = ("needs", "requires", "secrets", "pass_env")

# Tokens whose source lines are prose. Lists are not here: their paragraphs are, so a
# code block inside a list item is not swallowed into the prose around it.
_PROSE_TOKENS = frozenset({"paragraph_open", "fence", "code_block", "html_block", "table_open"})


@dataclass
class Runbook:
    """A runbook read into plan data (None when unreadable), positions and problems."""

    data: dict[str, object] | None
    source_map: SourceMap
    problems: list[PlanProblem] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)


@dataclass
class _Block:
    line: int
    col: int
    attributes: tuple[Attribute, ...]
    run: str
    description: str | None
    heading: tuple[str, int] | None
    index: int
    parallel: bool = False


@dataclass
class _Phase:
    title: str
    line: int
    description: str | None = None
    blocks: list[_Block] = field(default_factory=list)


class _Prose:
    """Source lines of prose since the last boundary (a heading or a task block)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.taken: list[int] = []

    def add(self, token: Token) -> None:
        if token.map is None:
            return
        start, end = token.map
        self.taken.extend(n for n in range(start, end) if not self.taken or n > self.taken[-1])

    def take(self) -> str | None:
        out: list[str] = []
        previous: int | None = None
        for n in self.taken:
            if previous is not None and n != previous + 1:
                out.append("")
            out.append(self.lines[n])
            previous = n
        self.taken = []
        text = textwrap.dedent("\n".join(out)).strip()
        return text or None


def _front_matter(
    lines: list[str], filename: str
) -> tuple[dict[str, object], SourceMap, list[PlanProblem], int]:
    """Front matter data, its positions, its problems, and how many lines it spans."""
    if not lines or lines[0].rstrip() != "---":
        return {}, SourceMap(), [], 0
    end = next((k for k in range(1, len(lines)) if lines[k].rstrip() in ("---", "...")), None)
    if end is None:
        problem = PlanProblem(
            filename, 1, 1, "the front matter is not closed", "end it with a line '---'"
        )
        return {}, SourceMap(), [problem], 0
    document = read_yaml("\n".join(lines[1:end]), filename)
    problems = [replace(p, line=p.line + 1) for p in document.problems]
    source_map = document.source_map.shifted(1)
    data = document.data
    if data is None:
        return {}, source_map, problems, end + 1
    if not isinstance(data, dict):
        problems.append(
            PlanProblem(
                filename,
                2,
                1,
                "the front matter is not a mapping of keys to values",
                "write 'name: ...', 'project: ...' lines between the '---' lines",
            )
        )
        return {}, source_map, problems, end + 1
    for key in list(data):
        if key in FRONT_MATTER_KEYS or key == "secrets":
            continue  # secret sources are refused by the loader, with their own error
        line, col = source_map.keys.get((key,), (2, 1))
        if key == "phases":
            fix = "in a runbook each '## heading' starts a phase; remove 'phases'"
        else:
            close = difflib.get_close_matches(key, FRONT_MATTER_KEYS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            fix = f"{hint}allowed keys: {', '.join(FRONT_MATTER_KEYS)}"
        problems.append(PlanProblem(filename, line, col, f"unknown front matter key '{key}'", fix))
        del data[key]
    return data, source_map, problems, end + 1


def _heading_text(tokens: list[Token], i: int) -> str:
    inline = tokens[i + 1] if i + 1 < len(tokens) else None
    return inline.content.strip() if inline is not None and inline.type == "inline" else ""


def _line_of(token: Token) -> int:
    return (token.map[0] if token.map else 0) + 1


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.h1: str | None = None
        self.intro: str | None = None
        self.phases: list[_Phase] = []
        self.prose = _Prose(lines)
        self.heading: tuple[str, int] | None = None
        self.heading_used = False
        self.phase_open = False
        self.problems: list[tuple[int, int, str, str]] = []
        self.alternatives: list[tuple[int, int, str]] = []  # blocks the text calls examples

    def _implicit_phase(self, line: int) -> _Phase:
        phase = _Phase(self.h1 or "main", line)
        self.phases.append(phase)
        return phase

    def read(self, tokens: list[Token]) -> None:
        skip_until = -1
        for i, token in enumerate(tokens):
            if i <= skip_until:
                continue
            if token.type == "heading_open":
                self._heading(int(token.tag[1:]), _heading_text(tokens, i), _line_of(token))
                skip_until = i + 2
            elif (
                token.type == "fence"
                and token.info.split()[:1]
                and (token.info.split()[0].split("{")[0].lower() in SHELL_LANGUAGES)
            ):
                self._block(token)
            elif token.type in _PROSE_TOKENS:
                self.prose.add(token)
        if not self.phases and self.intro is None:
            self.intro = self.prose.take()

    def _heading(self, level: int, text: str, line: int) -> None:
        if level == 1:
            if self.h1 is None:
                self.h1 = text
            self.prose.take()
            return
        if not self.phases and self.intro is None:
            self.intro = self.prose.take()
        if level == 2:
            self.phases.append(_Phase(text, line))
            self.phase_open = True
            self.heading = None
        else:
            if self.phase_open and self.phases:
                self.phases[-1].description = self.prose.take()
            self.phase_open = False
            self.heading = (text, line)
            self.heading_used = False
        self.prose.take()

    def _block(self, token: Token) -> None:
        start = token.map[0] if token.map else 0
        raw_line = self.lines[start]
        info = read_fence_info(raw_line, token.markup)
        for problem in info.problems:
            self.problems.append((start + 1, problem.col, problem.cause, problem.fix))
        if "example" in info.flags:
            self.prose.add(token)  # text to read, never work
            return
        if not self.phases:
            if self.intro is None:
                self.intro = self.prose.take()
            self._implicit_phase(start + 1)
        phase = self.phases[-1]
        description = self.prose.take()
        words = looks_like_an_alternative(description)
        if words is not None:
            col = max(raw_line.find(token.markup), 0) + 1
            self.alternatives.append((start + 1, col, words))
        if self.phase_open:
            phase.description = description
            self.phase_open = False
        heading = None
        if self.heading is not None:
            heading = self.heading
            if self.heading_used:
                heading = (heading[0], -1)
            self.heading_used = True
        phase.blocks.append(
            _Block(
                start + 1,
                max(raw_line.find(token.markup), 0) + 1,
                info.attributes,
                token.content.rstrip("\n"),
                description,
                heading,
                len(phase.blocks) + 1,
                "parallel" in info.flags,
            )
        )


def _task(
    block: _Block, phase_id: str, taken: set[str], path: DataPath, source_map: SourceMap
) -> tuple[dict[str, object], list[tuple[int, int, str, str]]]:
    task: dict[str, object] = {}
    problems: list[tuple[int, int, str, str]] = []
    source_map.values[path] = (block.line, block.col)
    source_map.values[(*path, "run")] = (block.line + 1, block.col)
    attrs = {a.key: a for a in block.attributes}
    for attr in block.attributes:
        source_map.keys[(*path, attr.key)] = (block.line, attr.key_col)
        source_map.values[(*path, attr.key)] = (block.line, attr.value_col)
    if "id" in attrs:
        task["id"] = attrs["id"].value
    else:
        base = slug(block.heading[0], fallback="") if block.heading else ""
        task["id"] = unique(base or f"{phase_id}-{block.index}", taken)
        source_map.values[(*path, "id")] = (block.line, block.col)
    taken.add(str(task["id"]))
    name = attrs["name"].value if "name" in attrs else None
    if name is None and block.heading is not None and block.heading[1] != -1:
        name = block.heading[0]
    if name:
        task["name"] = name
    if block.description:
        task["description"] = block.description
    task["run"] = block.run
    for key in _TEXT_ATTRIBUTES:
        if key in attrs:
            task[key] = attrs[key].value
    for key in _LIST_ATTRIBUTES:
        if key not in attrs:
            continue
        attr = attrs[key]
        items: list[str] = []
        offset = 0
        for part in attr.value.split(","):
            col = attr.value_col + offset + (len(part) - len(part.lstrip()))
            offset += len(part) + 1
            if part.strip():
                source_map.values[(*path, key, len(items))] = (block.line, col)
                items.append(part.strip())
        task[key] = items
    if "validate" in attrs:
        task["validate"] = [attrs["validate"].value]
        source_map.values[(*path, "validate", 0)] = (block.line, attrs["validate"].value_col)
    if "retry" in attrs:
        attr = attrs["retry"]
        if attr.value.isdigit():
            task["retry"] = {"attempts": int(attr.value)}
            source_map.values[(*path, "retry", "attempts")] = (block.line, attr.value_col)
        else:
            problems.append(
                (
                    block.line,
                    attr.value_col,
                    f"retry={attr.value!r} is not a number of attempts",
                    "write the total number of attempts, e.g. retry=3",
                )
            )
    return task, problems


def _in_document_order(blocks: list[_Block], tasks: list[dict[str, object]]) -> None:
    """Blocks of one section run top to bottom, as people read a runbook: each block
    needs the block above it. A ``{parallel}`` block, or one with its own ``needs=``, is
    out of that chain: it waits for nothing else and nothing waits for it."""
    previous: str | None = None
    for block, task in zip(blocks, tasks, strict=True):
        if block.parallel or any(a.key == "needs" for a in block.attributes):
            continue
        if previous is not None:
            task["needs"] = [previous]
        previous = str(task["id"])


def read_runbook(text: str, filename: str) -> Runbook:
    """Read a Markdown runbook into plan data; problems instead of exceptions."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    front, source_map, problems, skipped = _front_matter(lines, filename)
    # Blank lines keep markdown-it's line numbers equal to the file's.
    body = "\n" * skipped + "\n".join(lines[skipped:])
    md = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    reader = _Reader(lines)
    reader.read(md.parse(body))
    raw_problems = list(reader.problems)
    data: dict[str, object] = {}
    data["name"] = front.get("name", reader.h1 or PurePath(filename).stem or "runbook")
    data["project"] = front.get("project", slug(PurePath(filename).stem, fallback="runbook"))
    description = front.get("description", reader.intro)
    if description is not None:
        data["description"] = description
    data.update({k: v for k, v in front.items() if k not in data})
    phases: list[dict[str, object]] = []
    phase_ids: set[str] = set()
    explicit = {
        a.value for p in reader.phases for b in p.blocks for a in b.attributes if a.key == "id"
    }
    taken = set(explicit)
    for phase in reader.phases:
        if not phase.blocks:
            continue
        k = len(phases)
        phase_id = unique(slug(phase.title, fallback="phase"), phase_ids)
        phase_ids.add(phase_id)
        entry: dict[str, object] = {"id": phase_id}
        source_map.values[("phases", k)] = (phase.line, 1)
        source_map.values[("phases", k, "id")] = (phase.line, 1)
        if phase.title and phase.title != phase_id:
            entry["name"] = phase.title
        if phase.description:
            entry["description"] = phase.description
        tasks = []
        for j, block in enumerate(phase.blocks):
            task, more = _task(block, phase_id, taken, ("phases", k, "tasks", j), source_map)
            tasks.append(task)
            raw_problems.extend(more)
        _in_document_order(phase.blocks, tasks)
        entry["tasks"] = tasks
        phases.append(entry)
    if not phases:
        problems.append(
            PlanProblem(
                filename,
                1,
                1,
                "the runbook has no ```bash, ```sh or ```shell code blocks",
                "put each command in a fenced block tagged bash under a '## phase' heading",
            )
        )
        return Runbook(None, source_map, problems)
    data["phases"] = phases
    problems.extend(
        PlanProblem(filename, ln, col, cause, fix) for ln, col, cause, fix in raw_problems
    )
    warnings = [example_warning(filename, ln, col, words) for ln, col, words in reader.alternatives]
    return Runbook(data, source_map, problems, warnings)
