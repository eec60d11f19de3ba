"""The JSON API: the same documents as the CLI's ``--format json``, and ``/metrics``.

Reads follow the dashboard's read rule; ``POST`` needs the token as ``Authorization:
Bearer`` (or a logged-in browser session with its ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from vigil.engine.runs import cancel_run
from vigil.errors import UsageError
from vigil.report import build_report, load_state, run_view
from vigil.web import escalations
from vigil.web.context import dashboard
from vigil.web.metrics import metrics_text
from vigil.web.runs import run_rows, task_logs

BODY_LIMIT = 64 * 1024


def _int_param(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {raw!r}") from None


def list_runs(request: Request) -> Response:
    """``vigil runs --format json``."""
    board = dashboard(request)
    limit = _int_param(request, "limit", 100) or 100
    if not 1 <= limit <= 10_000:
        raise UsageError(f"limit must be 1 to 10000, got {limit}")
    state = request.query_params.get("state") or None
    return JSONResponse(run_rows(board.store, state=state, limit=limit))


def get_run(request: Request) -> Response:
    """``vigil status RUN --format json``."""
    record, state = load_state(dashboard(request).store, request.path_params["run_id"])
    return JSONResponse(run_view(record, state))


def get_report(request: Request) -> Response:
    """``vigil report RUN --format json``."""
    record, state = load_state(dashboard(request).store, request.path_params["run_id"])
    return JSONResponse(build_report(run_view(record, state)))


def get_logs(request: Request) -> Response:
    """``vigil logs RUN TASK [--attempt N]``, as text."""
    board = dashboard(request)
    _record, state = load_state(board.store, request.path_params["run_id"])
    text = task_logs(
        board.config, state, request.path_params["task_id"], _int_param(request, "attempt")
    )
    return PlainTextResponse(text)


def list_escalations(request: Request) -> Response:
    """``vigil escalations [--run ID] [--all] --format json``."""
    run_id = request.query_params.get("run") or None
    everything = request.query_params.get("all", "") not in ("", "0", "false")
    found = escalations.list_open(dashboard(request).store, run_id, answered=everything)
    return JSONResponse(found)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > BODY_LIMIT:
        raise UsageError(f"the request body is over {BODY_LIMIT} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise UsageError(
            "the request body is not JSON", 'Send e.g. {"decision": "approve"}.'
        ) from None
    if not isinstance(data, dict):
        raise UsageError("the request body must be a JSON object")
    return data


def _field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UsageError(f"{name!r} must be a string")
    return value


async def answer(request: Request) -> Response:
    """Answer an escalation: ``{"decision": "approve"|"reject"|"value", "value", "comment"}``."""
    board = dashboard(request)
    actor = board.access.require_write(request, request.headers.get("x-csrf-token"))
    data = await _body(request)
    answered = await run_in_threadpool(
        escalations.answer,
        board.config,
        board.store,
        request.path_params["esc_id"],
        decision=_field(data, "decision"),
        value=_field(data, "value") or None,
        comment=_field(data, "comment"),
        actor=actor,
    )
    return JSONResponse(answered)


async def cancel(request: Request) -> Response:
    """``vigil cancel RUN --format json``: ``{"reason": ...}`` optional."""
    board = dashboard(request)
    actor = board.access.require_write(request, request.headers.get("x-csrf-token"))
    data = await _body(request)
    run_id = request.path_params["run_id"]
    reason = _field(data, "reason") or f"cancelled through the API by {actor}"
    done = await run_in_threadpool(cancel_run, board.config, board.store, run_id, reason=reason)
    return JSONResponse({"id": run_id, "state": done.state, "already_ended": done.already_ended})


def metrics(request: Request) -> Response:
    """Prometheus metrics, computed from the store now."""
    board = dashboard(request)
    return Response(
        metrics_text(board.store, board.config.state_dir), media_type=CONTENT_TYPE_LATEST
    )


def routes() -> list[Route]:
    """The API's routes."""
    return [
        Route("/api/runs", list_runs),
        Route("/api/runs/{run_id}", get_run),
        Route("/api/runs/{run_id}/report", get_report),
        Route("/api/runs/{run_id}/logs/{task_id}", get_logs),
        Route("/api/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/api/escalations", list_escalations),
        Route("/api/escalations/{esc_id}", answer, methods=["POST"]),
        Route("/metrics", metrics),
    ]
