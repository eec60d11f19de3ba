"""The chat client against a real local HTTP server: rate limits, errors, bounds, usage."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clitools import wait_for
from fakes.chat_server import ChatServer, Reply, completion, error
from vigil.llm import (
    Backoff,
    CallStopped,
    ChatClient,
    LlmError,
    advised_delay,
    parse_reset,
    parse_retry_after,
)

FAST = Backoff(initial=0.01, cap=0.05)
KEY = "sk-test-abcdefghijklmnopqrstuvwxyz"


def client(server: ChatServer, **kw: object) -> ChatClient:
    return ChatClient(server.base_url, api_key=KEY, backoff=FAST, **kw)  # type: ignore[arg-type]


def ask(c: ChatClient, **kw: object):  # type: ignore[no-untyped-def]
    return c.complete(model="m", messages=[{"role": "user", "content": "hi"}], **kw)  # type: ignore[arg-type]


def test_a_completion_sends_what_openai_expects_and_reads_usage() -> None:
    with (
        ChatServer(completion("done", prompt_tokens=30, completion_tokens=12)) as server,
        client(server) as c,
    ):
        reply = c.complete(
            model="gpt-x",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ],
            max_tokens=50,
            temperature=0.2,
        )
    assert reply.text == "done" and reply.tries == 1
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        30,
        12,
        42,
    )
    seen = server.seen[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.body == {
        "model": "gpt-x",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "temperature": 0.2,
    }


@pytest.mark.slow
def test_429_waits_at_least_the_advertised_retry_after() -> None:
    with ChatServer() as server:
        server.queue(error(429, "slow down", retry_after="1"))
        with client(server) as c:
            reply = ask(c)
    assert reply.tries == 2
    first, second = server.seen
    # A correctness bound: the retry must not come before the server allowed it.
    assert second.at - first.at >= 1.0


@pytest.mark.slow
def test_429_honours_an_http_date_and_ratelimit_reset_headers() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    with ChatServer() as server:
        server.queue(
            error(429, "tokens", x_ratelimit_reset_tokens="700ms", x_ratelimit_reset_requests="1s"),
            error(429, "date", retry_after=later),
        )
        with client(server) as c:
            assert ask(c).tries == 3
    a, b, c2 = (s.at for s in server.seen)
    assert b - a >= 1.0  # the longer of the two resets
    assert c2 - a >= 1.0  # the HTTP date lies at least a second after the first request


def test_503_and_malformed_json_are_retried() -> None:
    with ChatServer() as server:
        server.queue(
            error(503, "overloaded"),
            Reply(200, b"{not json", {"content-type": "application/json"}),
            Reply(200, b'{"choices": []}', {"content-type": "application/json"}),
            completion("finally"),
        )
        with client(server) as c:
            reply = ask(c)
    assert reply.text == "finally" and reply.tries == 4 and len(server.seen) == 4


def test_tries_are_bounded_and_the_failure_names_the_providers_last_error() -> None:
    with (
        ChatServer(error(503, "engine overloaded (req 77)")) as server,
        client(server) as c,
        pytest.raises(LlmError) as caught,
    ):
        ask(c, max_tries=3)
    assert len(server.seen) == 3
    assert (
        "3 tries failed" in caught.value.cause
        and "engine overloaded (req 77)" in caught.value.cause
    )


def test_client_errors_fail_at_once_and_never_show_the_key() -> None:
    with (
        ChatServer(error(401, f"Incorrect API key provided: {KEY}")) as server,
        client(server) as c,
        pytest.raises(LlmError) as caught,
    ):
        ask(c)
    assert len(server.seen) == 1
    assert "HTTP 401" in caught.value.cause and KEY not in str(caught.value)


def test_a_slow_reply_times_out_and_is_retried() -> None:
    # The first reply is held back, so only the client's timeout ends that try. Where a
    # loaded machine could not deliver even the quick reply within the timeout, the test
    # tries again with a longer one: the machine's speed changes its length, not its outcome.
    for timeout in (0.5, 2.0, 10.0, 60.0):
        with ChatServer() as server:
            server.queue(replace(completion("late"), held=True), completion("quick"))
            with client(server, timeout=timeout) as c:
                try:
                    reply = ask(c, max_tries=2)
                except LlmError:
                    continue  # the quick reply timed out too
        assert reply.text == "quick" and reply.tries == 2
        assert len(server.seen) == 2
        return
    pytest.fail("even the quick reply timed out, whatever the timeout")


def test_malformed_replies_within_the_bound_fail_clearly() -> None:
    with (
        ChatServer(Reply(200, b"<html>gateway</html>")) as server,
        client(server) as c,
        pytest.raises(LlmError) as caught,
    ):
        ask(c, max_tries=2)
    assert "malformed reply" in caught.value.cause


def test_a_wait_longer_than_allowed_fails_instead_of_hanging() -> None:
    with (
        ChatServer(error(429, "quota", retry_after="86400")) as server,
        client(server, max_wait=60) as c,
        pytest.raises(LlmError) as caught,
    ):
        ask(c)
    assert "asks to wait 86400s" in caught.value.cause and len(server.seen) == 1


def test_stop_ends_a_retry_wait() -> None:
    stop = threading.Event()
    with ChatServer(error(429, "later", retry_after="30")) as server, client(server) as c:
        # Stopped once the first try reached the server (not after a fixed 0.2 s, which a
        # loaded machine can spend before the first try, so nothing was ever sent).
        stopper = threading.Thread(target=lambda: (wait_for(lambda: server.seen), stop.set()))
        stopper.start()
        try:
            with pytest.raises(CallStopped):
                ask(c, stop=stop)
        finally:
            stop.set()
            stopper.join()
    assert len(server.seen) == 1


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_reset_durations_parse(h: int, m: int, s: int, ms: int) -> None:
    text = f"{h}h{m}m{s}s" if h else f"{m}m{s}s"
    assert parse_reset(text) == pytest.approx(h * 3600 + m * 60 + s)
    assert parse_reset(f"{ms}ms") == pytest.approx(ms / 1000)
    assert parse_reset(f"{s}.5s") == pytest.approx(s + 0.5)


@given(st.text(max_size=20))
def test_garbage_headers_never_crash(text: str) -> None:
    parse_reset(text)
    parse_retry_after(text, 0.0)
    advised_delay({"retry-after": text, "x-ratelimit-reset-tokens": text}, 0.0)


def test_retry_after_forms() -> None:
    assert parse_retry_after("5", 0.0) == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("-3", 0.0) is None
    assert advised_delay({"x-ratelimit-reset-requests": "6m0s"}, 0.0) == 360.0


@given(st.integers(1, 50), st.floats(0.0, 1.0))
def test_backoff_is_capped_and_grows(tries: int, r: float) -> None:
    b = Backoff(initial=1.0, cap=60.0)
    assert 0.0 <= b.delay(tries, lambda: r) <= 60.0
    assert b.delay(tries, lambda: 1.0) == min(60.0, 2.0 ** (tries - 1))
