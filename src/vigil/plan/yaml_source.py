"""YAML text to plain data plus a :class:`SourceMap`, safely.

PyYAML's node API keeps the position of every key and value, which ``yaml.safe_load``
throws away. Converting nodes ourselves also lets us refuse what a plan never needs and a
hostile file may use: duplicate keys (silently "last wins" in PyYAML), alias expansion
bombs, recursive aliases and nesting deep enough to exhaust the stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from vigil.plan.problems import PlanProblem
from vigil.plan.sourcemap import DataPath, Position, SourceMap

MAX_VALUES = 100_000
"""More values than any real plan has; alias bombs expand far beyond it."""

MAX_DEPTH = 64

_MERGE_TAG = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})

_SYNTAX_FIXES = (
    ("'\\t'", "indent with spaces; YAML does not allow tabs for indentation"),
    ("mapping values are not allowed", "put a space after ':' or quote a value that has ': '"),
    ("undefined alias", "define the anchor (&name) before using it (*name)"),
    ("single document", "keep one document per plan file; remove the extra '---'"),
    ("could not find expected ':'", "write 'key: value', or quote text that is not a key"),
    ("did not find expected key", "check the indentation: keys of one mapping line up"),
    ("did not find expected '-'", "check the indentation: list items line up under each other"),
    ("unacceptable character", "remove the control character; a plan is UTF-8 text"),
)


class _Refused(Exception):
    def __init__(self, position: Position, cause: str, fix: str) -> None:
        super().__init__(cause)
        self.position = position
        self.cause = cause
        self.fix = fix


@dataclass
class YamlDocument:
    """The outcome of reading YAML: data (None when unreadable), positions, problems."""

    data: object
    source_map: SourceMap
    problems: list[PlanProblem] = field(default_factory=list)


def _pos(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _syntax_fix(message: str) -> str:
    for needle, fix in _SYNTAX_FIXES:
        if needle in message:
            return fix
    return "fix the YAML syntax at this position"


def _position_of_offset(text: str, offset: int) -> Position:
    before = text[:offset]
    line = before.count("\n") + 1
    return (line, offset - (before.rfind("\n") + 1) + 1)


class _Converter:
    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.map = SourceMap()
        self.problems: list[tuple[Position, str, str]] = []
        self.count = 0
        self.active: set[int] = set()

    def convert(self, node: Node, path: DataPath, depth: int) -> object:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _Refused(
                _pos(node),
                f"the plan expands to more than {MAX_VALUES} values",
                "remove the aliases (*name) that repeat large parts of the file",
            )
        if depth > MAX_DEPTH or id(node) in self.active:
            raise _Refused(
                _pos(node),
                "the plan nests too deeply or an alias refers to itself",
                "flatten the structure; an anchor cannot contain its own alias",
            )
        self.map.values[path] = _pos(node)
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if node.tag not in _COLLECTION_TAGS:
            # A tag such as !!python/object would mean "build this object": never.
            raise _Refused(
                _pos(node),
                f"the YAML tag '{node.tag}' is not allowed in a plan",
                "remove the tag; plans hold plain mappings, lists and values",
            )
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [
                    self.convert(item, (*path, i), depth + 1) for i, item in enumerate(node.value)
                ]
            if isinstance(node, MappingNode):
                return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))
        raise _Refused(_pos(node), "this YAML value cannot be read", "use plain YAML values")

    def _scalar(self, node: ScalarNode) -> object:
        try:
            return self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError, TypeError) as exc:
            # PyYAML raises ValueError for dates like 2024-13-45, ConstructorError for tags.
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.problems.append(
                (
                    _pos(node),
                    f"cannot read the value {node.value!r}: {reason}",
                    "quote the value to make it a string, and remove any '!tag'",
                )
            )
            return node.value

    def _entries(self, node: MappingNode, depth: int) -> list[tuple[Node, Node, bool]]:
        """Key/value pairs with merge keys (``<<: *base``) expanded; merged ones flagged."""
        own: list[tuple[Node, Node, bool]] = []
        merged: list[tuple[Node, Node, bool]] = []
        for key, value in node.value:
            if key.tag != _MERGE_TAG:
                own.append((key, value, False))
                continue
            sources = value.value if isinstance(value, SequenceNode) else [value]
            for source in sources:
                if not isinstance(source, MappingNode) or depth > MAX_DEPTH:
                    raise _Refused(
                        _pos(source),
                        "'<<' merges only mappings",
                        "write '<<: *anchor' where the anchor names a mapping",
                    )
                merged.extend((k, v, True) for k, v, _ in self._entries(source, depth + 1))
        return own + merged

    def _mapping(self, node: MappingNode, path: DataPath, depth: int) -> dict[str, object]:
        out: dict[str, object] = {}
        seen: dict[str, Position] = {}
        for key_node, value_node, merged in self._entries(node, depth):
            if not isinstance(key_node, ScalarNode):
                self.problems.append(
                    (_pos(key_node), "a key must be plain text", "write 'key: value'")
                )
                continue
            # Keys are taken as written: YAML 1.1 would turn `on:` into True.
            key = str(key_node.value)
            if key in seen:
                if not merged:
                    line, _ = seen[key]
                    self.problems.append(
                        (
                            _pos(key_node),
                            f"duplicate key '{key}' (first at line {line})",
                            "keep one of the two; YAML keys must be unique in a mapping",
                        )
                    )
                continue
            seen[key] = _pos(key_node)
            self.map.keys[(*path, key)] = _pos(key_node)
            out[key] = self.convert(value_node, (*path, key), depth + 1)
        return out


def read_yaml(text: str, filename: str) -> YamlDocument:
    """Parse one YAML document from ``text``; problems instead of exceptions."""
    problems: list[PlanProblem] = []
    try:
        # The reader checks for unprintable characters as soon as it is made.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line, col = _position_of_offset(text, exc.position)
        cause = f"unacceptable character {chr(exc.character)!r}"
        problems.append(PlanProblem(filename, line, col, cause, _syntax_fix(str(exc))))
        return YamlDocument(None, SourceMap(), problems)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            problems.append(PlanProblem(filename, line, col, message, _syntax_fix(message)))
            return YamlDocument(None, SourceMap(), problems)
        except yaml.reader.ReaderError as exc:
            line, col = _position_of_offset(text, exc.position)
            cause = f"unacceptable character {chr(exc.character)!r}"
            problems.append(PlanProblem(filename, line, col, cause, _syntax_fix(str(exc))))
            return YamlDocument(None, SourceMap(), problems)
        except (yaml.YAMLError, RecursionError) as exc:
            problems.append(
                PlanProblem(
                    filename,
                    1,
                    1,
                    f"not readable as YAML: {type(exc).__name__}",
                    "fix the YAML syntax; nest less deeply",
                )
            )
            return YamlDocument(None, SourceMap(), problems)
        if root is None:
            return YamlDocument(None, SourceMap())
        converter = _Converter(loader)
        try:
            data = converter.convert(root, (), 0)
        except _Refused as refused:
            line, col = refused.position
            problems.append(PlanProblem(filename, line, col, refused.cause, refused.fix))
            return YamlDocument(None, SourceMap(), problems)
        problems.extend(
            PlanProblem(filename, line, col, cause, fix)
            for (line, col), cause, fix in converter.problems
        )
        return YamlDocument(data, converter.map, problems)
    finally:
        loader.dispose()
