"""A small attempt context that runs actions for real in a vigil sandbox, as the engine will."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.actions.base import PriorRound
from vigil.actions.prompt import read_workspace_file
from vigil.executors.process import ProcessOutcome
from vigil.plan import Plan, Task, load_plan_text
from vigil.workspace import AttemptSandbox, Changeset, Workspace, spawn, tree_hash

AGENT = Path(__file__).parent / "agents" / "scripted_agent.py"
AGENT_COMMAND = f"{sys.executable} {AGENT}"


def plan_with(task_yaml: str, *, env: str = "{}") -> Plan:
    """A one-task plan; ``task_yaml`` is the task's mapping, indented for the tasks list."""
    text = (
        f"name: Agents\nproject: demo\nenv: {env}\nphases:\n  - id: work\n    tasks:\n{task_yaml}"
    )
    return load_plan_text(text, "plan.yaml").plan


@dataclass
class Ran:
    """One command run in the sandbox and what it printed."""

    argv: list[str]
    outcome: ProcessOutcome
    output: str


@dataclass
class SandboxContext:
    """An AttemptContext over a real sandbox; commands run with subprocess inside it."""

    run_id: str
    plan: Plan
    task: Task
    attempt: int
    sandbox: AttemptSandbox
    workspace: Workspace
    secrets: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    prior: PriorRound | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    ran: list[Ran] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ProcessOutcome:
        full = {**self.plan.env, **self.task.env, **self.secrets, **(env or {})}
        full.update(VIGIL_RUN_ID=self.run_id, VIGIL_TASK_ID=self.task.id)
        full["VIGIL_ATTEMPT"] = str(self.attempt)
        spec = self.sandbox.command(list(argv), env=full)
        started = time.monotonic()
        try:
            done = spawn.run(
                spec,
                input=stdin or b"",
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout or 60,
            )
        except subprocess.TimeoutExpired as exc:
            out = ProcessOutcome(None, True, False, time.monotonic() - started)
            self.ran.append(Ran(list(argv), out, (exc.output or b"").decode(errors="replace")))
            return out
        out = ProcessOutcome(done.returncode, False, False, time.monotonic() - started)
        self.ran.append(Ran(list(argv), out, done.stdout.decode(errors="replace")))
        return out

    def log(self, text: str) -> None:
        self.notes.append(text)

    def fingerprint(self) -> str:
        return tree_hash(self.workspace.root, exclude=self.workspace.exclude)

    def read_text(self, path: str) -> str:
        return read_workspace_file(self.workspace.root, path, hidden=self.workspace.hidden)

    def shell(self, command: str) -> Ran:
        """Run a validate/acceptance command the way the engine does."""
        self.run(["bash", "-e", "-o", "pipefail", "-c", command])
        return self.ran[-1]

    def capture(self) -> Changeset:
        return self.sandbox.capture()


@contextlib.contextmanager
def attempt(
    ws: Workspace, plan: Plan, task: Task, *, number: int = 1, **kw: object
) -> Iterator[SandboxContext]:
    """A context for one attempt; the sandbox is discarded afterwards."""
    sandbox = ws.prepare(f"run-1/{task.id}/{number}")
    with sandbox.lock():
        try:
            yield SandboxContext("run-1", plan, task, number, sandbox, ws, **kw)  # type: ignore[arg-type]
        finally:
            sandbox.discard()


def new_workspace(tmp_path: Path) -> Workspace:
    """A small project with a test the agent has to make pass."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "value.py").write_text("VALUE = 0\n")
    (root / "vigil.toml").write_text("[policy]\n")
    (root / "README.md").write_text("demo\n")
    return Workspace(root, root / ".vigil")
