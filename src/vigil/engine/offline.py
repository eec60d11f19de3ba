"""A task that failed for want of the network, told apart from a random failure.

A task without the ``network`` capability runs with only a loopback interface: a name
lookup fails and a connection to anything but the sandbox's own loopback is refused or
unreachable. When such a task fails and its output says so, the attempt records the line
that did (``no_network``), and the summary, the report and the postmortem say that the
task has no network and how to give it some (:func:`advice`). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

# What resolvers, sockets and the usual clients (curl, pip, npm, git, requests, urllib3,
# Go, Node) print when there is no network; matched per line, case-insensitive.
_SYMPTOMS = re.compile(
    r"temporary failure in name resolution"
    r"|name or service not known"
    r"|nodename nor servname provided"
    r"|no address associated with hostname"
    r"|could not resolve (?:host|proxy)"
    r"|getaddrinfo (?:failed|enotfound|eai_again)"
    r"|\beai_again\b|\benotfound\b"
    r"|failed to resolve"
    r"|connection refused|\beconnrefused\b|\[errno 111\]"
    r"|network is unreachable|\benetunreach\b|\[errno 101\]"
    r"|no route to host"
    r"|failed to establish a new connection",
    re.IGNORECASE,
)

_KEEP = 160
"""The longest excerpt of the telling line that is kept."""


def symptom(output: str) -> str | None:
    """The last line of ``output`` that shows a failed name lookup or connection, trimmed;
    None if no line does."""
    found = None
    for line in output.splitlines():
        if _SYMPTOMS.search(line):
            found = line.strip()
    if found is None:
        return None
    return found if len(found) <= _KEEP else found[: _KEEP - 3] + "..."


def advice(task: str, seen: str) -> str:
    """What to tell a person about ``task``, which failed offline showing ``seen``."""
    return (
        f"`{task}` has no network (its output shows: {seen}). If it needs the network, "
        f"add `requires: [network]` to task `{task}` and run with a grant that covers "
        "network (`vigil plan check` lists the grants a plan needs)."
    )


def last_symptom(attempts: Iterable[Mapping[str, Any]]) -> str | None:
    """The ``no_network`` line the last of ``attempts`` (journal data of a task's
    attempts, oldest first) recorded, if it failed offline."""
    last = None
    for data in attempts:
        last = data
    if last is None or not last.get("no_network"):
        return None
    return str(last["no_network"])
