"""Why a grant was refused: one error class, and one stable code, per reason."""

from __future__ import annotations

from vigil.errors import ExitCode, VigilError


class GrantRefused(VigilError):
    """Base of every grant refusal; never raised itself."""

    code = "VIGIL-GRANT"
    title = "the grant does not allow this"
    remedy = "Create a grant that covers the action with `vigil grant create`."
    exit_code = ExitCode.REFUSED


class GrantInvalid(GrantRefused):
    code = "VIGIL-GRANT-INVALID"
    title = "the grant token is damaged or its signature does not verify"
    remedy = "Use the grant as it was issued, or create a new one with `vigil grant create`."


class GrantUntrusted(GrantRefused):
    code = "VIGIL-GRANT-UNTRUSTED"
    title = "the grant is signed by a key vigil does not trust"
    remedy = "Use a grant signed by a trusted key (`vigil keys show`), or create a new one."


class GrantExpired(GrantRefused):
    code = "VIGIL-GRANT-EXPIRED"
    title = "the grant has expired"
    remedy = "Create a new grant with `vigil grant create ... --expires-in DURATION`."


class GrantRevoked(GrantRefused):
    code = "VIGIL-GRANT-REVOKED"
    title = "the grant was revoked"
    remedy = "Ask for a new grant; a revoked grant (or one attenuated from it) never works again."


class GrantScope(GrantRefused):
    code = "VIGIL-GRANT-SCOPE"
    title = "the grant does not cover this project, environment or capability"
    remedy = "Create a grant for the project, environment and capability named in the message."


class GrantPlan(GrantRefused):
    code = "VIGIL-GRANT-PLAN"
    title = "the grant is bound to a different plan"
    remedy = "Run the plan the grant was created for, or create a grant with --plan for this one."


class GrantBreakGlass(GrantRefused):
    code = "VIGIL-GRANT-BREAK-GLASS"
    title = "a break-glass grant needs a reason and may last at most 2 hours"
    remedy = "Give --reason and an --expires-in of 2h or less."
    exit_code = ExitCode.USAGE


class GrantRequired(GrantRefused):
    code = "VIGIL-GRANT-REQUIRED"
    title = "the plan needs a grant it does not have"
    remedy = "Run the `vigil grant create` command shown, then pass the grant with --grant ID."


class GrantNotFound(VigilError):
    code = "VIGIL-GRANT-NOT-FOUND"
    title = "no grant with that id"
    remedy = "List grants with `vigil grant list`."
    exit_code = ExitCode.USAGE
