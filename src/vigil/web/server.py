"""Serving the dashboard: bind the address, announce it, run until stopped."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from vigil.config import Config
from vigil.errors import ConfigError, ExitCode, VigilError
from vigil.web.app import create_app
from vigil.web.auth import is_loopback

MIN_TOKEN_LENGTH = 16


class ServeBindError(VigilError):
    code = "VIGIL-SERVE-BIND"
    title = "the dashboard could not listen on that address"
    remedy = "Pick another --port (or --port 0 for any free one), or stop what holds it."
    exit_code = ExitCode.USAGE


def check_token(token: str) -> None:
    """Refuse a token short enough to guess."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"the access token is {len(token)} characters; at least {MIN_TOKEN_LENGTH} needed",
            "Unset VIGIL_SERVE_TOKEN to get a random one, or set a longer one.",
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ServeBindError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServeBindError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """The http URL a listening socket answers on."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(
    config: Config,
    *,
    host: str,
    port: int,
    token: str,
    announce: Callable[[str], None],
) -> None:
    """Serve the dashboard of ``config``'s workspace until interrupted.

    Read-only pages are open without the token only on a loopback address; anywhere
    else every request needs it. ``announce`` gets the URL once the socket listens.
    """
    check_token(token)
    sock = bind(host, port)
    try:
        app = create_app(config, token=token, open_reads=is_loopback(host))
        announce(url_of(sock))
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        server.run(sockets=[sock])
    finally:
        sock.close()
