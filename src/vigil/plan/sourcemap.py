"""Where each value of a plan came from: data paths mapped to ``line:col`` in the file.

Both readers (YAML and Markdown) produce plain data plus a :class:`SourceMap`, so that
validation errors, which speak in data paths such as ``("phases", 0, "tasks", 2, "run")``,
can be reported at the line a person has to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DataPath = tuple[str | int, ...]
"""A path into plan data: mapping keys and list indexes."""

Position = tuple[int, int]
"""A 1-based ``(line, col)``."""

# Pydantic reports fields by alias or by name depending on what the input used.
_ALIASES = {"validate": "checks", "checks": "validate"}


@dataclass
class SourceMap:
    """Positions of values and of mapping keys, by data path."""

    values: dict[DataPath, Position] = field(default_factory=dict)
    keys: dict[DataPath, Position] = field(default_factory=dict)

    def shifted(self, lines: int) -> SourceMap:
        """The same map with every line moved down by ``lines`` (for embedded YAML)."""
        return SourceMap(
            {p: (ln + lines, c) for p, (ln, c) in self.values.items()},
            {p: (ln + lines, c) for p, (ln, c) in self.keys.items()},
        )

    def add(self, other: SourceMap, prefix: DataPath = ()) -> None:
        """Merge ``other``'s positions in, under ``prefix``."""
        for p, pos in other.values.items():
            self.values[prefix + p] = pos
        for p, pos in other.keys.items():
            self.keys[prefix + p] = pos

    def position(self, path: DataPath, *, key: bool = False) -> Position:
        """The position of ``path`` (its key when ``key``), else of its nearest ancestor."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.values:
                return self.values[prefix]
            if prefix in self.keys:
                return self.keys[prefix]
        return (1, 1)


def resolve(data: object, loc: tuple[str | int, ...]) -> tuple[DataPath, bool]:
    """Follow a validation ``loc`` through ``data``.

    Returns the longest data path that exists and whether ``loc`` went further than the
    data does (a union member tag, an element made up by a before-validator, ...).
    """
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            if part in node:
                path.append(part)
                node = node[part]
                continue
            alias = _ALIASES.get(str(part))
            if alias is not None and alias in node:
                path.append(alias)
                node = node[alias]
                continue
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
            continue
        return tuple(path), True
    return tuple(path), False
