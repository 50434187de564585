"""Progress lines for the splice workload: what is being measured, where, and for how long.

Between a subject's load and the first claim test a run measures every SAE (40-200 s on a CPU); a line per hook
says it is working. On a terminal one line is rewritten in place; elsewhere (CI logs, pipes) a line is written per
hook, at most one every few seconds, so a log stays short.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

LOG_EVERY_S = 5.0  # off a terminal: at most one line per this many seconds (the first and last always)


@dataclass
class ProgressLine:
    """`step(text)` shows one progress line; `done(text)` ends it. The stream is looked up at each write (pytest
    swaps sys.stderr while it captures; the caller suspends capture around a measurement)."""

    tty: bool
    prefix: str = "saeclaims: "
    stream: TextIO | None = None
    t0: float = field(default_factory=time.monotonic)
    _last: float = -1e9
    _open: bool = False

    def _out(self) -> TextIO:
        return self.stream or sys.stderr

    def step(self, text: str) -> None:
        now = time.monotonic()
        line = f"{self.prefix}{text} [{now - self.t0:.0f} s]"
        if self.tty:
            self._out().write(f"\r\x1b[K{line}")
            self._open = True
        elif now - self._last >= LOG_EVERY_S:
            self._out().write(line + "\n")
            self._last = now
        self._out().flush()

    def done(self, text: str) -> None:
        if self._open:
            self._out().write("\r\x1b[K")
            self._open = False
        self._out().write(f"{self.prefix}{text} [{time.monotonic() - self.t0:.0f} s]\n")
        self._out().flush()
        self._last = time.monotonic()
