"""Masking secrets in logs and reports, whole or streamed, in the encodings they leak in.

Each secret value is searched for raw, JSON-escaped, URL-encoded, as hex, and as base64
(standard and URL-safe, padded or not). A value inside a longer base64 stream is encoded
differently depending on its offset modulo 3, so the characters it alone determines are
searched for at each of the three alignments. Well-known token formats (GitHub, AWS,
Slack, OpenAI keys, JWTs, PEM private keys) are masked even when nobody declared them.

Occurrences may overlap; their ranges are merged and each merged range becomes ``***``
(as GitHub Actions prints). The mask is shorter than any maskable secret, so masking repeats
until no occurrence is left, even one made by the mask and its neighbours.

:class:`StreamRedactor` masks output as it arrives: it holds back the last
``hold`` characters (the longest encoded form) so that a secret split across two chunks is
still seen whole, and never emits a prefix of a possible occurrence.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

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
_TOKEN_HOLD = 512
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
    """Redacts a stream chunk by chunk; ``feed`` what arrives, ``close`` at the end."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.hold = max(redactor.longest, _TOKEN_HOLD if redactor.tokens else 0)
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: str | bytes) -> str:
        """The part of the stream so far that is safe to show, masked."""
        if isinstance(chunk, bytes):
            chunk = self._decoder.decode(chunk)
        buffer = self._pending + chunk
        ranges = self.redactor.ranges(buffer)
        cut = max(0, len(buffer) - self.hold)
        # Never cut inside an occurrence, nor emit one that may still grow (a token
        # running to the end of what has arrived so far).
        for start, end in reversed(ranges):
            if start < cut < end or (end == len(buffer) and start < cut):
                cut = start
        if cut == 0 and len(buffer) > _MAX_HOLD:
            cut = len(buffer)
        emit, self._pending = buffer[:cut], buffer[cut:]
        return self.redactor.redact(emit)

    def close(self) -> str:
        """The rest of the stream, masked."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return self.redactor.redact(rest)
