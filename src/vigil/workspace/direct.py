"""No isolation: steps run straight in the workspace (``VIGIL_ISOLATION=off``).

For trusted, fast commands where atomicity is not needed (a CI-style batch). Nothing is
captured, so nothing can be reviewed, committed or rolled back; vigil warns when this
mode is in effect.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from vigil.errors import LimitExceeded
from vigil.workspace.changeset import Changeset
from vigil.workspace.outputs import FILE_NAME, OutputFile
from vigil.workspace.removal import remove_tree
from vigil.workspace.spawn import SpawnSpec, resolve_cwd


class DirectSandbox:
    """The workspace itself, with the caller's full environment."""

    mode = "off"

    def __init__(self, root: Path, outputs_dir: Path | None = None) -> None:
        self.root = root
        self.outputs: OutputFile | None = None
        if outputs_dir is not None:
            self.outputs = OutputFile(outputs_dir, str(outputs_dir / FILE_NAME))
            self.outputs.create()

    def command(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None
    ) -> SpawnSpec:
        """Run ``argv`` in the real workspace."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        full.update(env)
        return SpawnSpec(list(argv), full, str(resolve_cwd(self.root, cwd)))

    def limit_hit(self) -> LimitExceeded | None:
        """Without isolation there are no process or memory limits to hit."""
        return None

    def capture(self) -> Changeset:
        """Nothing is tracked without isolation."""
        return Changeset(())

    def discard(self) -> None:
        """Remove the outputs file's directory; nothing else to discard."""
        if self.outputs is not None:
            remove_tree(self.outputs.directory.parent)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """No lock: steps write the workspace directly."""
        yield
