"""The llm action end to end: real HTTP to a local server, diffs applied in a real sandbox,
the run's budget, and prefetched replies that are used only when still valid."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakes.chat_server import ChatServer, completion
from test_agent_support import attempt, new_workspace, plan_with
from vigil.actions.llm import LlmAction, llm_capabilities, llm_secret_names
from vigil.actions.specs import LlmConfig, Price
from vigil.llm import (
    Budget,
    BudgetExceeded,
    ChatReply,
    Prefetcher,
    Usage,
    extract_diff,
    parse_patch,
)
from vigil.llm.patch import UnsafePatch
from vigil.workspace import tree_hash

KEY = "sk-live-0123456789abcdefghijklmn"
DIFF = """Here is the fix:

```diff
--- a/src/value.py
+++ b/src/value.py
@@ -1 +1 @@
-VALUE = 0
+VALUE = 42
```
"""


def llm_plan(server: ChatServer, extra: str = "", prompt: str = "Fix {{ task.id }}"):  # type: ignore[no-untyped-def]
    return plan_with(
        "      - id: ask\n        secrets: [OPENAI_KEY]\n        llm:\n"
        f"          base_url: {server.base_url}\n          model: fake-model\n"
        f"          api_key_secret: OPENAI_KEY\n          prompt: {json.dumps(prompt)}\n" + extra,
    )


CONFIG = LlmConfig(prices={"fake-model": Price(prompt=1.0, completion=2.0)})


def test_output_reply_becomes_the_task_output_with_usage_and_cost(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    with ChatServer(completion("the answer", prompt_tokens=1000, completion_tokens=500)) as server:
        plan = llm_plan(server, "          system: 'You work on {{ plan.project }}'\n")
        task = plan.task("ask")
        with attempt(ws, plan, task, secrets={"OPENAI_KEY": KEY}) as ctx:
            result = LlmAction(task.llm, CONFIG).execute(ctx)  # type: ignore[arg-type]
            assert ctx.capture().is_empty
    assert result.ok and result.output == "the answer"
    assert result.usage["total_tokens"] == 1500 and result.usage["cost"] == pytest.approx(2.0)
    sent = server.seen[0]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body is not None and sent.body["messages"] == [
        {"role": "system", "content": "You work on demo"},
        {"role": "user", "content": "Fix ask"},
    ]
    assert llm_capabilities(task) == ("network",)
    assert llm_secret_names(task, LlmConfig()) == ("OPENAI_KEY",)


def test_a_diff_reply_is_applied_inside_the_sandbox(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    before = tree_hash(ws.root, exclude=ws.exclude)
    with ChatServer(completion(DIFF)) as server:
        plan = llm_plan(server, "          apply: patch\n")
        task = plan.task("ask")
        with attempt(ws, plan, task, secrets={"OPENAI_KEY": KEY}) as ctx:
            result = LlmAction(task.llm).execute(ctx)  # type: ignore[arg-type]
            assert result.ok, ctx.ran[-1].output
            changeset = ctx.capture()
    assert changeset.paths == ["src/value.py"]
    assert tree_hash(ws.root, exclude=ws.exclude) == before
    ws.commit(changeset)
    assert (ws.root / "src" / "value.py").read_text() == "VALUE = 42\n"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (DIFF.replace("-VALUE = 0", "-VALUE = 5"), "does not apply"),
        ("I could not find the bug.", "no unified diff"),
        (DIFF.replace("src/value.py", "../outside.py"), "outside the workspace"),
    ],
)
def test_a_diff_that_cannot_be_applied_fails_clearly(
    tmp_path: Path, reply: str, reason: str
) -> None:
    ws = new_workspace(tmp_path)
    with ChatServer(completion(reply)) as server:
        plan = llm_plan(server, "          apply: patch\n")
        task = plan.task("ask")
        with attempt(ws, plan, task, secrets={"OPENAI_KEY": KEY}) as ctx:
            result = LlmAction(task.llm).execute(ctx)  # type: ignore[arg-type]
            assert not result.ok and reason in result.reason
            assert ctx.capture().is_empty
    assert not (tmp_path / "outside.py").exists()


def test_budget_stops_new_calls_once_spent(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    budget = Budget(max_tokens=30)
    with ChatServer(completion("ok", prompt_tokens=15, completion_tokens=5)) as server:
        plan = llm_plan(server)
        task = plan.task("ask")
        results = []
        for n in range(1, 4):
            with attempt(ws, plan, task, number=n, secrets={"OPENAI_KEY": KEY}) as ctx:
                results.append(LlmAction(task.llm, budget=budget).execute(ctx))  # type: ignore[arg-type]
    assert [r.ok for r in results] == [True, True, False]
    assert "VIGIL-BUDGET-EXCEEDED" in results[2].reason
    assert len(server.seen) == 2  # the refused call never reached the provider
    assert budget.exceeded and budget.spent().tokens == 40


def test_budget_counts_exactly_under_threads() -> None:
    budget = Budget(max_cost=1000.0)

    def spend() -> None:
        for _ in range(500):
            budget.charge(3, 0.25)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spent = budget.spent()
    assert (spent.tokens, spent.cost, spent.calls) == (12000, 1000.0, 4000)
    with pytest.raises(BudgetExceeded):
        budget.check()


def test_missing_api_key_secret_fails_before_any_call(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    with ChatServer() as server:
        plan = llm_plan(server)
        task = plan.task("ask")
        with attempt(ws, plan, task) as ctx:
            result = LlmAction(task.llm).execute(ctx)  # type: ignore[arg-type]
    assert not result.ok and "OPENAI_KEY" in result.reason and server.seen == []


def test_prefetched_reply_is_used_only_on_the_workspace_it_was_made_for(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path)
    with ChatServer(completion("fresh")) as server, Prefetcher[ChatReply](max_parallel=2) as pre:
        plan = llm_plan(server)
        task = plan.task("ask")
        action = LlmAction(task.llm, prefetcher=pre)  # type: ignore[arg-type]
        with attempt(ws, plan, task, secrets={"OPENAI_KEY": KEY}) as ctx:
            request = action.request(ctx)
            early = ctx.fingerprint()
        prepared = ChatReply("prepared", Usage(1, 1, 2), "fake-model", 1)
        pre.submit("ask", request.hash, early, lambda: prepared)

        # Same prompt, same files: the prepared reply is used and no call is made.
        with attempt(ws, plan, task, number=2, secrets={"OPENAI_KEY": KEY}) as ctx:
            assert action.execute(ctx).output == "prepared"
        assert server.seen == []

        # Another task changed the files in between: the prepared reply is stale.
        pre.submit("ask", request.hash, early, lambda: prepared)
        (ws.root / "src" / "value.py").write_text("VALUE = 1\n")
        with attempt(ws, plan, task, number=3, secrets={"OPENAI_KEY": KEY}) as ctx:
            assert action.execute(ctx).output == "fresh"
        assert len(server.seen) == 1
        stats = pre.stats()
        assert (stats.used, stats.stale_discarded) == (1, 1)

        # --allow-stale-prompts: the stale reply is taken.
        pre.submit("ask", request.hash, early, lambda: prepared)
        stale_ok = LlmAction(task.llm, prefetcher=pre, allow_stale=True)  # type: ignore[arg-type]
        with attempt(ws, plan, task, number=4, secrets={"OPENAI_KEY": KEY}) as ctx:
            assert stale_ok.execute(ctx).output == "prepared"
        assert pre.stats().stale_used == 1


def test_prefetch_keys_on_the_prompt_and_joins_its_threads() -> None:
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "reply"

    pre: Prefetcher[str] = Prefetcher(max_parallel=1)
    pre.submit("t", "hash-1", "fp", slow)
    assert pre.take("t", "hash-2", "fp") is None  # the inputs changed: another prompt
    assert pre.stats().mismatched == 1
    pre.submit("t", "hash-1", "fp", lambda: "reply")
    started.wait(5)
    release.set()
    assert pre.take("t", "hash-1", "fp") == "reply"
    pre.submit("u", "h", "fp", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert pre.take("u", "h", "fp") is None and pre.stats().failed == 1
    pre.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("vigil-prefetch")]
    assert pre.submit("t", "hash-1", "fp", lambda: "late") is False


def test_extract_diff_finds_raw_and_fenced_diffs() -> None:
    raw = "Sure.\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert extract_diff(raw) == raw[len("Sure.\n") :]
    assert parse_patch(extract_diff(DIFF) or "").paths == ("src/value.py",)
    plain = "--- x.py\n+++ x.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert parse_patch(plain).strip == 0
    with pytest.raises(UnsafePatch):
        parse_patch("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n")


@given(st.text(max_size=300))
def test_extract_diff_never_crashes(text: str) -> None:
    found = extract_diff(text)
    if found is not None:
        with contextlib.suppress(UnsafePatch):
            parse_patch(found)
