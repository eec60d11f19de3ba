"""Authority and accountability: keys, grants, policy, halt, audit log, secrets, redaction.

The engine's calls, in the order a run makes them::

    grant = load_grant(grant_id)                          # once per run (verified token)
    require_plan(plan, policy, grant, now)                # before starting: what is missing
    check_not_halted(store, plan.project)                 # right before each privileged action
    decision = authorize(requirement, grant, now, plan_hash)
    audit.append(actor=..., run=..., task=..., action=..., capability=...,
                 grant=grant.id, decision="allow" if decision.allowed else "deny",
                 reason=decision.reason)
    audit.checkpoint()                                    # at the end of each run
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vigil.lazy import lazy_names

if TYPE_CHECKING:
    from vigil.safety.audit import AuditEntry, AuditLog, audit_path
    from vigil.safety.audit_verify import Problem, VerifyReport, verify
    from vigil.safety.errors import (
        GrantBreakGlass,
        GrantExpired,
        GrantInvalid,
        GrantNotFound,
        GrantPlan,
        GrantRefused,
        GrantRequired,
        GrantRevoked,
        GrantScope,
        GrantUntrusted,
    )
    from vigil.safety.grants import (
        Grant,
        attenuate_grant,
        check_grant,
        create_grant,
        grant_from_token,
        list_grants,
        load_grant,
        revoke_grant,
    )
    from vigil.safety.halt import Halted, check_not_halted, halt, unhalt
    from vigil.safety.keys import SigningKey, TrustedKey, active_key, trusted_keys
    from vigil.safety.policy import (
        Decision,
        Missing,
        PolicyConfig,
        Requirement,
        authorize,
        check_plan,
        environment_of,
        require_plan,
        requirements,
    )
    from vigil.safety.redact import Redactor, StreamRedactor
    from vigil.safety.secrets import redactor_for, resolve_secrets, secrets_for
    from vigil.safety.tokens import RUN, Request

# Names are imported on first use: `vigil status` verifies signed decisions without
# loading the grant tokens' Biscuit library.
_MODULE_OF = {
    "AuditEntry": "audit",
    "AuditLog": "audit",
    "Decision": "policy",
    "Grant": "grants",
    "GrantBreakGlass": "errors",
    "GrantExpired": "errors",
    "GrantInvalid": "errors",
    "GrantNotFound": "errors",
    "GrantPlan": "errors",
    "GrantRefused": "errors",
    "GrantRequired": "errors",
    "GrantRevoked": "errors",
    "GrantScope": "errors",
    "GrantUntrusted": "errors",
    "Halted": "halt",
    "Missing": "policy",
    "PolicyConfig": "policy",
    "Problem": "audit_verify",
    "RUN": "tokens",
    "Redactor": "redact",
    "Request": "tokens",
    "Requirement": "policy",
    "SigningKey": "keys",
    "StreamRedactor": "redact",
    "TrustedKey": "keys",
    "VerifyReport": "audit_verify",
    "active_key": "keys",
    "attenuate_grant": "grants",
    "audit_path": "audit",
    "authorize": "policy",
    "check_grant": "grants",
    "check_not_halted": "halt",
    "check_plan": "policy",
    "create_grant": "grants",
    "environment_of": "policy",
    "grant_from_token": "grants",
    "halt": "halt",
    "list_grants": "grants",
    "load_grant": "grants",
    "redactor_for": "secrets",
    "require_plan": "policy",
    "requirements": "policy",
    "resolve_secrets": "secrets",
    "revoke_grant": "grants",
    "secrets_for": "secrets",
    "trusted_keys": "keys",
    "unhalt": "halt",
    "verify": "audit_verify",
}

__all__ = [
    "RUN",
    "AuditEntry",
    "AuditLog",
    "Decision",
    "Grant",
    "GrantBreakGlass",
    "GrantExpired",
    "GrantInvalid",
    "GrantNotFound",
    "GrantPlan",
    "GrantRefused",
    "GrantRequired",
    "GrantRevoked",
    "GrantScope",
    "GrantUntrusted",
    "Halted",
    "Missing",
    "PolicyConfig",
    "Problem",
    "Redactor",
    "Request",
    "Requirement",
    "SigningKey",
    "StreamRedactor",
    "TrustedKey",
    "VerifyReport",
    "active_key",
    "attenuate_grant",
    "audit_path",
    "authorize",
    "check_grant",
    "check_not_halted",
    "check_plan",
    "create_grant",
    "environment_of",
    "grant_from_token",
    "halt",
    "list_grants",
    "load_grant",
    "redactor_for",
    "require_plan",
    "requirements",
    "resolve_secrets",
    "revoke_grant",
    "secrets_for",
    "trusted_keys",
    "unhalt",
    "verify",
]


__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, globals())
