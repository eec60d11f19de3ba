"""A run's budget for model calls: tokens and cost, shared by every thread of the run.

A call is refused once the run has used ``max_tokens`` tokens or spent ``max_cost``; calls
already in flight finish and are counted, so a run can end slightly over its budget by at
most what its parallel calls used. The engine seeds a resumed run with what its journal
says was already spent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vigil.actions.specs import BudgetConfig
from vigil.errors import Category, ExitCode, VigilError


class BudgetExceeded(VigilError):
    code = "VIGIL-BUDGET-EXCEEDED"
    title = "the run used up its budget for model calls"
    remedy = "Raise [budget] max_tokens or max_cost in vigil.toml, then resume the run."
    exit_code = ExitCode.RUN_FAILED
    category = Category.PERMANENT  # no retry brings the budget back


@dataclass(frozen=True)
class Spent:
    """What a run has used so far."""

    tokens: int
    cost: float
    calls: int


class Budget:
    """Counts tokens and cost; refuses new calls once a limit is reached. Thread-safe."""

    def __init__(
        self,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        *,
        spent_tokens: int = 0,
        spent_cost: float = 0.0,
    ) -> None:
        self.max_tokens = max_tokens
        self.max_cost = max_cost
        self._tokens = spent_tokens
        self._cost = spent_cost
        self._calls = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls, config: BudgetConfig, *, spent_tokens: int = 0, spent_cost: float = 0.0
    ) -> Budget:
        """The budget ``[budget]`` sets, with what a resumed run already spent."""
        return cls(
            config.max_tokens, config.max_cost, spent_tokens=spent_tokens, spent_cost=spent_cost
        )

    def _reason_locked(self) -> str | None:
        if self.max_tokens is not None and self._tokens >= self.max_tokens:
            return f"{self._tokens} tokens used of max_tokens {self.max_tokens}"
        if self.max_cost is not None and self._cost >= self.max_cost:
            return f"cost {self._cost:.4f} reached max_cost {self.max_cost:g}"
        return None

    def check(self) -> None:
        """Raise BudgetExceeded if a new call may not start."""
        with self._lock:
            reason = self._reason_locked()
        if reason is not None:
            raise BudgetExceeded(f"no new model call: {reason}")

    def charge(self, tokens: int, cost: float) -> None:
        """Count a finished call."""
        with self._lock:
            self._tokens += max(0, tokens)
            self._cost += max(0.0, cost)
            self._calls += 1

    @property
    def exceeded(self) -> bool:
        """Whether new calls are refused."""
        with self._lock:
            return self._reason_locked() is not None

    def spent(self) -> Spent:
        """What was used so far."""
        with self._lock:
            return Spent(self._tokens, self._cost, self._calls)
