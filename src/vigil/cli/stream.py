"""Step output as it is written: whole lines, each with its task in front, as docker
compose and CI logs show it.

What is read is the attempts' log files, which hold the output already redacted (secrets
are masked before anything reaches the disk), so streaming shows nothing a log would not.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

from vigil.cli.terminal import printable

POLL_SECONDS = 0.1
"""How often a followed log is read for new output."""

TAIL_BYTES = 64 * 1024
"""How much of the end of a log :func:`read_tail` reads."""


def read_tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a (possibly growing, possibly missing) file."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    if size > TAIL_BYTES:
        text = text.split("\n", 1)[-1]  # the first line was cut mid-way
    return text.splitlines()[-lines:]


class LogTail:
    """One log file read as it grows, a whole line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def lines(self) -> list[str]:
        """The complete lines written since the last call."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in complete]

    def rest(self) -> list[str]:
        """Everything not yet returned, a last line without its newline included."""
        found = self.lines()
        if self._partial:
            found.append(self._partial.decode("utf-8", errors="replace"))
            self._partial = b""
        return found


def prefixed(task: str, width: int, line: str) -> str:
    """``line`` of ``task``'s output as printed: ``task | line``, control characters shown
    as escapes even into a pipe (CI log viewers obey escape sequences; `vigil logs` is
    the way to the bytes)."""
    label = printable(task, multiline=False)
    return f"{label.ljust(width)} | {printable(line, multiline=False)}\n"


class OutputStream:
    """Follows the logs of running attempts on a thread of its own and prints their new
    lines; :meth:`close` stops it, waits for it and prints what is left."""

    def __init__(self, out: TextIO | None = None, *, width: int = 0) -> None:
        self.out = out or sys.stdout
        self.width = width
        self._tails: dict[tuple[str, int], LogTail] = {}
        # One reader at a time: the thread polling and the caller ending an attempt.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self, task: str, attempt: int, path: Path) -> None:
        """Start showing the output of ``task``'s attempt ``attempt``, logged at ``path``."""
        with self._lock:
            self._tails.setdefault((task, attempt), LogTail(path))
            self.width = max(self.width, min(len(task), 24))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vigil-output", daemon=True)
                self._thread.start()

    def ended(self, task: str, attempt: int) -> None:
        """The attempt ended: print the rest of its output now and stop following it."""
        with self._lock:
            tail = self._tails.pop((task, attempt), None)
            if tail is not None:
                self._write([prefixed(task, self.width, line) for line in tail.rest()])

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            with self._lock:
                shown = [
                    prefixed(task, self.width, line)
                    for (task, _), tail in self._tails.items()
                    for line in tail.lines()
                ]
                self._write(shown)

    def _write(self, shown: list[str]) -> None:
        if not shown:
            return
        try:
            self.out.write("".join(shown))
            self.out.flush()
        except (OSError, ValueError):  # the reader went away: nothing more to show
            self._stop.set()

    def close(self) -> None:
        """Stop following; what was written until now is printed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for task, attempt in list(self._tails):
            self.ended(task, attempt)
