"""Errors a person can meet while vigil isolates, commits or rolls back an attempt."""

from __future__ import annotations

from vigil.errors import ExitCode, VigilError


class Conflict(VigilError):
    """The workspace changed under an attempt: a path no longer matches its pre-image."""

    code = "VIGIL-CONFLICT"
    title = "the workspace changed since the attempt started"
    remedy = "Retry the task so it starts from the current files, or revert the other change."
    exit_code = ExitCode.RUN_FAILED


class Drift(VigilError):
    """A rollback would clobber changes made after vigil committed."""

    code = "VIGIL-DRIFT"
    title = "files changed since vigil committed them"
    remedy = "Inspect the listed paths; roll back with --force to overwrite them anyway."
    exit_code = ExitCode.REFUSED


class ProtectedPathChanged(VigilError):
    """A step tried to change vigil's policy file or state."""

    code = "VIGIL-PROTECTED-PATH"
    title = "a step changed a file only a person may change"
    remedy = "Edit vigil.toml yourself, outside the run; steps may not change policy."
    exit_code = ExitCode.REFUSED


class SandboxUnavailable(VigilError):
    """Overlay isolation was required but cannot work on this machine or path."""

    code = "VIGIL-SANDBOX"
    title = "the attempt sandbox cannot be set up"
    remedy = "Run `vigil doctor`; set VIGIL_ISOLATION=snapshot to use the weaker fallback."
    exit_code = ExitCode.USAGE


class PathRefused(VigilError):
    """A plan (or a secret source) named a file vigil does not read on its behalf."""

    code = "VIGIL-PATH-REFUSED"
    title = "a file vigil never reads on a plan's behalf was named"
    remedy = (
        "Name a regular file of the project itself: not vigil's state, the user "
        "configuration directory, vigil.toml, a link, or a path outside the workspace."
    )
    exit_code = ExitCode.REFUSED
