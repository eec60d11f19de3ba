"""Grants as the user handles them: create, list, show, revoke, attenuate, check.

Each grant is a file ``<user config>/grants/<id>.json`` holding the Biscuit token (base64)
and metadata for display. The metadata is a convenience only: every decision is taken from
the token, verified against the trusted keys, and the revocation list.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vigil.config import user_config_dir
from vigil.safety import tokens
from vigil.safety.errors import (
    GrantInvalid,
    GrantNotFound,
    GrantRefused,
    GrantRevoked,
    GrantScope,
)
from vigil.safety.keys import active_key, trusted_keys
from vigil.safety.revocation import Revocations, load_revocations, revoke
from vigil.safety.tokens import Request, Token

GRANTS_DIR = "grants"


@dataclass(frozen=True)
class Grant:
    """A verified grant: its id, its token and its effective (possibly narrowed) scope."""

    id: str
    token: Token
    created_at: datetime
    parent: str | None
    environments: tuple[str, ...]
    capabilities: tuple[str, ...]
    expires_at: datetime
    plan_hash: str | None

    @property
    def project(self) -> str:
        """The project the grant is for."""
        return self.token.project

    @property
    def break_glass(self) -> str | None:
        """The break-glass reason, or None for an ordinary grant."""
        return self.token.break_glass

    @property
    def grant_ids(self) -> tuple[str, ...]:
        """Ids a revocation of which revokes this grant (its own and its root's)."""
        return (self.id,) if self.id == self.token.grant_id else (self.id, self.token.grant_id)

    def status(self, now: datetime, revocations: Revocations | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        revs = revocations if revocations is not None else load_revocations()
        if revs.revoked(self.grant_ids, self.token.revocation_ids):
            return "revoked"
        return "expired" if now >= self.expires_at else "active"

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The grant as JSON data (without the token)."""
        data: dict[str, Any] = {
            "id": self.id,
            "project": self.project,
            "environments": list(self.environments),
            "capabilities": list(self.capabilities),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "plan": self.plan_hash,
            "break_glass": self.break_glass,
            "parent": self.parent,
            "signer": self.token.signer,
        }
        if now is not None:
            data["status"] = self.status(now)
        return data


def grants_dir(base: Path | None = None) -> Path:
    """Directory of the grant files."""
    return (base or user_config_dir()) / GRANTS_DIR


def _new_id() -> str:
    return "g-" + secrets.token_hex(6)


def _save(grant: Grant, base: Path | None) -> None:
    directory = grants_dir(base)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = grant.to_dict()
    data["token"] = grant.token.to_base64()
    path = directory / f"{grant.id}.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def create_grant(
    *,
    project: str,
    environments: tuple[str, ...],
    capabilities: tuple[str, ...],
    expires_in: float,
    plan_hash: str | None = None,
    break_glass: str | None = None,
    now: datetime | None = None,
    base: Path | None = None,
) -> Grant:
    """Mint, sign with the active key and store a new grant."""
    issued = (now or datetime.now(UTC)).replace(microsecond=0)
    expires = issued + timedelta(seconds=expires_in)
    token = tokens.mint(
        active_key(base),
        grant_id=_new_id(),
        project=project,
        environments=tuple(sorted(set(environments))),
        capabilities=tuple(sorted(set(capabilities))),
        issued_at=issued,
        expires_at=expires,
        plan_hash=plan_hash,
        break_glass=break_glass,
    )
    grant = Grant(
        token.grant_id,
        token,
        issued,
        None,
        token.environments,
        token.capabilities,
        token.expires_at,
        plan_hash,
    )
    _save(grant, base)
    return grant


def grant_from_token(data: str, base: Path | None = None) -> Grant:
    """A grant from a bare token (e.g. passed on the command line), verified."""
    token = tokens.verify(data, trusted_keys(base))
    return Grant(
        token.grant_id,
        token,
        token.issued_at,
        None,
        token.environments,
        token.capabilities,
        token.expires_at,
        token.plan_hash,
    )


def load_grant(grant_id: str, base: Path | None = None) -> Grant:
    """The stored grant ``grant_id``, its token verified against the trusted keys."""
    path = grants_dir(base) / f"{grant_id}.json"
    if "/" in grant_id or not path.is_file():
        raise GrantNotFound(f"no grant '{grant_id}' in {grants_dir(base)}")
    try:
        data = json.loads(path.read_text())
        raw_token = str(data["token"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GrantInvalid(f"{path} is not a grant file") from exc
    token = tokens.verify(raw_token, trusted_keys(base))
    try:
        expires = datetime.fromisoformat(data["expires_at"])
        return Grant(
            id=grant_id,
            token=token,
            created_at=datetime.fromisoformat(data["created_at"]),
            parent=data.get("parent"),
            environments=tuple(data["environments"]),
            capabilities=tuple(data["capabilities"]),
            # The token's expiry is the ceiling whatever the metadata says.
            expires_at=min(expires, token.expires_at),
            plan_hash=data.get("plan"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise GrantInvalid(f"{path} has damaged metadata") from exc


def list_grants(base: Path | None = None) -> list[Grant]:
    """Every stored grant whose token verifies, oldest first."""
    found: list[Grant] = []
    directory = grants_dir(base)
    if not directory.is_dir():
        return found
    for path in directory.glob("g-*.json"):
        try:
            found.append(load_grant(path.stem, base))
        except GrantRefused:
            continue  # `grant show ID` says why; a listing skips tokens that do not verify
    return sorted(found, key=lambda g: (g.created_at, g.id))


def revoke_grant(grant_id: str, base: Path | None = None) -> Grant:
    """Revoke ``grant_id`` and every grant attenuated from it."""
    grant = load_grant(grant_id, base)
    revoke(grant.id, grant.token.revocation_ids[-1], base)
    return grant


def attenuate_grant(
    grant_id: str,
    *,
    environments: tuple[str, ...] | None = None,
    capabilities: tuple[str, ...] | None = None,
    plan_hash: str | None = None,
    expires_in: float | None = None,
    now: datetime | None = None,
    base: Path | None = None,
) -> Grant:
    """A new grant narrowed from ``grant_id``; asking for more than it has is refused."""
    parent = load_grant(grant_id, base)
    current = (now or datetime.now(UTC)).replace(microsecond=0)
    if environments is not None and (wider := set(environments) - set(parent.environments)):
        raise GrantScope(f"cannot widen: grant {grant_id} does not cover {sorted(wider)}")
    if capabilities is not None and (wider := set(capabilities) - set(parent.capabilities)):
        raise GrantScope(f"cannot widen: grant {grant_id} does not allow {sorted(wider)}")
    if plan_hash is not None and parent.plan_hash not in (None, plan_hash):
        raise GrantScope(f"cannot rebind: grant {grant_id} is bound to another plan")
    expires = parent.expires_at
    if expires_in is not None:
        expires = min(expires, current + timedelta(seconds=expires_in))
    token = tokens.attenuate(
        parent.token,
        environments=environments,
        capabilities=capabilities,
        plan_hash=plan_hash,
        expires_at=expires if expires_in is not None else None,
    )
    child = Grant(
        _new_id(),
        token,
        current,
        parent.id,
        tuple(sorted(set(environments))) if environments is not None else parent.environments,
        tuple(sorted(set(capabilities))) if capabilities is not None else parent.capabilities,
        expires,
        plan_hash or parent.plan_hash,
    )
    _save(child, base)
    return child


def check_grant(
    grant: Grant,
    request: Request,
    now: datetime,
    revocations: Revocations | None = None,
) -> None:
    """Raise the specific refusal unless ``grant`` allows ``request`` now (revocation included)."""
    revs = revocations if revocations is not None else load_revocations()
    if revs.revoked(grant.grant_ids, grant.token.revocation_ids):
        raise GrantRevoked(f"grant {grant.id} was revoked")
    tokens.authorize(grant.token, request, now)


def _allows(grant: Grant, environment: str, capability: str, plan: str | None) -> bool:
    """Whether the token itself allows one request (at its issue time, so expiry aside)."""
    request = Request(grant.project, environment, capability, plan)
    try:
        tokens.authorize(grant.token, request, grant.token.issued_at)
    except GrantRefused:
        return False
    return True


def token_view(grant: Grant, now: datetime) -> dict[str, Any]:
    """What the verified token says about ``grant``, for display: never the editable
    metadata stored beside it. An attenuated token's scope is found by asking the token
    (each environment and capability of its authority block against its checks).
    ``metadata_differs`` names the stored fields that disagree with the token."""
    token = grant.token

    def scope(plan: str | None) -> tuple[list[str], list[str]]:
        # Every grant allows running in its environments (``run``), capabilities or not.
        pairs = [
            (e, c)
            for e in token.environments
            for c in (*token.capabilities, tokens.RUN)
            if _allows(grant, e, c, plan)
        ]
        caps = {c for _, c in pairs if c != tokens.RUN or tokens.RUN in token.capabilities}
        return sorted({e for e, _ in pairs}), sorted(caps)

    # A plan binding added by attenuation is a check, not a fact: try the stored plan,
    # and if the token allows nothing with it, the token without one.
    plan = token.plan_hash or grant.plan_hash
    environments, capabilities = scope(plan)
    if not environments and plan != token.plan_hash:
        plan = token.plan_hash
        environments, capabilities = scope(plan)
    expires = token.expires_at if token.blocks == 1 else grant.expires_at
    view: dict[str, Any] = {
        "id": grant.id,
        "token_id": token.grant_id,
        "project": token.project,
        "environments": environments,
        "capabilities": capabilities,
        "issued_at": token.issued_at.isoformat(),
        "expires_at": expires.isoformat(),
        "plan": plan,
        "break_glass": token.break_glass,
        "attenuations": token.blocks - 1,
        "signer": token.signer,
        "status": grant.status(now),
    }
    differs = []
    if list(grant.environments) != environments:
        differs.append("environments")
    if list(grant.capabilities) != capabilities:
        differs.append("capabilities")
    if grant.plan_hash != plan:
        differs.append("plan")
    if grant.expires_at != expires:
        differs.append("expires_at")
    view["metadata_differs"] = differs
    return view
