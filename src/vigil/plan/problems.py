"""What can be wrong with a plan file, said at the place where it is wrong.

A plan is checked as a whole: every problem is collected and reported at once with its
``file:line:col``, so one pass of fixes makes the plan valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vigil.errors import ExitCode, VigilError


@dataclass(frozen=True, order=True)
class PlanProblem:
    """One mistake in a plan file: where it is (1-based), what is wrong, and how to fix it."""

    file: str
    line: int
    col: int
    cause: str
    fix: str
    code: str = ""
    """A stable code for a kind of mistake callers tell apart (most problems have none)."""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.cause} (fix: {self.fix})"


class PlanInvalid(VigilError):
    """The plan file has one or more problems; ``problems`` lists them all."""

    code = "VIGIL-PLAN-INVALID"
    title = "the plan file is not a valid plan"
    remedy = "Fix each problem at the file:line:col shown, then run `vigil plan check FILE`."
    exit_code = ExitCode.USAGE

    def __init__(self, problems: Sequence[PlanProblem]) -> None:
        ordered = sorted(set(problems))
        if not ordered:
            raise ValueError("PlanInvalid needs at least one problem")
        count = len(ordered)
        noun = "problem" if count == 1 else "problems"
        first = ordered[0]
        cause = f"{first.file} has {count} {noun}; first: line {first.line}: {first.cause}"
        super().__init__(cause, details=[str(p) for p in ordered])
        self.problems: list[PlanProblem] = ordered

    def __reduce__(self) -> tuple[type[PlanInvalid], tuple[list[PlanProblem]]]:
        # Exceptions pickle their args (the cause); rebuild from the problems instead.
        return (PlanInvalid, (self.problems,))


class ExpressionInScript(PlanInvalid):
    """A plan pastes a ``${{ ... }}`` expression into a shell script's text."""

    code = "VIGIL-PLAN-EXPRESSION-IN-SCRIPT"
    title = "a plan pastes an expression into a shell script"
    remedy = (
        'Pass the value through the environment: `env: {NAME: "${{ inputs.x }}"}` on the '
        'task, and "$NAME" (quoted) in the script. A value pasted into a script is code '
        "that whoever sets it can inject; a value in a variable is only data."
    )

    def __reduce__(self) -> tuple[type[PlanInvalid], tuple[list[PlanProblem]]]:
        return (ExpressionInScript, (self.problems,))


class MatrixTooLarge(PlanInvalid):
    """A task's ``matrix:`` expands to more tasks than a plan may hold for one task."""

    code = "VIGIL-PLAN-MATRIX-TOO-LARGE"
    title = "a matrix expands to too many tasks"
    remedy = (
        "A matrix may expand to at most 256 tasks: use fewer keys or values, exclude "
        "combinations, or split the task."
    )

    def __reduce__(self) -> tuple[type[PlanInvalid], tuple[list[PlanProblem]]]:
        return (MatrixTooLarge, (self.problems,))


def plan_invalid(problems: Sequence[PlanProblem]) -> PlanInvalid:
    """The error for ``problems``: the one of a problem's stable kind if one is of one
    (:class:`ExpressionInScript`, :class:`MatrixTooLarge`), else :class:`PlanInvalid`."""
    for kind in (ExpressionInScript, MatrixTooLarge):
        if any(p.code == kind.code for p in problems):
            return kind(problems)
    return PlanInvalid(problems)


class PlanNotFound(VigilError):
    """The plan file does not exist or cannot be read."""

    code = "VIGIL-PLAN-NOT-FOUND"
    title = "the plan file could not be read"
    remedy = "Check the path; `vigil plans list` shows the plans in this project."
    exit_code = ExitCode.USAGE


class SecretSourceInPlan(VigilError):
    """A plan says where a secret's value comes from, which only a person may say."""

    code = "VIGIL-PLAN-SECRET-SOURCE"
    title = "a plan declares where a secret's value comes from"
    remedy = (
        "Move the sources into [secrets] in vigil.toml (steps cannot change it), delete "
        "`secrets:` from the top of the plan, and keep `secrets: [NAME]` on the tasks."
    )
    exit_code = ExitCode.USAGE
