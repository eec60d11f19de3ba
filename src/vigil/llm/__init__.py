"""Model calls: an OpenAI-compatible chat client, the run's budget, prefetch, diffs."""

from vigil.llm.budget import Budget, BudgetExceeded, Spent
from vigil.llm.client import (
    Backoff,
    CallStopped,
    ChatClient,
    ChatReply,
    LlmError,
    Usage,
    advised_delay,
    parse_reset,
    parse_retry_after,
)
from vigil.llm.patch import Patch, UnsafePatch, extract_diff, parse_patch
from vigil.llm.prefetch import Prefetcher, PrefetchStats

__all__ = [
    "Backoff",
    "Budget",
    "BudgetExceeded",
    "CallStopped",
    "ChatClient",
    "ChatReply",
    "LlmError",
    "Patch",
    "PrefetchStats",
    "Prefetcher",
    "Spent",
    "UnsafePatch",
    "Usage",
    "advised_delay",
    "extract_diff",
    "parse_patch",
    "parse_reset",
    "parse_retry_after",
]
