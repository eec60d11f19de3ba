"""A chat-completions client for OpenAI-compatible endpoints that waits out rate limits.

One call is ``POST {base_url}/chat/completions``. Rate limits (429) and server errors
(5xx), timeouts, dropped connections and malformed replies are retried up to
``max_tries`` times; between tries it waits what the server asked for (``retry-after``
in seconds or as an HTTP date, or ``x-ratelimit-reset-requests``/``-tokens`` such as
``6m0s``), else a capped exponential backoff with full jitter. Other 4xx answers (bad
key, bad request) fail at once. Every failure names the provider's last error text.

The retry loop is written here rather than taken from a retry library: the delay comes
from the server's headers, the wait must end at once when the attempt is stopped, and
the whole loop is twenty lines.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from vigil.errors import ExitCode, VigilError
from vigil.safety.redact import Redactor

DEFAULT_TIMEOUT = 120.0
MAX_ERROR_TEXT = 500
_RESET_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_RESET_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class LlmError(VigilError):
    code = "VIGIL-LLM"
    title = "the model endpoint did not give a usable reply"
    remedy = "Check base_url, model and the API key; the provider's message is in the cause."
    exit_code = ExitCode.RUN_FAILED


class CallStopped(Exception):
    """The attempt was stopped while a call was waiting or in flight."""


@dataclass(frozen=True)
class Usage:
    """Tokens one call used, as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def cost(self, prompt_per_1k: float, completion_per_1k: float) -> float:
        """What the call cost at these prices per 1,000 tokens."""
        return (self.prompt_tokens * prompt_per_1k + self.completion_tokens * completion_per_1k) / (
            1000.0
        )


@dataclass(frozen=True)
class ChatReply:
    """A completed call: the assistant's text and what it used."""

    text: str
    usage: Usage
    model: str
    tries: int


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, initial * 2**(n-1)))``."""

    initial: float = 1.0
    cap: float = 60.0

    def delay(self, tries_done: int, rand: Callable[[], float] = random.random) -> float:
        """Wait before try ``tries_done + 1``."""
        return rand() * min(self.cap, self.initial * 2.0 ** max(0, tries_done - 1))


def parse_reset(value: str) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` value: ``1s``, ``6m0s``, ``20ms``, ``0.5``."""
    text = value.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _RESET_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            return None
        seconds = sum(float(n) * _RESET_UNITS[u] for n, u in parts)
    return seconds if seconds >= 0 and seconds != float("inf") else None


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds in a ``retry-after`` value (delta seconds or an HTTP date), from ``now``."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        return max(0.0, when.timestamp() - now)
    return seconds if 0 <= seconds != float("inf") else None


def advised_delay(headers: Mapping[str, str], now: float) -> float | None:
    """How long the server asked us to wait, if it said; the longest of what it said."""
    found: list[float] = []
    if "retry-after" in headers:
        delay = parse_retry_after(headers["retry-after"], now)
        if delay is not None:
            found.append(delay)
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        if name in headers:
            delay = parse_reset(headers[name])
            if delay is not None:
                found.append(delay)
    return max(found) if found else None


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:MAX_ERROR_TEXT]
        if isinstance(error, str):
            return error[:MAX_ERROR_TEXT]
    body = response.text.strip().replace("\n", " ")
    return body[:MAX_ERROR_TEXT] or response.reason_phrase


def parse_reply(data: object, model: str, tries: int) -> ChatReply:
    """The reply in a chat-completions response body; ValueError if it has none."""
    if not isinstance(data, dict):
        raise ValueError("the body is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("the body has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise ValueError("the first choice has no message content")
    raw = data.get("usage")
    usage = raw if isinstance(raw, dict) else {}

    def count(key: str) -> int:
        value = usage.get(key, 0)
        return value if isinstance(value, int) and value >= 0 else 0

    prompt, completion = count("prompt_tokens"), count("completion_tokens")
    total = count("total_tokens") or prompt + completion
    return ChatReply(
        content, Usage(prompt, completion, total), str(data.get("model") or model), tries
    )


class _Retryable(Exception):
    def __init__(self, text: str, delay: float | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.delay = delay


class ChatClient:
    """Calls one OpenAI-compatible endpoint; safe to share between threads."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: Backoff = Backoff(),
        max_wait: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.backoff = backoff
        self.max_wait = max_wait
        self._redactor = Redactor([api_key] if api_key else [])
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout), transport=transport
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def complete(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, str]],
        max_tokens: int | None = None,
        temperature: float | None = None,
        max_tries: int = 5,
        stop: threading.Event | None = None,
    ) -> ChatReply:
        """One chat completion, retried within ``max_tries``; LlmError when none succeeds."""
        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        stop = stop or threading.Event()
        last = "no try was made"
        for tries in range(1, max_tries + 1):
            if stop.is_set():
                raise CallStopped()
            try:
                return self._try(body, model, tries)
            except _Retryable as exc:
                last = exc.text
                if tries == max_tries:
                    break
                delay = exc.delay if exc.delay is not None else self.backoff.delay(tries)
                if delay > self.max_wait:
                    raise LlmError(
                        f"the provider asks to wait {delay:.0f}s (more than {self.max_wait:.0f}s)"
                        f" after: {last}"
                    ) from None
                if stop.wait(delay):
                    raise CallStopped() from None
        raise LlmError(f"{max_tries} tries failed; the last: {last}")

    def _try(self, body: dict[str, Any], model: str, tries: int) -> ChatReply:
        try:
            response = self._http.post(self.url, json=body)
        except httpx.TimeoutException:
            raise _Retryable("the request timed out") from None
        except httpx.TransportError as exc:
            raise _Retryable(self._redactor.redact(f"connection failed: {exc}")) from None
        status = response.status_code
        if status == 429 or status >= 500 or status == 408:
            text = self._redactor.redact(f"HTTP {status}: {_error_text(response)}")
            raise _Retryable(text, advised_delay(response.headers, time.time()))
        if status >= 400:
            text = self._redactor.redact(f"HTTP {status}: {_error_text(response)}")
            raise LlmError(text)
        try:
            return parse_reply(json.loads(response.content), model, tries)
        except ValueError as exc:
            raise _Retryable(f"malformed reply ({exc})") from None
