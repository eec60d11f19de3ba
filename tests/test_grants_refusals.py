"""Grants: every way a grant can be wrong is refused, each with its own code."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import biscuit_auth as bz
import pytest

from vigil.safety import tokens
from vigil.safety.errors import (
    GrantBreakGlass,
    GrantExpired,
    GrantInvalid,
    GrantNotFound,
    GrantPlan,
    GrantRevoked,
    GrantScope,
    GrantUntrusted,
)
from vigil.safety.grants import (
    attenuate_grant,
    check_grant,
    create_grant,
    grant_from_token,
    grants_dir,
    list_grants,
    load_grant,
    revoke_grant,
)
from vigil.safety.keys import SigningKey, active_key, init_key, rotate_key, trusted_keys
from vigil.safety.tokens import Request

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PLAN_A = "sha256:" + "a" * 64
PLAN_B = "sha256:" + "b" * 64


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "config"
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(cfg))
    init_key()
    return cfg


def _grant(**overrides: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "project": "shop",
        "environments": ("prod",),
        "capabilities": ("deploy", "push"),
        "expires_in": 3600.0,
        "now": NOW,
    }
    args.update(overrides)
    return create_grant(**args)  # type: ignore[arg-type]


def _refusal(grant, request: Request, now: datetime = NOW) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception) as info:
        check_grant(grant, request, now)
    return str(getattr(info.value, "code", type(info.value).__name__))


def test_a_valid_grant_allows_what_it_names_and_running_tasks() -> None:
    grant = _grant()
    check_grant(grant, Request("shop", "prod", "deploy"), NOW)
    check_grant(grant, Request("shop", "prod", "push"), NOW + timedelta(minutes=59))
    check_grant(grant, Request("shop", "prod", tokens.RUN), NOW)


def test_each_refusal_has_its_own_code() -> None:
    grant = _grant()
    bound = _grant(plan_hash=PLAN_A)
    assert _refusal(grant, Request("other", "prod", "deploy")) == GrantScope.code
    assert _refusal(grant, Request("shop", "staging", "deploy")) == GrantScope.code
    assert _refusal(grant, Request("shop", "prod", "network")) == GrantScope.code
    assert _refusal(grant, Request("shop", "prod", "deploy"), NOW + timedelta(hours=2)) == (
        GrantExpired.code
    )
    assert _refusal(bound, Request("shop", "prod", "deploy", PLAN_B)) == GrantPlan.code
    assert _refusal(bound, Request("shop", "prod", "deploy", None)) == GrantPlan.code
    check_grant(bound, Request("shop", "prod", "deploy", PLAN_A), NOW)
    revoke_grant(grant.id)
    assert _refusal(grant, Request("shop", "prod", "deploy")) == GrantRevoked.code


def test_scope_refusals_say_which_part_is_wrong() -> None:
    grant = _grant()
    causes = []
    for request in (
        Request("other", "prod", "deploy"),
        Request("shop", "dev", "deploy"),
        Request("shop", "prod", "network"),
    ):
        with pytest.raises(GrantScope) as info:
            check_grant(grant, request, NOW)
        causes.append(info.value.cause)
    assert "wrong project" in causes[0]
    assert "wrong environment" in causes[1]
    assert "missing capability" in causes[2] and "network" in causes[2]


def test_every_single_bit_flip_is_refused_as_invalid() -> None:
    token = _grant().token.to_base64()
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    trusted = trusted_keys()
    for bit in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(GrantInvalid):
            tokens.verify(base64.urlsafe_b64encode(bytes(flipped)).decode(), trusted)


@pytest.mark.parametrize("garbage", ["", "not a token", "AAAA", "eyJhbGciOiJub25lIn0", "\x00" * 40])
def test_garbage_is_invalid(garbage: str) -> None:
    with pytest.raises(GrantInvalid):
        tokens.verify(garbage, trusted_keys())


def test_token_signed_by_an_unknown_key_is_untrusted() -> None:
    stranger = SigningKey.generate()
    forged = tokens.mint(
        stranger,
        grant_id="g-forged",
        project="shop",
        environments=("prod",),
        capabilities=("deploy",),
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=1),
    )
    with pytest.raises(GrantUntrusted):
        tokens.verify(forged.to_base64(), trusted_keys())
    with pytest.raises(GrantUntrusted):
        grant_from_token(forged.to_base64())


def test_token_claiming_a_trusted_signer_but_signed_by_another_is_invalid() -> None:
    trusted_hex = trusted_keys()[0].public_hex
    stranger = SigningKey.generate()
    builder = bz.BiscuitBuilder(
        'grant("g-x"); signer({s}); project("shop"); environment("prod"); '
        'capability("deploy"); issued({i}); expires({e});',
        {"s": trusted_hex, "i": NOW, "e": NOW + timedelta(hours=1)},
    )
    token = builder.build(stranger.biscuit_root()).to_base64()
    with pytest.raises(GrantInvalid):
        tokens.verify(token, trusted_keys())


def test_break_glass_needs_a_reason_and_at_most_two_hours() -> None:
    with pytest.raises(GrantBreakGlass):
        _grant(break_glass="prod is down", expires_in=2 * 3600 + 1)
    with pytest.raises(GrantBreakGlass):
        _grant(break_glass="  ")
    ok = _grant(break_glass="prod is down", expires_in=2 * 3600)
    check_grant(ok, Request("shop", "prod", "deploy"), NOW)
    assert ok.break_glass == "prod is down"


def test_break_glass_over_two_hours_minted_outside_the_cli_is_refused_on_use() -> None:
    key = active_key()
    builder = bz.BiscuitBuilder(
        'grant("g-long"); signer({s}); project("shop"); environment("prod"); '
        'capability("deploy"); issued({i}); expires({e}); break_glass("because");',
        {"s": key.public_hex, "i": NOW, "e": NOW + timedelta(hours=5)},
    )
    token = builder.build(key.biscuit_root()).to_base64()
    with pytest.raises(GrantBreakGlass):
        tokens.verify(token, trusted_keys())


def test_attenuation_narrows_and_appended_facts_never_widen() -> None:
    grant = _grant(environments=("staging", "prod"))
    child = attenuate_grant(grant.id, capabilities=("deploy",), environments=("prod",), now=NOW)
    check_grant(child, Request("shop", "prod", "deploy"), NOW)
    check_grant(child, Request("shop", "prod", tokens.RUN), NOW)
    with pytest.raises(GrantScope):
        check_grant(child, Request("shop", "prod", "push"), NOW)
    with pytest.raises(GrantScope):
        check_grant(child, Request("shop", "staging", "deploy"), NOW)
    # The parent is untouched.
    check_grant(grant, Request("shop", "staging", "push"), NOW)

    # A holder appending facts of their own gains nothing.
    widened = child.token.biscuit.append(
        bz.BlockBuilder('capability("push"); capability("network"); environment("dev");')
    )
    verified = tokens.verify(widened.to_base64(), trusted_keys())
    for cap, env in (("push", "prod"), ("network", "prod"), ("deploy", "dev")):
        with pytest.raises(GrantScope):
            tokens.authorize(verified, Request("shop", env, cap), NOW)


def test_attenuation_cannot_ask_for_more() -> None:
    grant = _grant(capabilities=("deploy",))
    with pytest.raises(GrantScope):
        attenuate_grant(grant.id, capabilities=("deploy", "push"))
    with pytest.raises(GrantScope):
        attenuate_grant(grant.id, environments=("dev",))


def test_attenuation_to_a_plan_and_a_shorter_life() -> None:
    grant = _grant()
    child = attenuate_grant(grant.id, plan_hash=PLAN_A, expires_in=600, now=NOW)
    check_grant(child, Request("shop", "prod", "deploy", PLAN_A), NOW)
    with pytest.raises(GrantPlan):
        check_grant(child, Request("shop", "prod", "deploy", PLAN_B), NOW)
    with pytest.raises(GrantExpired):
        check_grant(child, Request("shop", "prod", "deploy", PLAN_A), NOW + timedelta(minutes=11))
    check_grant(grant, Request("shop", "prod", "deploy", PLAN_B), NOW + timedelta(minutes=11))


def test_revoking_a_grant_revokes_its_children_but_not_its_parent() -> None:
    root = _grant()
    child = attenuate_grant(root.id, capabilities=("deploy",), now=NOW)
    grandchild = attenuate_grant(child.id, environments=("prod",), now=NOW)
    revoke_grant(child.id)
    check_grant(root, Request("shop", "prod", "deploy"), NOW)
    for g in (child, grandchild):
        with pytest.raises(GrantRevoked):
            check_grant(load_grant(g.id), Request("shop", "prod", "deploy"), NOW)
    # A bare token copied out of the file is revoked too (by its revocation id).
    copied = grant_from_token(grandchild.token.to_base64())
    with pytest.raises(GrantRevoked):
        check_grant(copied, Request("shop", "prod", "deploy"), NOW)
    revoke_grant(root.id)
    with pytest.raises(GrantRevoked):
        check_grant(root, Request("shop", "prod", "deploy"), NOW)


def test_grants_signed_before_a_key_rotation_stay_valid() -> None:
    old = _grant()
    rotate_key()
    new = _grant()
    assert old.token.signer != new.token.signer
    for g in (old, new):
        check_grant(load_grant(g.id), Request("shop", "prod", "deploy"), NOW)


def test_init_force_starts_over_and_old_grants_become_untrusted() -> None:
    old = _grant()
    init_key(force=True)
    with pytest.raises(GrantUntrusted):
        load_grant(old.id)


def test_grant_files_edited_to_widen_change_nothing() -> None:
    grant = _grant(capabilities=("deploy",))
    path = grants_dir() / f"{grant.id}.json"
    data = json.loads(path.read_text())
    data["capabilities"] = ["deploy", "push", "network"]
    data["expires_at"] = (NOW + timedelta(days=365)).isoformat()
    path.write_text(json.dumps(data))
    edited = load_grant(grant.id)
    assert edited.expires_at == grant.expires_at
    with pytest.raises(GrantScope):
        check_grant(edited, Request("shop", "prod", "push"), NOW)
    with pytest.raises(GrantExpired):
        check_grant(edited, Request("shop", "prod", "deploy"), NOW + timedelta(days=2))


def test_unknown_and_hostile_ids_are_not_found() -> None:
    for bad in ("g-nope", "../keys/signing", "g-/../../x"):
        with pytest.raises(GrantNotFound):
            load_grant(bad)


def test_listing_skips_damaged_grants() -> None:
    good = _grant()
    bad = _grant()
    path = grants_dir() / f"{bad.id}.json"
    data = json.loads(path.read_text())
    token = bytearray(data["token"].encode())
    token[len(token) // 2] = ord("A") if token[len(token) // 2] != ord("A") else ord("B")
    data["token"] = token.decode()
    path.write_text(json.dumps(data))
    assert [g.id for g in list_grants()] == [good.id]
    with pytest.raises(GrantInvalid):
        load_grant(bad.id)


def test_random_scope_checks_agree_with_the_grant() -> None:
    rng = random.Random(7)
    envs, caps = ["dev", "staging", "prod"], ["deploy", "push", "network", "db"]
    for _ in range(40):
        genv = tuple(rng.sample(envs, rng.randint(1, 3)))
        gcap = tuple(rng.sample(caps, rng.randint(0, 4)))
        grant = _grant(environments=genv, capabilities=gcap)
        env, cap = rng.choice(envs), rng.choice(caps)
        allowed = env in genv and cap in gcap
        if allowed:
            check_grant(grant, Request("shop", env, cap), NOW)
        else:
            with pytest.raises(GrantScope):
                check_grant(grant, Request("shop", env, cap), NOW)
