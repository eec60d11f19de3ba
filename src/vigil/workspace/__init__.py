"""Isolated attempts: sandboxes, changesets, commit, discard, recovery and rollback.

Every attempt runs over a private copy-on-write view of the workspace; what it changed
becomes a :class:`Changeset` that is committed to the real workspace only on success,
crash-safely, and can be rolled back later.
"""

from vigil.workspace.changeset import ChangeEntry, Changeset, compose
from vigil.workspace.errors import Conflict, Drift, ProtectedPathChanged, SandboxUnavailable
from vigil.workspace.ignore import IgnoreRules
from vigil.workspace.isolation import IsolationCheck, IsolationReport, detect_isolation
from vigil.workspace.objects import ObjectStore
from vigil.workspace.render import combined_diff, stat_summary, unified_diff
from vigil.workspace.rollback import RollbackResult
from vigil.workspace.sandbox import OverlaySandbox
from vigil.workspace.settings import SandboxSettings
from vigil.workspace.snapshot import SnapshotSandbox
from vigil.workspace.spawn import ENV_ALLOWLIST, SpawnSpec
from vigil.workspace.state import FileState, tree_hash
from vigil.workspace.workspace import AttemptSandbox, Workspace

__all__ = [
    "ENV_ALLOWLIST",
    "AttemptSandbox",
    "ChangeEntry",
    "Changeset",
    "Conflict",
    "Drift",
    "FileState",
    "IgnoreRules",
    "IsolationCheck",
    "IsolationReport",
    "ObjectStore",
    "OverlaySandbox",
    "ProtectedPathChanged",
    "RollbackResult",
    "SandboxSettings",
    "SandboxUnavailable",
    "SnapshotSandbox",
    "SpawnSpec",
    "Workspace",
    "combined_diff",
    "compose",
    "detect_isolation",
    "stat_summary",
    "tree_hash",
    "unified_diff",
]
