"""The dashboard application: routes, access checks and error pages.

Handlers are thin (``pages`` for people, ``api`` for programs): each one is a library
call the CLI makes too, so the dashboard shows exactly what ``vigil status``, ``vigil
logs`` and ``vigil report`` print. Every request passes one access check before any
handler runs, so a new route cannot forget it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from vigil.config import Config
from vigil.errors import ExitCode, RunNotFound, VigilError
from vigil.plan.duration import format_duration
from vigil.report import iso
from vigil.web import api, pages
from vigil.web.auth import Access, FormExpired, TokenRequired
from vigil.web.context import Dashboard, dashboard, render

if TYPE_CHECKING:
    from vigil.store import RunStore

HERE = Path(__file__).parent
# Paths anyone may fetch: the login form itself and the stylesheet it uses.
PUBLIC = ("/login", "/static/")


def status_for(err: VigilError) -> int:
    """The HTTP status of a user-visible error."""
    if isinstance(err, TokenRequired):
        return 401
    if isinstance(err, FormExpired):
        return 403
    if isinstance(err, RunNotFound) or err.code.endswith("NOT-FOUND"):
        return 404
    if err.exit_code == ExitCode.USAGE:
        return 400
    if err.exit_code == ExitCode.REFUSED:
        return 409
    return 500


def wants_json(request: Request) -> bool:
    """Whether the caller is a program (the JSON API or the metrics endpoint)."""
    return request.url.path.startswith(("/api/", "/metrics"))


def error_response(request: Request, err: VigilError) -> Response:
    """The error as JSON for programs, as a page (the login form for 401) for people."""
    status = status_for(err)
    headers = {"WWW-Authenticate": 'Bearer realm="vigil"'} if status == 401 else None
    if wants_json(request):
        return JSONResponse({"error": err.to_dict()}, status_code=status, headers=headers)
    if status == 401:
        context = {"error": err.cause, "next": _came_from(request)}
        return render(request, "login.html", context, status=401)
    return render(request, "error.html", {"error": err}, status=status, headers=headers)


def _came_from(request: Request) -> str:
    """Where to go after logging in: this page, or for a refused form the page it was on."""
    if request.method == "GET":
        return request.url.path
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.url.netloc and referer.path.startswith("/"):
        return referer.path
    return "/runs"


async def _vigil_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VigilError)
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if wants_json(request):
        body = {"error": {"code": f"HTTP-{exc.status_code}", "cause": exc.detail}}
        return JSONResponse(body, status_code=exc.status_code)
    return PlainTextResponse(f"{exc.status_code}: {exc.detail}\n", status_code=exc.status_code)


def _duration(seconds: float | None) -> str:
    return "—" if seconds is None else format_duration(seconds)


def _when(value: object) -> str:
    # Times arrive as epoch seconds or as ISO text, depending on who produced them.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return iso(float(value)) or "—"
    return str(value) if value else "—"


class ReadGuard(BaseHTTPMiddleware):
    """Refuses every request that may not read, before routing, except the login page."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Check read access, then hand the request on."""
        path = request.url.path
        if not path.startswith(PUBLIC):
            try:
                dashboard(request).access.require_read(request)
            except TokenRequired as err:
                return error_response(request, err)
        response = await call_next(request)
        # The dashboard shows logs and diffs: keep it out of frames and caches.
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        return response


def create_app(
    config: Config, *, token: str, open_reads: bool, store: RunStore | None = None
) -> Starlette:
    """The dashboard for ``config``'s workspace; opens its store unless one is given."""
    from vigil.store import open_store

    owned = store is None
    opened = open_store(config.database_url, history=config.state_dir) if store is None else store

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned:
                opened.close()

    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(q=pages.q, run_url=pages.run_url, task_url=pages.task_url)
    templates.env.filters["duration"] = _duration
    templates.env.filters["when"] = _when
    routes = [
        *pages.routes(),
        *api.routes(),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ReadGuard)],
        exception_handlers={VigilError: _vigil_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.dashboard = Dashboard(config, opened, Access(token, open_reads), templates)
    return app
