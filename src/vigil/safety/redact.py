"""Masking secrets in logs and reports, whole or streamed, in the encodings they leak in.

Each secret value is searched for raw, JSON-escaped, URL-encoded, as hex, and as base64
(standard and URL-safe, padded or not). A value inside a longer base64 stream is encoded
differently depending on its offset modulo 3, so the characters it alone determines are
searched for at each of the three alignments. Well-known token formats (GitHub, AWS,
Slack, OpenAI keys, JWTs, PEM private keys) are masked even when nobody declared them.

Occurrences may overlap; their ranges are merged and each merged range becomes ``***``
(as GitHub Actions prints). The mask is shorter than any maskable secret, so masking repeats
until no occurrence is left, even one made by the mask and its neighbours.

:class:`StreamRedactor` masks output as it arrives. It holds back exactly the tail that
could still be the start of a secret (a prefix of any encoded form, or a partial match of
a token pattern) and emits everything before it at once. Time never releases the held
tail: only the next bytes (proving it is not a secret) or the end of the stream do, so a
secret written in parts with pauses between them is still masked whole. Memory is bounded:
the tail is shorter than the longest encoded form, except for a token that keeps matching
(a private key block), which is masked and swallowed up to its end once it passes
``_MAX_HOLD`` characters.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

import regex

MASK = "***"
MIN_LENGTH = 4
"""Values shorter than this are not masked: they would hide half of every log."""

TOKEN_PATTERNS = (
    r"gh[pousr]_[A-Za-z0-9]{36,255}",
    r"github_pat_[A-Za-z0-9_]{22,255}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"xox[abposr]-[A-Za-z0-9-]{10,255}",
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,255}",
    r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----|[\s\S]*\Z)",
)
_TOKENS = re.compile("|".join(f"(?:{p})" for p in TOKEN_PATTERNS))
# The same patterns for the ``regex`` module, whose partial matching says whether the end
# of what has arrived could still become a token.
_TOKENS_PARTIAL = regex.compile("|".join(f"(?:{p})" for p in TOKEN_PATTERNS))
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----")
_PEM_END_HOLD = 64
_MAX_HOLD = 1 << 20


def _base64_cores(data: bytes) -> set[str]:
    """The base64 characters determined by ``data`` alone, at each offset modulo 3."""
    cores: set[str] = set()
    n = len(data)
    for k in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * k + data).decode().rstrip("=")
            first = -(-8 * k // 6)
            last = 8 * (k + n) // 6
            cores.add(text[first:last])
    return cores


def encoded_forms(value: str) -> set[str]:
    """Every form of ``value`` that is searched for."""
    raw = value.encode()
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value),
        raw.hex(),
        raw.hex().upper(),
    }
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in list(forms)}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        full = encode(raw).decode()
        forms |= {full, full.rstrip("=")}
    forms |= _base64_cores(raw)
    return {f for f in forms if len(f) >= MIN_LENGTH}


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class Redactor:
    """Masks the given secret values (and well-known tokens) in text."""

    def __init__(self, values: Iterable[str] = (), *, tokens: bool = True) -> None:
        self.forms: tuple[str, ...] = tuple(
            sorted({f for v in values if len(v) >= MIN_LENGTH for f in encoded_forms(v)}, key=len)
        )
        self.tokens = tokens
        self.longest = max((len(f) for f in self.forms), default=0)
        self._prefixes = frozenset(f[:n] for f in self.forms for n in range(1, len(f)))

    def held_from(self, text: str) -> int:
        """Where the tail of ``text`` that could still grow into an occurrence begins
        (``len(text)`` when nothing can)."""
        start = len(text)
        for i in range(max(0, len(text) - self.longest + 1), len(text)):
            if text[i:] in self._prefixes:
                start = i
                break
        if self.tokens:
            for match in _TOKENS_PARTIAL.finditer(text, partial=True):
                # A partial match, or a whole one reaching the end, may still grow.
                if match.end() == len(text):
                    start = min(start, match.start())
        return start

    def ranges(self, text: str) -> list[tuple[int, int]]:
        """Merged ``[start, end)`` ranges of every occurrence in ``text``."""
        found: list[tuple[int, int]] = []
        for form in self.forms:
            at = text.find(form)
            while at != -1:
                found.append((at, at + len(form)))
                at = text.find(form, at + 1)
        if self.tokens:
            found += [m.span() for m in _TOKENS.finditer(text)]
        return _merge(found)

    @staticmethod
    def _mask(text: str, ranges: list[tuple[int, int]]) -> str:
        out: list[str] = []
        pos = 0
        for start, end in ranges:
            out.append(text[pos:start])
            out.append(MASK)
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def redact(self, text: str) -> str:
        """``text`` with every occurrence masked."""
        for _ in range(16):
            ranges = self.ranges(text)
            if not ranges:
                return text
            text = self._mask(text, ranges)
        return text


class StreamRedactor:
    """Redacts a stream chunk by chunk; ``feed`` what arrives, ``close`` at its end.

    There is no flush by time: what is held back is a possible secret's beginning.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._pending = ""
        self._in_key = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def held(self) -> int:
        """How many characters are held back now (for tests and the memory bound)."""
        return len(self._pending)

    def feed(self, chunk: str | bytes) -> str:
        """The part of the stream so far that cannot belong to a secret, masked."""
        if isinstance(chunk, bytes):
            chunk = self._decoder.decode(chunk)
        buffer = self._pending + chunk
        if self._in_key:
            end = _PEM_END.search(buffer)
            if end is None:
                # Inside a private key already masked: swallow it, keep what may be its end.
                self._pending = buffer[-_PEM_END_HOLD:]
                return ""
            self._in_key = False
            buffer = buffer[end.end() :]
        cut = self.redactor.held_from(buffer)
        # Never cut inside an occurrence, nor right after one: the next bytes may extend
        # it or start an adjacent one, and the whole run must become one mask.
        for start, end_at in reversed(self.redactor.ranges(buffer)):
            if start < cut <= end_at:
                cut = start
        if len(buffer) - cut > _MAX_HOLD:
            return self._overflow(buffer)
        emit, self._pending = buffer[:cut], buffer[cut:]
        return self.redactor.redact(emit)

    def _overflow(self, buffer: str) -> str:
        """The held tail outgrew the bound: it is one long match, so mask it now."""
        begins = list(_PEM_BEGIN.finditer(buffer))
        if begins and _PEM_END.search(buffer, begins[-1].end()) is None:
            self._in_key = True
        self._pending = ""
        return self.redactor.redact(buffer)

    def close(self) -> str:
        """The rest of the stream, masked: the end proves what was held is complete."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if self._in_key:
            # The key's mask went out when it overflowed; what follows its end is shown.
            self._in_key = False
            end = _PEM_END.search(rest)
            return "" if end is None else self.redactor.redact(rest[end.end() :])
        return self.redactor.redact(rest)
