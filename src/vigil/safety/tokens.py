"""Grant tokens: Biscuit tokens minted, attenuated, verified offline and authorized in Datalog.

The authority block (signed by the vigil key) holds the grant's facts::

    grant("g-…"); signer("<public key hex>"); project("shop");
    environment("prod"); capability("deploy"); issued(<date>); expires(<date>);
    check if time($t), $t <= <expiry>;
    plan("sha256:…"); check if requested_plan("sha256:…");      // only when bound to a plan
    break_glass("reason");                                       // only for break-glass

The authorizer supplies the request as facts (``time``, ``requested_project``,
``requested_environment``, ``requested_capability``, ``requested_plan``) and checks that the
authority facts match it. Attenuation blocks may only add checks: Biscuit evaluates facts of
later blocks in their own scope, so a holder who appends ``capability("push")`` gains nothing.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import biscuit_auth as bz

from vigil.safety import capabilities
from vigil.safety.errors import (
    GrantBreakGlass,
    GrantExpired,
    GrantInvalid,
    GrantPlan,
    GrantScope,
    GrantUntrusted,
)
from vigil.safety.keys import SigningKey, TrustedKey

BREAK_GLASS_MAX = timedelta(hours=2)
_MAX_TIME = timedelta(milliseconds=200)
RUN = capabilities.RUN
"""Pseudo-capability: running a task in an environment. Every grant for an environment has it."""

_SIGNER = re.compile(r'^signer\("([0-9a-f]{64})"\);$', re.MULTILINE)
_FAILED = re.compile(r"Check n°\d+ in (block n°\d+|authorizer): (.*?)(?=, Check n°|$)")

_AUTHORIZER = """
check if project($p), requested_project($p);
check if environment($e), requested_environment($e);
check if capability($c), requested_capability($c) or requested_capability("run");
allow if true;
"""


@dataclass(frozen=True)
class Request:
    """What an action asks to do: the facts the authorizer checks the token against."""

    project: str
    environment: str
    capability: str
    plan_hash: str | None = None


@dataclass(frozen=True)
class Token:
    """A token whose signature verified with a trusted key, with its authority facts."""

    biscuit: bz.Biscuit
    grant_id: str
    signer: str
    project: str
    environments: tuple[str, ...]
    capabilities: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    plan_hash: str | None
    break_glass: str | None
    revocation_ids: tuple[str, ...]

    def to_base64(self) -> str:
        """The token as URL-safe base64, as stored and passed around."""
        return self.biscuit.to_base64()

    @property
    def blocks(self) -> int:
        """Number of blocks: 1 for an original grant, more for attenuated ones."""
        return self.biscuit.block_count()


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def mint(
    key: SigningKey,
    *,
    grant_id: str,
    project: str,
    environments: tuple[str, ...],
    capabilities: tuple[str, ...],
    issued_at: datetime,
    expires_at: datetime,
    plan_hash: str | None = None,
    break_glass: str | None = None,
) -> Token:
    """A new grant token signed by ``key``. Break-glass needs a reason and at most 2 hours."""
    issued_at, expires_at = _utc(issued_at), _utc(expires_at)
    if break_glass is not None:
        _check_break_glass(break_glass, issued_at, expires_at)
    builder = bz.BiscuitBuilder(
        "grant({id}); signer({signer}); project({project}); issued({issued}); "
        "expires({expires}); check if time($t), $t <= {expires};",
        {
            "id": grant_id,
            "signer": key.public_hex,
            "project": project,
            "issued": issued_at,
            "expires": expires_at,
        },
    )
    for env in environments:
        builder.add_fact(bz.Fact("environment({e})", {"e": env}))
    for cap in capabilities:
        builder.add_fact(bz.Fact("capability({c})", {"c": cap}))
    if plan_hash is not None:
        builder.add_code("plan({h}); check if requested_plan({h});", {"h": plan_hash})
    if break_glass is not None:
        builder.add_fact(bz.Fact("break_glass({r})", {"r": break_glass}))
    return _read(builder.build(key.biscuit_root()))


def _check_break_glass(reason: str, issued_at: datetime, expires_at: datetime) -> None:
    if not reason.strip():
        raise GrantBreakGlass("a break-glass grant needs a reason")
    if expires_at - issued_at > BREAK_GLASS_MAX:
        hours = (expires_at - issued_at).total_seconds() / 3600
        raise GrantBreakGlass(f"a break-glass grant lasts at most 2h; this one lasts {hours:.1f}h")


def _authorizer(
    source: str = "", parameters: dict[str, object] | None = None
) -> bz.AuthorizerBuilder:
    """An authorizer with a time budget that survives a loaded machine.

    Biscuit's default budget is 1 ms, which a busy 2-core host can exceed for an honest
    token; the fact and iteration limits still bound a hostile one.
    """
    builder = bz.AuthorizerBuilder(source, parameters)
    limits = builder.limits()  # type: ignore[attr-defined]
    limits.max_time = _MAX_TIME
    builder.set_limits(limits)  # type: ignore[attr-defined]
    return builder


def _facts(authorizer: bz.Authorizer, name: str) -> list[object]:
    rule = bz.Rule(f"found($x) <- {name}($x)")
    return [fact.terms[0] for fact in authorizer.query(rule)]


def _read(biscuit: bz.Biscuit) -> Token:
    """The authority facts of a verified token (facts of later blocks are not trusted)."""
    try:
        world = _authorizer().build(biscuit)
        ids, signers, projects = (_facts(world, n) for n in ("grant", "signer", "project"))
        issued, expires = _facts(world, "issued"), _facts(world, "expires")
        plans, glass = _facts(world, "plan"), _facts(world, "break_glass")
        environments, capabilities = _facts(world, "environment"), _facts(world, "capability")
    except bz.AuthorizationError as exc:
        raise GrantInvalid(f"the grant token cannot be evaluated: {exc}") from None
    if not (len(ids) == len(signers) == len(projects) == len(issued) == len(expires) == 1):
        raise GrantInvalid("the token lacks the facts of a vigil grant")
    issued_at = issued[0]
    expires_at = expires[0]
    if not isinstance(issued_at, datetime) or not isinstance(expires_at, datetime):
        raise GrantInvalid("the token's issued/expires facts are not dates")
    token = Token(
        biscuit=biscuit,
        grant_id=str(ids[0]),
        signer=str(signers[0]),
        project=str(projects[0]),
        environments=tuple(sorted(str(e) for e in environments)),
        capabilities=tuple(sorted(str(c) for c in capabilities)),
        issued_at=_utc(issued_at),
        expires_at=_utc(expires_at),
        plan_hash=str(plans[0]) if plans else None,
        break_glass=str(glass[0]) if glass else None,
        revocation_ids=tuple(biscuit.revocation_ids),
    )
    if token.break_glass is not None:
        # A key holder could mint a long break-glass token without the CLI; refuse it here too.
        _check_break_glass(token.break_glass, token.issued_at, token.expires_at)
    return token


def _decode(data: str) -> bytes:
    text = data.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(data: str, trusted: list[TrustedKey]) -> Token:
    """Parse ``data`` and check its signature chain against the trusted keys, offline.

    A token that verifies under the key it names but that key is not trusted is
    VIGIL-GRANT-UNTRUSTED; anything that does not verify at all is VIGIL-GRANT-INVALID.
    """
    try:
        unverified = bz.UnverifiedBiscuit.from_base64(data.strip())
        found = _SIGNER.search(unverified.block_source(0))
    except Exception as exc:  # the bindings raise several types for garbage input
        raise GrantInvalid("the grant token cannot be parsed") from exc
    if found is None:
        raise GrantInvalid("the grant token names no signer")
    signer = found.group(1)
    try:
        biscuit = unverified.verify(bz.PublicKey(f"ed25519/{signer}"))
    except Exception as exc:
        raise GrantInvalid("the grant token's signature does not verify") from exc
    # Protobuf tolerates some edits that leave the signed content intact (an unknown field in
    # place of a default one); a token must be byte-for-byte what its signer issued.
    if _decode(biscuit.to_base64()) != _decode(data):
        raise GrantInvalid("the grant token is not in the form it was issued in")
    if signer not in {k.public_hex for k in trusted}:
        raise GrantUntrusted(f"the grant is signed by key {signer[:16]}…, which is not trusted")
    return _read(biscuit)


def attenuate(
    token: Token,
    *,
    environments: tuple[str, ...] | None = None,
    capabilities: tuple[str, ...] | None = None,
    plan_hash: str | None = None,
    expires_at: datetime | None = None,
) -> Token:
    """A narrower token: appends a block whose checks restrict env, capability, plan or time."""
    block = bz.BlockBuilder("")
    if environments is not None:
        block.add_code(
            "check if requested_environment($e), {set}.contains($e);", {"set": set(environments)}
        )
    if capabilities is not None:
        block.add_code(
            "check if requested_capability($c), {set}.contains($c);",
            {"set": {*capabilities, RUN}},
        )
    if plan_hash is not None:
        block.add_code("check if requested_plan({h});", {"h": plan_hash})
    if expires_at is not None:
        block.add_code("check if time($t), $t <= {x};", {"x": _utc(expires_at)})
    return _read(token.biscuit.append(block))


def authorize(token: Token, request: Request, now: datetime) -> None:
    """Raise the specific refusal unless ``token`` allows ``request`` at ``now``."""
    builder = _authorizer(
        _AUTHORIZER
        + "time({now}); requested_project({p}); requested_environment({e}); "
        + "requested_capability({c});",
        {
            "now": _utc(now),
            "p": request.project,
            "e": request.environment,
            "c": request.capability,
        },
    )
    if request.plan_hash is not None:
        builder.add_fact(bz.Fact("requested_plan({h})", {"h": request.plan_hash}))
    try:
        builder.build(token.biscuit).authorize()
    except bz.AuthorizationError as exc:
        raise _refusal(token, request, now, str(exc)) from None


def _refusal(token: Token, request: Request, now: datetime, message: str) -> Exception:
    failed = [rule for _, rule in _FAILED.findall(message)]
    if not failed and "limits" in message:
        return GrantInvalid(f"grant {token.grant_id} cannot be evaluated: {message}")
    if any("time(" in rule for rule in failed):
        if now > token.expires_at:
            return GrantExpired(
                f"grant {token.grant_id} expired at {token.expires_at:%Y-%m-%d %H:%M:%S}Z"
            )
        return GrantExpired(f"grant {token.grant_id} was attenuated to expire before now")
    if any("requested_plan(" in rule for rule in failed):
        wanted = request.plan_hash or "no plan"
        return GrantPlan(f"grant {token.grant_id} is bound to another plan than {wanted[:23]}")
    if any("requested_project" in rule for rule in failed):
        return GrantScope(
            f"wrong project: grant {token.grant_id} is for '{token.project}', "
            f"not '{request.project}'"
        )
    if any("requested_environment" in rule for rule in failed):
        return GrantScope(
            f"wrong environment: grant {token.grant_id} does not cover '{request.environment}'"
        )
    if any("requested_capability" in rule for rule in failed):
        return GrantScope(
            f"missing capability: grant {token.grant_id} does not allow '{request.capability}'"
        )
    return GrantScope(f"grant {token.grant_id} refused: {'; '.join(failed) or message}")
