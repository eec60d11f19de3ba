"""Ids made from text people wrote: headings, file names, bad ids in need of a suggestion."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Container

_NOT_ID = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str, *, fallback: str = "step") -> str:
    """A valid id from ``text``: ``"1. Build & test"`` -> ``"1-build-test"``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    out = _NOT_ID.sub("-", ascii_text.lower()).strip("-_.")
    out = re.sub(r"-{2,}", "-", out)[:100].rstrip("-_.")
    return out or fallback


def unique(base: str, taken: Container[str]) -> str:
    """``base``, or ``base-2``, ``base-3``, ... whichever is not ``taken``."""
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"
