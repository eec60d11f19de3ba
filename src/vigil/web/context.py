"""What every handler shares: the dashboard's config, store and access rules, and page rendering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from vigil.config import Config
from vigil.web.auth import Access

if TYPE_CHECKING:
    from vigil.store import RunStore


@dataclass(frozen=True)
class Dashboard:
    """One served workspace: its config, its store and who may do what."""

    config: Config
    store: RunStore
    access: Access
    templates: Jinja2Templates


def dashboard(request: Request) -> Dashboard:
    """The dashboard a request belongs to."""
    found: Dashboard = request.app.state.dashboard
    return found


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A page, with what every page shows: who is logged in and the form CSRF token."""
    board = dashboard(request)
    session = board.access.session(request)
    page = {
        "session": session,
        "csrf": board.access.csrf_token(session) if session is not None else "",
        "open_reads": board.access.open_reads,
        **context,
    }
    return board.templates.TemplateResponse(
        request, template, page, status_code=status, headers=dict(headers or {})
    )
