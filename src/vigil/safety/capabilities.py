"""Capability names with a meaning of their own."""

from __future__ import annotations

RUN = "run"
"""The capability every task needs just to run in an environment the policy protects;
a grant for a protected environment carries it."""
