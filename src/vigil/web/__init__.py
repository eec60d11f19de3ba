"""The web dashboard (``vigil serve``): runs, tasks, logs, reports, escalations, metrics."""

from vigil.web.app import create_app
from vigil.web.auth import Access, new_token
from vigil.web.server import serve

__all__ = ["Access", "create_app", "new_token", "serve"]
