"""Words in messages: a count and the noun that agrees with it."""

from __future__ import annotations


def plural(count: int, word: str, words: str | None = None) -> str:
    """``count`` and the noun agreeing with it: "1 task", "2 tasks", "0 tasks";
    ``words`` is the plural when it is not ``word`` + "s" ("1 entry", "2 entries")."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"
