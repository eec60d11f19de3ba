"""RFC 6962 Merkle tree hashing, as Certificate Transparency and C2SP transparency logs use.

Leaves are hashed ``SHA-256(0x00 || data)`` and interior nodes ``SHA-256(0x01 || l || r)``,
so a leaf can never be passed off as a node. The tree over ``n`` leaves splits at the
largest power of two below ``n``. :class:`Frontier` computes the same root incrementally,
keeping one hash per set bit of the tree size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """Hash of one leaf."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash over these leaf hashes (RFC 6962 section 2.1, recursive form)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(root_of(leaf_hashes[:k]), root_of(leaf_hashes[k:]))


@dataclass
class Frontier:
    """The roots of the perfect subtrees of a growing tree: O(log n) state, O(1) amortized add."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def add(self, leaf: bytes) -> None:
        """Append a leaf hash."""
        node = leaf
        n = self.size
        # Each trailing 1-bit of the old size is a full subtree the new leaf completes.
        while n & 1:
            node = node_hash(self.hashes.pop(), node)
            n >>= 1
        self.hashes.append(node)
        self.size += 1

    def root(self) -> bytes:
        """The tree hash of every leaf added so far."""
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            node = node_hash(left, node)
        return node

    def to_hex(self) -> list[str]:
        """The state as hex strings (stored next to checkpoints to resume cheaply)."""
        return [h.hex() for h in self.hashes]

    @staticmethod
    def from_hex(size: int, hashes: list[str]) -> Frontier:
        """Rebuild a frontier saved by :meth:`to_hex`."""
        if len(hashes) != bin(size).count("1"):
            raise ValueError("frontier does not match its size")
        return Frontier(size, [bytes.fromhex(h) for h in hashes])
