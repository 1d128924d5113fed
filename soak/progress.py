"""The soak's progress on stderr: one self-rewriting line on a terminal, plain lines otherwise."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Progress", "Status"]


@dataclass
class Status:
    """What the progress line shows; the run updates it as it goes."""

    phase: str = "setup"
    t: float = 0.0
    window: str = ""
    emitted: int = 0
    synced: int = 0
    queue: int = 0
    errors: int = 0
    rate: float = 0.0


class Progress:
    """Progress on stderr: one self-rewriting line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet = quiet
        self.total = 0.0
        self._bar_shown = False
        self._last_plain = -math.inf
        self._last_window = ""

    def note(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        self.stream.write(f"soak: {text}\n")
        self.stream.flush()

    def update(self, status: Status) -> None:
        if self.quiet:
            return
        clock = f"{_mmss(status.t)}/{_mmss(self.total)}"
        figures = (
            f"emitted {status.emitted} ({status.rate:.0f}/s)  synced {status.synced}  "
            f"queue {status.queue}  errors {status.errors}"
        )
        if self.tty:
            done = min(1.0, status.t / self.total) if self.total else 0.0
            bar = "#" * int(done * 20) + "." * (20 - int(done * 20))
            self.stream.write(f"\r\x1b[K{status.phase:<8} {status.window:<8} {clock} [{bar}] {figures}")
            self.stream.flush()
            self._bar_shown = True
            return
        every = max(10.0, self.total / 20)
        if status.window != self._last_window or status.t - self._last_plain >= every:
            self._last_window = status.window
            self._last_plain = status.t
            self.note(f"{status.phase} {status.window} {clock}  {figures}")

    def close(self) -> None:
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False


def _mmss(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
