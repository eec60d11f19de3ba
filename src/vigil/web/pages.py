"""The dashboard's pages for people: runs, a run, a task, the report, escalations, login.

Thin handlers: each gathers what the CLI would print for the same question (the run
view, the report, the logs) and hands it to a template. State changes (cancel, answer)
are POSTs that need a logged-in session and its CSRF token.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from vigil.engine.runs import cancel_run, recorded_plan
from vigil.errors import UsageError
from vigil.plan.models import ACTION_KINDS, Task
from vigil.report import build_report, load_state, render_markdown, run_view
from vigil.report.gantt import gantt_svg
from vigil.web import escalations
from vigil.web.auth import SESSION_COOKIE, SESSION_SECONDS
from vigil.web.context import dashboard, render
from vigil.web.graph import task_graph_svg
from vigil.web.runs import TaskNotFound, attempt_changes, attempt_text, run_rows

if TYPE_CHECKING:
    from vigil.store import RunStore

# Run states in the order the filter shows them; "live" ones refresh themselves.
STATE_ORDER = ("running", "waiting", "pending", "failed", "cancelled", "succeeded")
LIVE = frozenset({"running", "waiting", "pending", "interrupted"})  # interrupted: cancellable
NAME_LIMIT = 64


def q(value: object) -> str:
    """``value`` quoted for one URL path segment."""
    return quote(str(value), safe="")


def run_url(run_id: str) -> str:
    """Where a run's page is."""
    return f"/runs/{q(run_id)}"


def task_url(run_id: str, task_id: str) -> str:
    """Where a task's page is."""
    return f"{run_url(run_id)}/tasks/{q(task_id)}"


def local_path(target: str | None, default: str) -> str:
    """``target`` if it is a path on this site, else ``default`` (no open redirects)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return default


def markdown_html(text: str) -> Markup:
    """Markdown as HTML; raw HTML in the text is escaped, not passed through."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    return Markup(md.render(text))


def _open_escalations(store: RunStore, run_id: str | None = None) -> list[dict[str, Any]]:
    try:
        return escalations.list_open(store, run_id)
    except ImportError:
        return []


def runs_page(request: Request) -> Response:
    """Every run, newest first, optionally of one state."""
    board = dashboard(request)
    state = request.query_params.get("state") or None
    rows = run_rows(board.store, state=state)
    counts = Counter(r["state"] for r in run_rows(board.store, limit=100_000))
    return render(
        request,
        "runs.html",
        {"rows": rows, "state": state, "counts": counts, "states": STATE_ORDER},
    )


def run_page(request: Request) -> Response:
    """One run: phases, task graph, tasks, report summary, issues, open escalations."""
    board = dashboard(request)
    run_id = request.path_params["run_id"]
    record, state = load_state(board.store, run_id)
    view = run_view(record, state)
    graph = task_graph_svg(
        recorded_plan(record),
        {t["id"]: t["state"] for t in view["tasks"]},
        href=lambda task_id: task_url(run_id, task_id),
    )
    context = {
        "view": view,
        "report": build_report(view),
        "graph": Markup(graph),
        # Escaped where it holds run data (vigil.report.gantt), so marked safe here.
        "gantt": Markup(gantt_svg(state, href=lambda task_id: task_url(run_id, task_id))),
        "escalations": _open_escalations(board.store, run_id),
        "live": view["state"] in LIVE,
    }
    return render(request, "run.html", context)


def task_page(request: Request) -> Response:
    """One task: its definition, each attempt and its reason, a log, file changes."""
    board = dashboard(request)
    run_id, task_id = request.path_params["run_id"], request.path_params["task_id"]
    record, state = load_state(board.store, run_id)
    view = run_view(record, state)
    task = next((t for t in view["tasks"] if t["id"] == task_id), None)
    if task is None:
        raise TaskNotFound(f"run {run_id} has no task {task_id!r}")
    numbers = [a["number"] for a in task["attempts"]]
    chosen = _int_param(request, "attempt") or (numbers[-1] if numbers else None)
    log = attempt_text(board.config, state, task_id, chosen) if chosen is not None else None
    definition = recorded_plan(record).task(task_id)
    context = {
        "view": view,
        "task": task,
        "definition": definition,
        "action": task_action(definition),
        "chosen": chosen,
        "log": log,
        "changes": attempt_changes(board.config, state, task_id),
        "escalations": [
            e for e in _open_escalations(board.store, run_id) if e.get("task") == task_id
        ],
        "live": view["state"] in LIVE,
    }
    return render(request, "task.html", context)


def task_action(task: Task) -> tuple[str, str]:
    """The task's action kind and what it does, as text (a command, or the spec as JSON)."""
    for kind in ACTION_KINDS:
        value = getattr(task, kind, None)
        if isinstance(value, str):
            return kind, value
        if isinstance(value, BaseModel):
            return kind, value.model_dump_json(indent=2, exclude_defaults=True)
    return "unknown", ""


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {raw!r}") from None


def report_page(request: Request) -> Response:
    """The completion report, as ``vigil report`` writes it, rendered."""
    board = dashboard(request)
    record, state = load_state(board.store, request.path_params["run_id"])
    view = run_view(record, state)
    text = render_markdown(build_report(view))
    return render(request, "report.html", {"view": view, "html": markdown_html(text)})


def escalations_page(request: Request) -> Response:
    """Every open escalation, with its answer buttons."""
    board = dashboard(request)
    try:
        found = escalations.list_open(board.store)
        available = True
    except ImportError:
        found, available = [], False
    return render(request, "escalations.html", {"escalations": found, "available": available})


async def cancel_page(request: Request) -> Response:
    """Cancel a run (logged in, with the CSRF token), then show it."""
    board = dashboard(request)
    run_id = request.path_params["run_id"]
    form = await request.form()
    actor = board.access.require_write(request, _text(form.get("csrf")))
    reason = _text(form.get("reason")) or f"cancelled from the dashboard by {actor}"
    await run_in_threadpool(cancel_run, board.config, board.store, run_id, reason=reason)
    return RedirectResponse(run_url(run_id), status_code=303)


async def answer_page(request: Request) -> Response:
    """Answer an escalation (logged in, with the CSRF token), then go back."""
    board = dashboard(request)
    form = await request.form()
    actor = board.access.require_write(request, _text(form.get("csrf")))
    answered = await run_in_threadpool(
        escalations.answer,
        board.config,
        board.store,
        request.path_params["esc_id"],
        decision=_text(form.get("decision")),
        value=_text(form.get("value")) or None,
        comment=_text(form.get("comment")),
        actor=actor,
    )
    back = run_url(str(answered.get("run", "")))
    return RedirectResponse(local_path(_text(form.get("back")), back), status_code=303)


def _text(value: object) -> str:
    # Form fields may be uploads; only plain text counts.
    return value.strip() if isinstance(value, str) else ""


def login_form(request: Request) -> Response:
    """The login form."""
    target = local_path(request.query_params.get("next"), "/runs")
    return render(request, "login.html", {"next": target, "error": None})


async def login(request: Request) -> Response:
    """Check the token; on success set the session cookie and go where the user was going."""
    board = dashboard(request)
    form = await request.form()
    target = local_path(_text(form.get("next")), "/runs")
    if not board.access.token_matches(_text(form.get("token"))):
        context = {"next": target, "error": "That is not this dashboard's access token."}
        return render(request, "login.html", context, status=401)
    name = "".join(c for c in _text(form.get("name")) if c.isprintable())[:NAME_LIMIT]
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        board.access.new_session_cookie(name),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/runs", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def home(request: Request) -> Response:
    """The runs list is the home page."""
    return RedirectResponse("/runs", status_code=307)


def routes() -> list[Route]:
    """The pages' routes."""
    return [
        Route("/", home),
        Route("/runs", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/tasks/{task_id}", task_page),
        Route("/runs/{run_id}/report", report_page),
        Route("/runs/{run_id}/cancel", cancel_page, methods=["POST"]),
        Route("/escalations", escalations_page),
        Route("/escalations/{esc_id}", answer_page, methods=["POST"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
