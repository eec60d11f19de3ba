"""How a run was started: the options recorded with it and read back on every resume."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunOptions:
    """The options of one run, fixed when it starts (``vigil run`` flags)."""

    max_parallel: int | None = None
    """Attempts at once; None: as many as there are CPUs."""
    dry_run: bool = False
    """Every command runs in a throwaway sandbox with the network off; nothing is committed."""
    review: bool = False
    """Every task's changes wait for a person's approval."""
    review_tasks: tuple[str, ...] = ()
    """These tasks' changes wait for a person's approval (``--review TASK,...``)."""
    grant: str | None = None
    """The grant the run's privileged tasks are authorized by."""
    prefetch_prompts: int = 0
    """How many llm tasks queued behind the parallelism limit ask the model ahead."""
    allow_stale_prompts: bool = False
    """Use a reply prepared on older files anyway."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """The plan's inputs, typed (``vigil run --input``); part of what the run's seal signs."""
    left_out: Mapping[str, str] = field(default_factory=dict)
    """Tasks a partial run leaves out (``--only``, ``--skip``, ``--tags``...), with why."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunOptions:
        """The options as a run's record holds them.

        A key this vigil does not know (written by a newer one) is ignored; a key an
        older vigil did not write takes its default. Values are read as leniently as
        they always were: a falsy value is the default.
        """
        parallel = data.get("max_parallel")
        grant = data.get("grant")
        inputs = data.get("inputs")
        left = data.get("left_out")
        return cls(
            max_parallel=int(parallel) if parallel else None,
            dry_run=bool(data.get("dry_run")),
            review=bool(data.get("review")),
            review_tasks=tuple(str(t) for t in data.get("review_tasks") or ()),
            grant=str(grant) if grant else None,
            prefetch_prompts=int(data.get("prefetch_prompts") or 0),
            allow_stale_prompts=bool(data.get("allow_stale_prompts")),
            inputs=dict(inputs) if isinstance(inputs, Mapping) else {},
            left_out=(
                {str(k): str(v) for k, v in left.items()} if isinstance(left, Mapping) else {}
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """The options as they are recorded with the run (JSON-ready). ``review_tasks``,
        ``inputs`` and ``left_out`` are left out while empty: a run's seal signs these
        options, and those of runs started before they existed must read back the same."""
        data = asdict(self)
        data["review_tasks"] = list(self.review_tasks)
        if not self.review_tasks:
            del data["review_tasks"]
        for key in ("inputs", "left_out"):
            data[key] = dict(data[key])
            if not data[key]:
                del data[key]
        return data
