"""The dashboard against a real SQLite store filled by really running plans.

Pages and the JSON API must show what the library (and so the CLI) says; metrics must
equal what the store holds; without the token nothing changes.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enginetools import HANG
from vigil.config import load_config
from vigil.engine import events as ev
from vigil.engine.attest import JournalSigner
from vigil.engine.options import RunOptions
from vigil.engine.runs import seal_run, start_run
from vigil.plan.models import Plan
from vigil.report import build_report, load_state, run_view
from vigil.safety import GrantRequired
from vigil.safety.audit import AuditLog, audit_path
from vigil.safety.decisions import decision_key
from vigil.store import NewRun, open_store
from vigil.web import create_app
from vigil.web.auth import SESSION_COOKIE

with warnings.catch_warnings():
    # Starlette's test client prefers a newer httpx fork; the one we have works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOKEN = "t0ken-for-tests-" + "x" * 24
LOCAL = "http://127.0.0.1"
HOSTILE = '<script>alert("owned")</script>'


def make_plan(tasks: list[dict[str, Any]], name: str = "web test") -> Plan:
    return Plan.model_validate(
        {"name": name, "project": "web", "phases": [{"id": "main", "tasks": tasks}]}
    )


class Site:
    """A workspace with a store, runs really executed in it, and the dashboard over it."""

    def __init__(self, workspace: Path, url: str) -> None:
        workspace.mkdir(parents=True, exist_ok=True)
        self.config = load_config(workspace)
        self.store = open_store(url)

    def run(self, plan: Plan) -> str:
        return start_run(self.config, self.store, plan, "plan.yaml").run_id

    def view(self, run_id: str) -> dict[str, Any]:
        record, state = load_state(self.store, run_id)
        return run_view(record, state)

    def app(self, *, open_reads: bool = True) -> Any:
        return create_app(self.config, token=TOKEN, open_reads=open_reads, store=self.store)

    def client(self, *, open_reads: bool = True, base_url: str = LOCAL) -> TestClient:
        return TestClient(self.app(open_reads=open_reads), base_url=base_url)


@pytest.fixture
def site(tmp_path: Path, sqlite_store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setenv("VIGIL_DATABASE_URL", sqlite_store_url)
    made = Site(tmp_path / "workspace", sqlite_store_url)
    yield made
    made.store.close()


@pytest.fixture
def runs(site: Site) -> dict[str, str]:
    """Three finished runs: one that succeeded after a retry, one failed, one hostile."""
    ok = site.run(
        make_plan(
            [
                {
                    "id": "flaky",
                    "run": 'test "$VIGIL_ATTEMPT" -ge 2 || { echo first try; false; }',
                    "retry": {"attempts": 3, "initial": 0},
                },
                {"id": "after", "run": "echo after flaky", "needs": ["flaky"]},
                {"id": "side", "run": "printf 'hello\\nworld\\n' > notes.txt"},
            ]
        )
    )
    bad = site.run(
        make_plan(
            [
                {"id": "boom", "run": "echo going down; exit 3"},
                {"id": "blocked", "run": "true", "needs": ["boom"]},
            ]
        )
    )
    hostile = site.run(
        make_plan([{"id": "shout", "run": f"echo '{HOSTILE}'"}], name=f"evil {HOSTILE}")
    )
    return {"ok": ok, "bad": bad, "hostile": hostile}


def login(client: TestClient, name: str = "ada") -> None:
    answer = client.post(
        "/login", data={"token": TOKEN, "name": name, "next": "/runs"}, follow_redirects=False
    )
    assert answer.status_code == 303


def test_runs_list_and_state_filter(site: Site, runs: dict[str, str]) -> None:
    with site.client() as web:
        page = web.get("/runs").text
        assert all(run_id in page for run_id in runs.values())
        failed = web.get("/runs", params={"state": "failed"}).text
        assert runs["bad"] in failed and runs["ok"] not in failed
        api = web.get("/api/runs").json()
        assert {r["id"]: r["state"] for r in api} == {r.id: r.state for r in site.store.list_runs()}
        succeeded = {r["id"] for r in web.get("/api/runs?state=succeeded").json()}
        assert succeeded == {runs["ok"], runs["hostile"]}
        wrong = web.get("/api/runs?state=sideways")
        assert wrong.status_code == 400
        assert wrong.json()["error"]["code"] == "VIGIL-USAGE"


def test_api_documents_are_the_cli_documents(site: Site, runs: dict[str, str]) -> None:
    with site.client() as web:
        for run_id in runs.values():
            view = json.loads(json.dumps(site.view(run_id)))
            assert web.get(f"/api/runs/{run_id}").json() == view
            assert web.get(f"/api/runs/{run_id}/report").json() == json.loads(
                json.dumps(build_report(site.view(run_id)))
            )
        missing = web.get("/api/runs/no-such-run")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "VIGIL-RUN-NOT-FOUND"


def test_run_page_draws_every_task_in_its_state(site: Site, runs: dict[str, str]) -> None:
    with site.client() as web:
        for run_id in (runs["ok"], runs["bad"]):
            page = web.get(f"/runs/{run_id}").text
            start = page.index("<svg")
            svg = ET.fromstring(page[start : page.index("</svg>", start) + len("</svg>")])
            ns = "{http://www.w3.org/2000/svg}"
            drawn = {
                g.get("data-task"): g.get("data-state")
                for g in svg.iter(f"{ns}g")
                if g.get("class", "").startswith("task ")
            }
            assert drawn == {t["id"]: t["state"] for t in site.view(run_id)["tasks"]}
            edges = {
                (p.get("data-from"), p.get("data-to"))
                for p in svg.iter(f"{ns}path")
                if p.get("class") == "edge"
            }
            needs = {("flaky", "after"), ("boom", "blocked")}
            assert edges == {e for e in needs if e[1] in drawn}
        bad = web.get(f"/runs/{runs['bad']}").text
        boom = next(t for t in site.view(runs["bad"])["tasks"] if t["id"] == "boom")
        assert "Issues" in bad and boom["reason"] in bad


@pytest.mark.slow
def test_task_page_shows_attempts_and_the_log_as_written(site: Site, runs: dict[str, str]) -> None:
    logs = site.config.state_dir / "logs"
    with site.client() as web:
        page = web.get(f"/runs/{runs['ok']}/tasks/flaky?attempt=1").text
        assert 'data-attempt="1"' in page and 'data-attempt="2"' in page
        assert "first try" in page
        text = web.get(f"/api/runs/{runs['ok']}/logs/flaky", params={"attempt": 1}).text
        written = (logs / runs["ok"] / "flaky" / "1.log").read_text()
        assert text == "==> flaky attempt 1 (failed) <==\n" + written
        both = web.get(f"/api/runs/{runs['ok']}/logs/flaky").text
        assert "==> flaky attempt 1 (failed) <==" in both
        assert "==> flaky attempt 2 (succeeded) <==" in both
        assert web.get(f"/api/runs/{runs['ok']}/logs/flaky?attempt=9").status_code == 400
        assert web.get(f"/api/runs/{runs['ok']}/logs/flaky?attempt=x").status_code == 400
        assert web.get(f"/runs/{runs['ok']}/tasks/nope").status_code == 404
        assert web.get(f"/api/runs/{runs['ok']}/logs/..%2F..%2Fvigil.db").status_code == 404


def test_task_page_shows_the_file_changes(site: Site, runs: dict[str, str]) -> None:
    assert (site.config.workspace / "notes.txt").read_text() == "hello\nworld\n"
    with site.client() as web:
        page = web.get(f"/runs/{runs['ok']}/tasks/side").text
        assert "File changes" in page and "committed to the workspace" in page
        assert "notes.txt" in page
        assert '<span class="d-add">+hello</span>' in page
        assert "File changes" not in web.get(f"/runs/{runs['ok']}/tasks/after").text


def test_hostile_text_is_escaped_everywhere(site: Site, runs: dict[str, str]) -> None:
    run_id = runs["hostile"]
    assert HOSTILE in (site.config.state_dir / "logs" / run_id / "shout" / "1.log").read_text()
    with site.client() as web:
        for path in (
            "/runs",
            f"/runs/{run_id}",
            f"/runs/{run_id}/tasks/shout",
            f"/runs/{run_id}/report",
        ):
            page = web.get(path).text
            assert "<script>alert" not in page, path
            assert "&lt;script&gt;" in page, path


def test_metrics_equal_the_store(site: Site, runs: dict[str, str]) -> None:
    # A real refusal: the plan needs a deploy grant it does not have.
    with pytest.raises(GrantRequired):
        site.run(make_plan([{"id": "ship", "run": "echo x", "requires": ["deploy"]}]))
    # People saying no (to a question, to a change) are not grant denials.
    log = AuditLog(audit_path(site.config.state_dir), fsync=False)
    log.append(actor="ada", action="escalation.answer", decision="deny")
    log.append(actor="ada", action="review.reject", decision="deny")
    with site.client() as web:
        families = {f.name: f for f in text_string_to_metric_families(web.get("/metrics").text)}
    by_state = Counter(r.state for r in site.store.list_runs())
    gauge = {s.labels["state"]: s.value for s in families["vigil_runs"].samples}
    assert gauge == {state: float(by_state.get(state, 0)) for state in gauge}
    assert gauge["succeeded"] == 2 and gauge["failed"] == 1

    finished = [
        e
        for r in site.store.list_runs()
        for e in site.store.events(r.id)
        if e.kind == ev.ATTEMPT_FINISHED and "duration" in e.data
    ]
    hist = families["vigil_task_duration_seconds"].samples
    counts = {s.labels["outcome"]: s.value for s in hist if s.name.endswith("_count")}
    sums = {s.labels["outcome"]: s.value for s in hist if s.name.endswith("_sum")}
    expected = Counter(e.data["outcome"] for e in finished)
    assert {k: v for k, v in counts.items() if v} == {k: float(v) for k, v in expected.items()}
    assert sums["succeeded"] == pytest.approx(
        sum(e.data["duration"] for e in finished if e.data["outcome"] == "succeeded")
    )
    inf = {
        s.labels["outcome"]: s.value
        for s in hist
        if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"
    }
    assert inf == counts

    retries = sum(
        build_report(site.view(r.id))["summary"]["retries"] for r in site.store.list_runs()
    )
    assert retries == 1
    assert families["vigil_task_retries"].samples[0].value == retries
    assert families["vigil_grant_denials"].samples[0].value == 1
    assert families["vigil_escalations_open"].samples[0].value == 0


def _crashed_run(site: Site) -> str:
    """A run whose driver died before doing anything: running in the store, nobody driving."""
    plan = make_plan([{"id": "long", "run": "sleep 60"}])
    run_id = "crashed-run"
    site.store.create_run(
        NewRun(
            id=run_id,
            plan_name=plan.name,
            project=plan.project,
            plan_hash=plan.content_hash(),
            plan_json=plan.canonical_json(),
            plan_path="plan.yaml",
            workspace=str(site.config.workspace),
            created_at=time.time(),
            options={
                "max_parallel": 1,
                "seal": seal_run(site.config, run_id, plan, RunOptions(max_parallel=1)),
            },
        )
    )
    # Signed as `vigil run` signs it: only a journal vigil wrote is acted on.
    JournalSigner(run_id, decision_key()).append(
        site.store, [ev.run_created(plan.content_hash(), 1)], at=time.time(), state="running"
    )
    return run_id


def test_no_token_no_change(site: Site) -> None:
    run_id = _crashed_run(site)
    before = site.store.get_run(run_id)
    with site.client() as web:
        refused = [
            web.post(f"/api/runs/{run_id}/cancel"),
            web.post(f"/api/runs/{run_id}/cancel", headers={"Authorization": "Bearer wrong"}),
            web.post(f"/api/runs/{run_id}/cancel", headers={"Authorization": TOKEN}),
            web.post(f"/runs/{run_id}/cancel", data={"csrf": ""}, follow_redirects=False),
        ]
        web.cookies.set(SESSION_COOKIE, "a.b.1.c")
        refused.append(web.post(f"/runs/{run_id}/cancel", data={"csrf": "x"}))
        web.cookies.clear()
        assert [r.status_code for r in refused] == [401] * 5
        assert refused[0].headers["www-authenticate"].startswith("Bearer")
        assert refused[0].json()["error"]["code"] == "VIGIL-WEB-TOKEN"
        login(web)
        forged = web.post(f"/runs/{run_id}/cancel", data={"csrf": "0" * 64})
        assert forged.status_code == 403
        no_csrf = web.post(f"/api/runs/{run_id}/cancel")
        assert no_csrf.status_code == 403
        after = site.store.get_run(run_id)
        assert after == before, "a refused request changed the run"

        done = web.post(
            f"/api/runs/{run_id}/cancel",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"reason": "not tonight"},
        )
        assert done.status_code == 200, done.text
        assert done.json() == {"id": run_id, "state": "cancelled", "already_ended": False}
    assert site.store.get_run(run_id).state == "cancelled"
    kinds = [e.kind for e in site.store.events(run_id)]
    assert ev.CANCEL_REQUESTED in kinds
    cancel = next(e for e in site.store.events(run_id) if e.kind == ev.CANCEL_REQUESTED)
    assert cancel.data["reason"] == "not tonight"


def test_browser_session_cancels_with_csrf(site: Site) -> None:
    run_id = _crashed_run(site)
    with site.client() as web:
        wrong = web.post("/login", data={"token": "guess", "next": "/runs"})
        assert wrong.status_code == 401 and SESSION_COOKIE not in web.cookies
        answer = web.post(
            "/login",
            data={"token": TOKEN, "name": "ada", "next": "//evil.example/"},
            follow_redirects=False,
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/runs"
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = web.get(f"/runs/{run_id}").text
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert len(csrf) == 64
        done = web.post(f"/runs/{run_id}/cancel", data={"csrf": csrf}, follow_redirects=False)
        assert done.status_code == 303
    assert site.store.get_run(run_id).state == "cancelled"
    cancel = next(e for e in site.store.events(run_id) if e.kind == ev.CANCEL_REQUESTED)
    assert "web:ada" in cancel.data["reason"]


def test_off_loopback_every_read_needs_the_token(site: Site, runs: dict[str, str]) -> None:
    with site.client(open_reads=False) as web:
        for path in ("/runs", f"/runs/{runs['ok']}", "/api/runs", "/metrics", "/escalations"):
            assert web.get(path).status_code == 401, path
        assert "Access token" in web.get("/runs").text
        assert web.get("/static/style.css").status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert web.get("/api/runs", headers=bearer).status_code == 200
        assert web.get("/metrics", headers=bearer).status_code == 200
        login(web)
        assert web.get(f"/runs/{runs['ok']}").status_code == 200
    # Open reads are for loopback host names only: a rebound DNS name is refused.
    with site.client(base_url="http://attacker.example") as web:
        assert web.get("/api/runs").status_code == 401
    with site.client(base_url="http://localhost:8470") as web:
        assert web.get("/api/runs").status_code == 200


def test_tampered_or_expired_session_is_no_session(site: Site) -> None:
    from vigil.web.auth import SESSION_SECONDS, Access

    access = Access(TOKEN, open_reads=False)
    good = access.new_session_cookie("ada")
    nonce, label, issued, mac = good.split(".")
    old = access.new_session_cookie("ada", now=time.time() - SESSION_SECONDS - 5)
    other = Access("another-token-" + "y" * 20, open_reads=False).new_session_cookie("ada")
    with site.client(open_reads=False) as web:
        for value in (
            f"{nonce}.{label}.{int(issued) + 9999}.{mac}",
            f"{nonce}.YWRtaW4.{issued}.{mac}",
            old,
            other,
            "",
        ):
            web.cookies.set(SESSION_COOKIE, value)
            assert web.get("/api/runs").status_code == 401, value
        web.cookies.set(SESSION_COOKIE, good)
        assert web.get("/api/runs").status_code == 200


@pytest.mark.slow
def test_escalation_approved_over_the_api(site: Site) -> None:
    plan = make_plan(
        [
            {"id": "build", "run": "echo built"},
            {
                "id": "go",
                "needs": ["build"],
                "approval": {"question": "Deploy?"},
            },
            {"id": "deploy", "run": "echo deployed", "needs": ["go"]},
        ]
    )
    run_id = site.run(plan)
    assert site.store.get_run(run_id).state == "waiting"
    with site.client() as web:
        open_now = web.get("/api/escalations").json()
        assert [(e["run"], e["task"], e["answered"]) for e in open_now] == [(run_id, "go", False)]
        esc = open_now[0]["id"]
        metrics = web.get("/metrics").text
        assert "vigil_escalations_open 1.0" in metrics
        seq = site.store.get_run(run_id).last_seq
        assert web.post(f"/api/escalations/{esc}", json={"decision": "approve"}).status_code == 401
        assert site.store.get_run(run_id).last_seq == seq
        assert len(web.get("/api/escalations").json()) == 1
        answered = web.post(
            f"/api/escalations/{esc}",
            json={"decision": "approve", "comment": "ship it"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answered.status_code == 200, answered.text
        assert answered.json()["answered"] is True
        assert web.get("/api/escalations").json() == []
        history = web.get("/api/escalations", params={"all": "1", "run": run_id}).json()
        assert [(e["task"], e["answered"]) for e in history] == [("go", True)]
        assert history[0]["answer"]["comment"] == "ship it"
        assert history[0]["answer"]["by"] == "web:api"
    deadline = time.monotonic() + HANG  # the resume the answer started runs on its own
    while site.store.get_run(run_id).state != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert site.store.get_run(run_id).state == "succeeded"
    assert os.path.exists(site.config.state_dir / "logs" / run_id / "deploy" / "1.log")


def test_run_page_shows_the_attempts_over_time(site: Site, runs: dict[str, str]) -> None:
    """The same Gantt chart as `vigil report --format html`: a bar per attempt, a line for
    the wait before a retry, a label linking each task's page."""
    with site.client() as web:
        page = web.get(f"/runs/{runs['ok']}").text
    start = page.index('<svg xmlns="http://www.w3.org/2000/svg" class="gantt"')
    svg = ET.fromstring(page[start : page.index("</svg>", start) + len("</svg>")])
    ns = "{http://www.w3.org/2000/svg}"
    bars = [
        (r.findtext(f"{ns}title") or "", r.get("data-state"))
        for r in svg.iter(f"{ns}rect")
        if r.get("class") == "gantt-attempt"
    ]
    tasks = [title.split(":", 1)[0] for title, _ in bars]
    assert Counter(tasks) == {"flaky": 2, "after": 1, "side": 1}
    assert [s for t, s in bars if t.startswith("flaky:")] == ["failed", "succeeded"]
    links = {a.get("href") for a in svg.iter(f"{ns}a")}
    assert f"/runs/{runs['ok']}/tasks/flaky" in links
