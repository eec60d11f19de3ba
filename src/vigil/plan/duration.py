"""Durations as people write them in plans: ``90s``, ``10m``, ``1h30m``, ``250ms``, ``2d``."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


class DurationSyntaxError(ValueError):
    """A duration string that is not ``<number><unit>`` repeated."""


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a non-negative number of seconds or a string like ``1h30m``."""
    if isinstance(value, bool):
        raise DurationSyntaxError("a duration is a number of seconds or a string like '90s'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise DurationSyntaxError("a duration must be a finite number of seconds")
        if value < 0:
            raise DurationSyntaxError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise DurationSyntaxError("a duration is a number of seconds or a string like '90s'")
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if not _WHOLE.fullmatch(text):
        raise DurationSyntaxError(
            f"'{value}' is not a duration; write e.g. '90s', '10m', '1h30m' or '250ms'"
        )
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """A short human form: ``850ms``, ``42.1s``, ``3m05s``, ``2h14m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m}m{s:02d}s"
    h, rest = divmod(round(seconds), 3600)
    return f"{h}h{rest // 60:02d}m"
