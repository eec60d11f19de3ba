"""Whether a step could reach the run store, for `vigil doctor`.

Signed decisions make a forged row in the store useless, but a step that reaches the
store can still delete rows (a run's journal, a halt) or fill it. A step without the
``network`` capability has no network at all; a step granted ``network`` shares the
host's, so a PostgreSQL server on this machine that takes connections without a password
(trust authentication) is the step's too. A Unix socket is a file: whether a step sees it
depends on the sandbox hiding its directory.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True)
class Reach:
    """One way a step could reach the store, and what to do about it."""

    problem: str
    remedy: str


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def store_reach(
    url: str, state_dir: Path, *, password_free_login: bool | None = None
) -> list[Reach]:
    """How steps could reach the store at ``url``; empty when none is known.

    ``password_free_login`` says whether vigil itself just logged in without a password
    (None when not tried): with a loopback server that means trust authentication.
    """
    try:
        parsed = sa.make_url(url)
    except Exception:
        return []
    found: list[Reach] = []
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            path = Path(database).expanduser().resolve()
            if not path.is_relative_to(state_dir.resolve()):
                found.append(
                    Reach(
                        f"the SQLite store {path} is outside the state directory, which the "
                        "sandbox hides; a step may be able to open it",
                        "Keep the store under .vigil/ (the default) or in a directory steps "
                        "cannot see.",
                    )
                )
        return found
    host = parsed.host or ""
    socket_dir = str(parsed.query.get("host", "")) if not host else ""
    if host.startswith("/") or socket_dir:
        found.append(
            Reach(
                f"the store is reached through a Unix socket in {host or socket_dir}: a step "
                "that sees that directory can connect",
                "Use TCP with a password from a file steps cannot read, and check that the "
                "sandbox hides the socket directory (docs/security.md, team store).",
            )
        )
    elif not host or _loopback(host):
        where = host or "the default socket"
        trust = password_free_login and parsed.password is None
        how = ", and vigil logged in without a password (trust authentication)" if trust else ""
        found.append(
            Reach(
                f"the store is on this machine ({where}); a step granted `network` shares "
                f"the host's network and can connect{how}",
                "Give the store its own role with a password kept in a file steps cannot read, "
                "no trust authentication, and grant `network` only to steps you trust that "
                "far (docs/security.md, team store).",
            )
        )
    return found
