"""One attempt of one task, end to end: sandbox, action, checks, changes, verdict.

This is the activity side of the engine: it performs effects and reports a typed
:class:`AttemptResult`; it never decides what happens next. Committing the changes is
not done here either: the driver journals the result first, then commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vigil.actions.base import Action, ActionResult, PriorRound
from vigil.actions.run import shell_argv
from vigil.config import Config
from vigil.engine import events as ev
from vigil.engine.outputs import OutputsMalformed, parse_outputs
from vigil.envnames import passed_env
from vigil.errors import CaptureFailed, InternalError, LimitExceeded, SecretInPath, VigilError
from vigil.executors.process import LogSink, ProcessOutcome, run_process
from vigil.layout import process_tag
from vigil.plan.models import Check, Plan, Task
from vigil.workspace import AttemptSandbox, Changeset, Workspace
from vigil.workspace.beneath import shown as cut
from vigil.workspace.limits import Limits
from vigil.workspace.settings import WorkspaceSection
from vigil.workspace.watchdog import DiskWatch


@dataclass(frozen=True)
class AttemptSpec:
    """Everything needed to run one attempt, resolved from the plan."""

    run_id: str
    plan: Plan
    task: Task
    attempt: int
    command: str
    action: Action
    env: Mapping[str, str]
    workdir: str | None
    timeout: float | None
    checks: Sequence[Check]
    log_path: Path
    network: bool = False
    base_layers: tuple[Changeset, ...] = ()
    capture: bool = True
    secrets: Mapping[str, str] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    expressions: Mapping[str, Any] = field(default_factory=dict)
    """What ``${{ ... }}`` in the task's prompts reads (inputs, needs, env, vigil)."""
    prior: PriorRound | None = None
    redactor: Callable[[], Any] | None = None
    workspace: Path = Path(".")
    allowed_paths: Sequence[str] = ()
    # What names the sandbox and tags the processes besides the task (default: the
    # attempt's number); a compensation runs as ``rollback``.
    label: str | None = None
    hidden: tuple[Path, ...] = ()
    """Hidden paths besides the workspace's ``.vigil`` and the user configuration
    directory (always hidden): files named by the task are never read from them."""

    @property
    def task_id(self) -> str:
        """The task this attempt belongs to."""
        return self.task.id

    @property
    def tag(self) -> str:
        """The process tag of this attempt's commands, also its sandbox's key."""
        slot = self.label if self.label is not None else self.attempt
        return process_tag(self.workspace, self.run_id, self.task.id, slot)


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended, ready to be journalled."""

    task_id: str
    attempt: int
    outcome: str
    exit_code: int | None
    reason: str
    duration: float
    extra: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    category: str | None = None

    @classmethod
    def from_error(
        cls, task_id: str, attempt: int, exc: BaseException, *, duration: float = 0.0
    ) -> AttemptResult:
        """A failed attempt whose cause is ``exc``: a VigilError keeps its code and
        category; anything else is an internal error of vigil."""
        if isinstance(exc, VigilError):
            code, category, cause = exc.code, exc.category, exc.cause
        else:
            code, category = InternalError.code, InternalError.category
            cause = f"{type(exc).__name__}: {exc}"
        return cls(
            task_id, attempt, ev.FAILED, None, f"{code}: {cause}", duration, {}, code, category
        )

    def event(self) -> tuple[ev.Kind, ev.AttemptFinished]:
        """The ``attempt.finished`` journal entry for this result."""
        return ev.attempt_finished(
            self.task_id,
            self.attempt,
            self.outcome,
            exit_code=self.exit_code,
            reason=self.reason,
            duration=self.duration,
            extra=self.extra,
            code=self.code,
            category=self.category,
        )


def _stopped_outcome(stop_reason: str) -> str:
    return ev.CANCELLED if stop_reason == "cancel" else ev.INTERRUPTED


class StopSignal:
    """Asks running attempts to stop, and says why (``interrupt`` or ``cancel``)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._linked: set[threading.Event] = set()
        self._lock = threading.Lock()

    def set(self, reason: str) -> None:
        """Stop everything that is running, for ``reason``."""
        if not self.event.is_set():
            self.reason = reason
        self.event.set()
        with self._lock:
            linked = list(self._linked)
        for event in linked:
            event.set()

    @contextlib.contextmanager
    def linked(self) -> Iterator[threading.Event]:
        """An event for one attempt: set by this signal, and also by the attempt's own
        watchdog (which stops that attempt only)."""
        own = threading.Event()
        with self._lock:
            self._linked.add(own)
        if self.event.is_set():
            own.set()
        try:
            yield own
        finally:
            with self._lock:
                self._linked.discard(own)


class Attempt:
    """The attempt as an action sees it (:class:`vigil.actions.base.AttemptContext`)."""

    def __init__(
        self,
        spec: AttemptSpec,
        stop: StopSignal,
        sandbox: AttemptSandbox,
        sink: LogSink,
        *,
        halt: threading.Event | None = None,
        watch: DiskWatch | None = None,
    ) -> None:
        self.spec = spec
        self.run_id = spec.run_id
        self.plan = spec.plan
        self.task = spec.task
        self.attempt = spec.attempt
        # Set when the run is stopped, or (``halt``) when this attempt's watchdog stops it.
        self.stop = halt if halt is not None else stop.event
        self._watch = watch
        # The first limit a command went over (the watchdog's disk limits, the cgroup's
        # processes or memory): it fails the attempt.
        self.limit: LimitExceeded | None = None
        self.secrets = spec.secrets
        self.inputs = spec.inputs
        self.expressions = spec.expressions
        self.prior = spec.prior
        self.path = spec.env.get("PATH") or os.environ.get("PATH")
        self._sandbox = sandbox
        self._sink = sink
        self._tag = spec.tag
        self._fingerprint: str | None = None
        self.elapsed = 0.0

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ProcessOutcome:
        """Run ``argv`` inside the attempt's sandbox, output to the attempt's log."""
        merged = dict(self.spec.env)
        merged.update(env or {})
        outputs = getattr(self._sandbox, "outputs", None)
        if outputs is not None:
            merged["VIGIL_OUTPUT"] = outputs.inside
        spawn = self._sandbox.command(list(argv), env=merged, cwd=self.spec.workdir)
        out = run_process(
            spawn.argv,
            env=spawn.env,
            cwd=spawn.cwd,
            sink=self._sink,
            timeout=timeout if timeout is not None else self.spec.timeout,
            stop=self.stop,
            tag=self._tag,
            stdin=stdin,
            supervisor=spawn.supervisor,
            pass_fds=spawn.pass_fds,
            started=spawn.started,
        )
        self.elapsed += out.duration
        watched = self._watch.exceeded if self._watch is not None else None
        hit = watched or self._sandbox.limit_hit()
        if hit is not None and self.limit is None:
            self.limit = hit
            self._sink.note(f"{hit}")
            self._sink.note(f"remedy: {hit.remedy}")
        return out

    def log(self, text: str) -> None:
        """Add a line from vigil to the attempt's log."""
        self._sink.note(text)

    def read_text(self, path: str) -> str:
        """A workspace file (for prompts and their context); never outside the workspace."""
        from vigil.actions.prompt import read_workspace_file

        return read_workspace_file(self.spec.workspace, path, hidden=self.spec.hidden)

    def fingerprint(self) -> str:
        """Content fingerprint of the workspace view this attempt starts on: the committed
        tree plus any layers stacked on it (computed on demand; it reads every file)."""
        from vigil.workspace import tree_hash

        if self._fingerprint is None:
            digest = hashlib.sha256(tree_hash(self.spec.workspace).encode())
            for layer in self.spec.base_layers:
                digest.update(layer.id.encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def attempt_workspace(config: Config) -> Workspace:
    """The workspace as attempts see it: isolation mode, limits and sandbox settings from
    ``[workspace]`` in ``vigil.toml``."""
    from vigil.store.connect import parse_target

    section = config.section("workspace", WorkspaceSection)
    database = parse_target(config.database_url).sqlite_path
    return Workspace(
        config.workspace,
        config.state_dir,
        mode=section.isolation,
        limits=Limits.from_config(section),
        settings=section,
        guard=[] if database is None else [database],
    )


def execute_attempt(spec: AttemptSpec, stop: StopSignal, workspace: Workspace) -> AttemptResult:
    """Run the attempt's action and, if it succeeds, its checks; capture its changes."""
    # Host variables vigil.toml's pass_env lets through (narrowed by the task's own; a
    # phase's checks get all of them) under everything the plan and vigil set.
    narrow = None if spec.command == "validate" else spec.task.pass_env
    passed = passed_env(workspace.settings.pass_env, narrow)
    if passed:
        spec = replace(spec, env={**passed, **spec.env})
    sink = _sink(spec)
    key = spec.tag
    generation = workspace.generation()  # before the view exists: see Workspace.commit
    try:
        sandbox = workspace.prepare(key, base_layers=spec.base_layers, network=spec.network)
    except Exception as exc:
        sink.note(f"the sandbox could not be prepared: {exc}")
        sink.close()
        return AttemptResult.from_error(spec.task.id, spec.attempt, exc)
    try:
        with sandbox.lock():
            try:
                with stop.linked() as halt, workspace.watch(sandbox, halt) as watch:
                    ctx = Attempt(spec, stop, sandbox, sink, halt=halt, watch=watch)
                    result = _execute_in(spec, stop, ctx, sandbox, sink, watch)
                if "changeset" in result.extra:
                    result.extra["base_generation"] = generation
                return result
            finally:
                # Inside the lock: in snapshot mode this puts the workspace back before
                # the next attempt takes its own snapshot.
                sandbox.discard()
    finally:
        sink.close()


def _sink(spec: AttemptSpec) -> LogSink:
    """The attempt's log; with secrets in play, masked before anything reaches the disk."""
    if spec.redactor is None:
        return LogSink(spec.log_path)
    stream = spec.redactor()
    return LogSink(
        spec.log_path,
        transform=lambda chunk: stream.feed(chunk).encode(),
        flush_transform=lambda: stream.close().encode(),
    )


def _execute_in(
    spec: AttemptSpec,
    stop: StopSignal,
    ctx: Attempt,
    sandbox: AttemptSandbox,
    sink: LogSink,
    watch: DiskWatch,
) -> AttemptResult:
    tid, n = spec.task.id, spec.attempt
    start = sink.position()
    result = spec.action.execute(ctx)
    extra: dict[str, Any] = {}
    if result.usage:
        extra["usage"] = dict(result.usage)
    if result.output is not None:
        extra["output"] = result.output
    verdict = _verdict(result, stop, "")
    if ctx.limit is not None and not stop.event.is_set():
        return _over_limit(tid, n, ctx.limit, ctx.elapsed, extra)
    if verdict is not None:
        outcome, reason = verdict
        if outcome in (ev.FAILED, ev.TIMED_OUT):
            tail = sink.read_since(max(start, sink.position() - _TAIL), limit=_TAIL)
            _note_excerpt(extra, tail)
            if outcome == ev.FAILED:
                _note_offline(spec, sink, extra, tail)
        return AttemptResult(
            tid,
            n,
            outcome,
            result.exit_code,
            reason,
            ctx.elapsed,
            extra,
            result.code,
            result.category,
        )
    for index, check in enumerate(spec.checks, 1):
        label = check.name or _short(check.run)
        sink.note(f"validate {index}/{len(spec.checks)}: {label}")
        start = sink.position()
        out = ctx.run(shell_argv(check.run, ctx.path), timeout=check.timeout or spec.timeout)
        verdict = _verdict(_as_result(out), stop, f"validation {label!r} ")
        if ctx.limit is not None and not stop.event.is_set():
            extra.update(validation_failed=index, failed_command=check.run)
            return _over_limit(tid, n, ctx.limit, ctx.elapsed, extra)
        if verdict is not None:
            outcome, reason = verdict
            extra["validation_failed"] = index
            extra["failed_command"] = check.run
            sink.idle()  # what redaction still holds back belongs to this output
            extra["failed_output"] = sink.read_since(start, limit=8000)
            _note_excerpt(extra, extra["failed_output"])
            if outcome == ev.FAILED:
                _note_offline(spec, sink, extra, extra["failed_output"])
            return AttemptResult(tid, n, outcome, out.exit_code, reason, ctx.elapsed, extra)
    watch.close()  # nothing runs any more; capture checks the limits exactly
    failed_outputs = _read_outputs(tid, n, sandbox, sink, ctx.elapsed, extra)
    if failed_outputs is not None:
        return failed_outputs
    if spec.capture:
        try:
            changeset = sandbox.capture()
            _refuse_secret_names(changeset, spec.secrets)
        except Exception as exc:  # e.g. VIGIL-PROTECTED-PATH: the step touched vigil.toml
            # An OSError names its path, which a step can make many kilobytes long.
            error = exc if isinstance(exc, VigilError) else CaptureFailed(cut(str(exc), 160))
            failed = AttemptResult.from_error(tid, n, error, duration=ctx.elapsed)
            sink.note(failed.reason)
            return AttemptResult(
                tid,
                n,
                ev.FAILED,
                None,
                failed.reason,
                ctx.elapsed,
                extra,
                error.code,
                error.category,
            )
        if spec.allowed_paths:
            from vigil.actions.agent import outside_allowed

            outside = outside_allowed(changeset.paths, spec.allowed_paths)
            if outside:
                shown = ", ".join(outside[:10]) + (" ..." if len(outside) > 10 else "")
                reason = f"spec gate: changed paths outside allowed_paths: {shown}"
                sink.note(reason)
                extra.update(
                    validation_failed="spec", failed_command="allowed_paths", failed_output=reason
                )
                return AttemptResult(tid, n, ev.FAILED, None, reason, ctx.elapsed, extra)
        if not changeset.is_empty:
            extra["changeset"] = changeset.to_dict()
    return AttemptResult(tid, n, ev.SUCCEEDED, 0, "", ctx.elapsed, extra)


_TAIL = 65536
"""How much of a failed command's output is searched for signs of a missing network."""


def _note_excerpt(extra: dict[str, Any], output: str) -> None:
    """Record (``log_excerpt``) the lines of a failed command's output that say what went
    wrong (see :mod:`vigil.engine.excerpt`); the output was redacted as it was logged."""
    from vigil.engine.excerpt import key_lines

    lines = key_lines(output)
    if lines:
        extra["log_excerpt"] = lines


def _note_offline(spec: AttemptSpec, sink: LogSink, extra: dict[str, Any], output: str) -> None:
    """Record (``no_network``) and log the line that shows a task without the network
    failed for want of it (see :mod:`vigil.engine.offline`)."""
    from vigil.engine.offline import advice, symptom

    if spec.network or spec.command == "validate":
        return  # a phase's checks are no task's to give the network
    seen = symptom(output)
    if seen is not None:
        extra["no_network"] = seen
        sink.note(advice(spec.task.id, seen).replace("`", ""))


def _read_outputs(
    tid: str, n: int, sandbox: AttemptSandbox, sink: LogSink, elapsed: float, extra: dict[str, Any]
) -> AttemptResult | None:
    """Put what the step wrote to ``$VIGIL_OUTPUT`` into ``extra["outputs"]``; a failed
    attempt if it is too large or not ``name=value`` lines."""
    channel = getattr(sandbox, "outputs", None)
    if channel is None:
        return None
    try:
        outputs = parse_outputs(channel.read())
    except (VigilError, ValueError) as exc:
        error = exc if isinstance(exc, VigilError) else OutputsMalformed(str(exc))
        failed = AttemptResult.from_error(tid, n, error, duration=elapsed)
        sink.note(failed.reason)
        return AttemptResult(
            tid, n, ev.FAILED, None, failed.reason, elapsed, extra, error.code, error.category
        )
    if outputs:
        extra["outputs"] = outputs
    return None


def _over_limit(
    tid: str, n: int, error: LimitExceeded, elapsed: float, extra: dict[str, Any]
) -> AttemptResult:
    """A failed attempt because a command went over a limit (the watchdog's disk limits,
    the cgroup's processes or memory): VIGIL-LIMIT, whatever the command's exit status
    (it may have swallowed a refused fork). Only a cancel or an interrupt of the run says
    more about why the attempt ended."""
    failed = AttemptResult.from_error(tid, n, error, duration=elapsed)
    return AttemptResult(
        tid, n, ev.FAILED, None, failed.reason, elapsed, extra, error.code, error.category
    )


def _as_result(out: ProcessOutcome) -> ActionResult:
    return ActionResult(
        out.ok,
        out.exit_code,
        f"exited with code {out.exit_code}",
        None,
        {},
        out.timed_out,
        out.stopped,
    )


def _verdict(result: ActionResult, stop: StopSignal, what: str) -> tuple[str, str] | None:
    if result.stopped or (stop.event.is_set() and not result.ok):
        return _stopped_outcome(stop.reason), f"{what}stopped: {stop.reason or 'stopped'}".strip()
    if result.timed_out:
        return ev.TIMED_OUT, (what + "timed out").strip() if what else result.reason
    if not result.ok:
        return ev.FAILED, (what + result.reason).strip() if what else result.reason
    return None


def _short(command: str, limit: int = 60) -> str:
    line = command.strip().splitlines()[0] if command.strip() else command
    return line if len(line) <= limit else line[: limit - 1] + "…"


def step_environment(
    base: Mapping[str, str], *layers: Mapping[str, str], run_id: str, task_id: str, attempt: int
) -> dict[str, str]:
    """The environment of a step: ``base``, then each layer, then vigil's own variables."""
    env = dict(base)
    for layer in layers:
        env.update(layer)
    env["VIGIL_RUN_ID"] = run_id
    env["VIGIL_TASK_ID"] = task_id
    env["VIGIL_ATTEMPT"] = str(attempt)
    return env


def host_environment() -> dict[str, str]:
    """The environment vigil itself was started with, minus its own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}


def _refuse_secret_names(changeset: Changeset, secrets: Mapping[str, str]) -> None:
    """Refuse a changeset with a secret the task holds (in any form the log masker knows)
    in a path or a link target: names are shown in diffs and reviews and kept in the
    journal, which hold no secret. Content is the workspace's, as any file's."""
    if not secrets:
        return
    from vigil.safety.redact import Redactor

    masker = Redactor(secrets.values(), tokens=False)
    for entry in changeset.entries:
        names = [entry.path]
        names += [s.target for s in (entry.before, entry.after) if s is not None and s.target]
        for name in names:
            if masker.ranges(name) or masker.ranges(name.replace("/", "")):
                raise SecretInPath(f"the step changed {masker.redact(entry.path)!r}")
