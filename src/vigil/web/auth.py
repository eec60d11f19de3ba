"""Who may do what on the dashboard: one access token, browser sessions and CSRF tokens.

Programs send ``Authorization: Bearer TOKEN``. A browser logs in once with the token;
the server answers with an HttpOnly, SameSite=Strict cookie holding a session signed
with the token (nothing is kept server-side, so a restart with the same token keeps
sessions valid and a new token ends them all). Every state-changing form carries a CSRF
token derived from the session, checked on POST.

Reading without the token is allowed only when the server listens on a loopback
address, and only for requests whose ``Host`` names a loopback host: a page on another
site that rebinds its DNS name to 127.0.0.1 still cannot read runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request

from vigil.errors import ExitCode, VigilError

SESSION_COOKIE = "vigil_session"
SESSION_SECONDS = 12 * 3600
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    """A fresh random access token."""
    return secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenRequired(VigilError):
    code = "VIGIL-WEB-TOKEN"
    title = "the dashboard needs its access token for this"
    remedy = "Log in with the token `vigil serve` printed, or send `Authorization: Bearer TOKEN`."
    exit_code = ExitCode.REFUSED


class FormExpired(VigilError):
    code = "VIGIL-WEB-CSRF"
    title = "the form's CSRF token is missing or wrong"
    remedy = "Reload the page and submit the form again."
    exit_code = ExitCode.REFUSED


@dataclass(frozen=True)
class Session:
    """A logged-in browser: ``name`` is who they said they are, for the audit trail."""

    nonce: str
    name: str
    issued: int


@dataclass(frozen=True)
class Access:
    """The access rules of one server."""

    token: str
    open_reads: bool

    def _mac(self, *parts: str) -> str:
        msg = "\x1f".join(parts).encode()
        return hmac.new(self.token.encode(), msg, hashlib.sha256).hexdigest()

    def token_matches(self, candidate: str) -> bool:
        """Constant-time comparison with the access token."""
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def new_session_cookie(self, name: str, *, now: float | None = None) -> str:
        """The cookie value for a browser that just proved it holds the token."""
        nonce = secrets.token_urlsafe(16)
        issued = str(int(now if now is not None else time.time()))
        label = _b64(name.encode())
        return ".".join((nonce, label, issued, self._mac("session", nonce, label, issued)))

    def session(self, request: Request, *, now: float | None = None) -> Session | None:
        """The request's valid, unexpired session, or None."""
        raw = request.cookies.get(SESSION_COOKIE, "")
        parts = raw.split(".")
        if len(parts) != 4:
            return None
        nonce, label, issued, mac = parts
        if not hmac.compare_digest(mac, self._mac("session", nonce, label, issued)):
            return None
        try:
            when = int(issued)
            name = _unb64(label).decode()
        except ValueError:
            return None
        current = now if now is not None else time.time()
        if not 0 <= current - when <= SESSION_SECONDS:
            return None
        return Session(nonce, name, when)

    def csrf_token(self, session: Session) -> str:
        """The CSRF token forms of this session must carry."""
        return self._mac("csrf", session.nonce)

    def bearer(self, request: Request) -> bool:
        """Whether the request carries the token as ``Authorization: Bearer``."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def can_read(self, request: Request) -> bool:
        """Whether the request may see read-only pages and API answers."""
        if self.bearer(request) or self.session(request) is not None:
            return True
        return self.open_reads and is_loopback(request.url.hostname or "")

    def require_read(self, request: Request) -> None:
        """Refuse (TokenRequired) a request that may not read."""
        if not self.can_read(request):
            raise TokenRequired(
                "reading needs the access token when the dashboard is not on localhost"
                if not self.open_reads
                else f"{request.url.hostname!r} is not a loopback host name"
            )

    def require_write(self, request: Request, csrf: str | None) -> str:
        """Refuse without the token (TokenRequired) or CSRF token (FormExpired); returns the actor.

        A bearer token needs no CSRF token: a browser on another site cannot send that
        header. A session cookie does.
        """
        if self.bearer(request):
            return "web:api"
        session = self.session(request)
        if session is None:
            raise TokenRequired("changing anything needs the access token")
        if not csrf or not hmac.compare_digest(csrf, self.csrf_token(session)):
            raise FormExpired("the request carries no valid CSRF token for this session")
        return f"web:{session.name}" if session.name else "web"
