"""Keys: private key files are private, never overwritten by accident, rotation keeps trust."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vigil.safety.keys import (
    KeyExists,
    KeyInvalid,
    KeyMissing,
    active_key,
    init_key,
    keys_dir,
    rotate_key,
    trusted_keys,
)


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def test_init_creates_a_private_key_only_its_owner_can_read() -> None:
    key = init_key()
    directory = keys_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "signing.key").stat().st_mode) == 0o600
    assert [k.public_hex for k in trusted_keys()] == [key.public_hex]
    assert active_key() == key


def test_init_refuses_to_overwrite_without_force() -> None:
    first = init_key()
    with pytest.raises(KeyExists):
        init_key()
    assert active_key() == first
    second = init_key(force=True)
    assert second != first
    assert [k.public_hex for k in trusted_keys()] == [second.public_hex]


def test_rotate_keeps_old_public_keys_trusted() -> None:
    first = init_key()
    second = rotate_key()
    third = rotate_key()
    assert active_key() == third
    keys = trusted_keys()
    assert [k.public_hex for k in keys] == [first.public_hex, second.public_hex, third.public_hex]
    assert keys[0].retired and keys[1].retired and keys[2].retired is None
    # Old private keys are gone: only the active one can sign.
    assert first.private_hex not in (keys_dir() / "signing.key").read_text()


def test_missing_key_and_unsafe_modes_are_refused() -> None:
    with pytest.raises(KeyMissing):
        active_key()
    init_key()
    path = keys_dir() / "signing.key"
    os.chmod(path, 0o644)
    with pytest.raises(KeyInvalid):
        active_key()
    os.chmod(path, 0o600)
    path.write_text("not hex at all\n")
    with pytest.raises(KeyInvalid):
        active_key()


def test_damaged_trusted_list_is_an_error_not_an_empty_list() -> None:
    init_key()
    (keys_dir() / "trusted.json").write_text("{broken")
    with pytest.raises(KeyInvalid):
        trusted_keys()


def test_signatures_verify_only_with_the_right_key() -> None:
    key = init_key()
    other = rotate_key()
    first, second = trusted_keys()
    signature = key.sign(b"message")
    assert first.verify(signature, b"message")
    assert not first.verify(signature, b"messagE")
    assert not second.verify(signature, b"message")
    assert second.verify(other.sign(b"m"), b"m")
