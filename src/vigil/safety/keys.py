"""The vigil signing key and the list of trusted public keys.

Layout under the user's config directory (never inside a workspace, so sandboxed steps,
which see only the workspace overlay, cannot read it)::

    keys/               mode 0700
      signing.key       hex Ed25519 private key (32-byte seed), mode 0600
      trusted.json      every public key whose grants and checkpoints are accepted

``rotate`` makes a new active key and keeps the old public keys trusted, so grants signed
before stay valid until they expire. ``init --force`` starts over: only the new key is
trusted afterwards.
"""

from __future__ import annotations

import functools
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from vigil.config import user_config_dir

if TYPE_CHECKING:
    import biscuit_auth
from vigil.errors import ExitCode, VigilError

SIGNING_KEY_FILE = "signing.key"
TRUSTED_FILE = "trusted.json"


class KeyExists(VigilError):
    code = "VIGIL-KEY-EXISTS"
    title = "a signing key already exists"
    remedy = "Use `vigil keys rotate` to replace it, or `vigil keys init --force` to start over."
    exit_code = ExitCode.REFUSED


class KeyMissing(VigilError):
    code = "VIGIL-KEY-MISSING"
    title = "no vigil signing key"
    remedy = "Create one with `vigil keys init`."
    exit_code = ExitCode.USAGE


class KeyInvalid(VigilError):
    code = "VIGIL-KEY-INVALID"
    title = "the signing key or the trusted key list is unreadable or unsafe"
    remedy = (
        "Fix the file named (mode 0600 for the private key) or start over with `keys init --force`."
    )
    exit_code = ExitCode.REFUSED


@dataclass(frozen=True)
class SigningKey:
    """The active Ed25519 key: signs grants (as Biscuit root key) and audit checkpoints."""

    private_hex: str

    @functools.cached_property
    def _private(self) -> Ed25519PrivateKey:
        # Cached: loading the key derives its public half, which costs more than a signature.
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(self.private_hex))

    @functools.cached_property
    def public_hex(self) -> str:
        """The public key as 64 hex digits."""
        return self._private.public_key().public_bytes_raw().hex()

    def biscuit_root(self) -> biscuit_auth.PrivateKey:
        """The key as a Biscuit root private key."""
        import biscuit_auth  # only grants need it: reading a run's state does not

        return biscuit_auth.PrivateKey(f"ed25519-private/{self.private_hex}")

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature of ``message``."""
        return self._private.sign(message)

    @staticmethod
    def generate() -> SigningKey:
        """A fresh random key."""
        return SigningKey(Ed25519PrivateKey.generate().private_bytes_raw().hex())


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose signatures vigil accepts."""

    public_hex: str
    created: str
    retired: str | None = None

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        try:
            self._public.verify(signature, message)
        except Exception:  # InvalidSignature, or a malformed key or signature
            return False
        return True

    @functools.cached_property
    def _public(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.public_hex))


def keys_dir(base: Path | None = None) -> Path:
    """Directory of the key files (``<user config>/keys``)."""
    return (base or user_config_dir()) / "keys"


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` atomically with ``mode`` from the first byte (never briefly readable)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _ensure_dir(base: Path | None) -> Path:
    directory = keys_dir(base)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    return directory


def _save_trusted(directory: Path, keys: list[TrustedKey]) -> None:
    data = {
        "keys": [
            {"public_key": k.public_hex, "created": k.created, "retired": k.retired} for k in keys
        ]
    }
    _write_private(directory / TRUSTED_FILE, json.dumps(data, indent=2) + "\n", 0o644)


def trusted_keys(base: Path | None = None) -> list[TrustedKey]:
    """Every trusted public key, oldest first; empty when no key was ever created."""
    path = keys_dir(base) / TRUSTED_FILE
    try:
        data = json.loads(path.read_text())
        return [
            TrustedKey(str(k["public_key"]), str(k["created"]), k.get("retired"))
            for k in data["keys"]
        ]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyInvalid(f"{path} is not a valid trusted key list: {exc}") from exc


def active_key(base: Path | None = None) -> SigningKey:
    """The active signing key; refuses a key file others can read."""
    path = keys_dir(base) / SIGNING_KEY_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyMissing(f"no signing key at {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyInvalid(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); need 0600")
    text = path.read_text().strip()
    try:
        key = SigningKey(text)
        key.public_hex  # noqa: B018 - parses the key, so a damaged file fails here
    except ValueError as exc:
        raise KeyInvalid(f"{path} does not hold an Ed25519 private key") from exc
    return key


def init_key(*, force: bool = False, base: Path | None = None) -> SigningKey:
    """Create the signing key and trust it; refuses to overwrite unless ``force``."""
    directory = _ensure_dir(base)
    path = directory / SIGNING_KEY_FILE
    if path.exists() and not force:
        raise KeyExists(f"{path} already exists")
    key = SigningKey.generate()
    _write_private(path, key.private_hex + "\n", 0o600)
    _save_trusted(directory, [TrustedKey(key.public_hex, _now())])
    return key


def rotate_key(base: Path | None = None) -> SigningKey:
    """Make a new active key; old public keys stay trusted so their grants stay valid."""
    old = active_key(base)
    directory = _ensure_dir(base)
    now = _now()
    kept = [
        TrustedKey(
            k.public_hex, k.created, k.retired or (now if k.public_hex == old.public_hex else None)
        )
        for k in trusted_keys(base)
    ]
    key = SigningKey.generate()
    # Trust the new key before it can sign anything, so a crash in between loses nothing.
    _save_trusted(directory, [*kept, TrustedKey(key.public_hex, now)])
    _write_private(directory / SIGNING_KEY_FILE, key.private_hex + "\n", 0o600)
    return key
