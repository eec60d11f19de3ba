"""Signed checkpoints in the C2SP ``tlog-checkpoint`` / ``signed-note`` format.

A checkpoint is a note whose text is three lines (origin, tree size, base64 root hash),
followed by a blank line and one signature line per signer::

    vigil-audit
    42
    qJ0ZP6d8S7Qn4K8yFYv0b5Q8nT7bJ3m8V5o6f8oQZ8I=

    — vigil-3f2a9c0d1e4b5a69 AbCdEf…

The signature line holds the key name and ``base64(key hash || Ed25519 signature)``, where
the key hash is the first 4 bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from vigil.safety.keys import SigningKey, TrustedKey

_DASH = "\u2014"
_ED25519 = b"\x01"


class NoteError(ValueError):
    """A checkpoint that is malformed or carries no trusted signature."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: the log named ``origin`` had ``size`` entries with ``root``."""

    origin: str
    size: int
    root: bytes
    signer: str


def key_name(public_hex: str) -> str:
    """The name a vigil key signs notes under."""
    return f"vigil-{public_hex[:16]}"


def _key_hash(name: str, public_hex: str) -> bytes:
    data = name.encode() + b"\n" + _ED25519 + bytes.fromhex(public_hex)
    return hashlib.sha256(data).digest()[:4]


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """The unsigned text of a checkpoint."""
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign(text: str, key: SigningKey) -> str:
    """``text`` followed by a signature line of ``key``."""
    name = key_name(key.public_hex)
    blob = _key_hash(name, key.public_hex) + key.sign(text.encode())
    return f"{text}\n{_DASH} {name} {base64.b64encode(blob).decode()}\n"


def open_checkpoint(note: str, trusted: list[TrustedKey]) -> Checkpoint:
    """Parse ``note`` and verify it carries a signature of a trusted key."""
    text, sep, signatures = note.partition("\n\n")
    if not sep or not text:
        raise NoteError("not a signed note (no blank line before the signatures)")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise NoteError("a checkpoint has an origin, a size and a root hash")
    origin, size_text, root_text = lines[:3]
    try:
        size = int(size_text)
        root = base64.b64decode(root_text, validate=True)
    except ValueError as exc:
        raise NoteError(f"bad size or root hash: {exc}") from exc
    if size < 0 or len(root) != 32 or str(size) != size_text:
        raise NoteError("bad size or root hash")
    by_name = {key_name(k.public_hex): k for k in trusted}
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise NoteError(f"malformed signature line: {line[:40]!r}")
        key = by_name.get(parts[1])
        if key is None:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if blob[:4] == _key_hash(parts[1], key.public_hex) and key.verify(blob[4:], text.encode()):
            return Checkpoint(origin, size, root, key.public_hex)
    raise NoteError("no signature by a trusted key")
