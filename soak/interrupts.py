"""SIGTERM stops a soak the way Ctrl-C does: the run unwinds and the daemons it started are stopped.

Python's default SIGTERM action ends the process on the spot: no ``finally`` runs, and the two
throw-away daemons (children of the soak) were re-parented to PID 1 and left running with their
homes. :class:`StopSignals` turns SIGTERM into :class:`SoakInterrupted` — a ``KeyboardInterrupt``
carrying the signal — raised where raising is safe:

- in plain code (starting the daemons), from the signal handler, like Ctrl-C;
- inside ``trio.run``, from a task listening with :func:`trio.open_signal_receiver`, so trio's
  own machinery is never interrupted half-way (trio protects itself from SIGINT the same way);
- while the daemons are being stopped, a second SIGINT or SIGTERM does not abort the cleanup: it
  hurries it (``kill -9`` at once instead of waiting for a graceful stop).

Signal handlers can only be installed from the main thread; elsewhere this does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import trio

__all__ = ["SoakInterrupted", "StopSignals"]


class SoakInterrupted(KeyboardInterrupt):
    """The soak was stopped by a signal (SIGINT or SIGTERM); the daemons it started are stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """What a shell reports for a process ended by this signal: 128 + its number."""
        return 128 + self.signum


_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StopSignals:
    """Route SIGTERM (and, during cleanup, SIGINT) for the length of one soak; see the module docstring."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self._active = threading.current_thread() is threading.main_thread()
        self._saved: dict[int, _Handler] = {}

    def __enter__(self) -> StopSignals:
        if self._active:
            self._saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
            signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._active:
            for signum, handler in self._saved.items():
                signal.signal(signum, handler)

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum
        raise SoakInterrupted(signum)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum

    def interrupted(self, error: KeyboardInterrupt) -> SoakInterrupted:
        """``error`` as a :class:`SoakInterrupted` naming the signal (a bare KeyboardInterrupt is SIGINT)."""
        if isinstance(error, SoakInterrupted):
            return error
        self.signum = self.signum or signal.SIGINT
        return SoakInterrupted(signal.SIGINT)

    def run(self, main: Callable[[], Any]) -> Any:
        """``trio.run(main)``, with SIGTERM raised inside trio as :class:`SoakInterrupted`.

        A SIGTERM that arrives while trio starts up is only noted (a handler raising into trio's
        own start-up code could leave it in a broken state), then raised as soon as the listener runs.
        """
        if not self._active:
            return trio.run(main)
        signal.signal(signal.SIGTERM, self._note)
        try:
            return trio.run(self._main, main)
        finally:
            signal.signal(signal.SIGTERM, self._raise)

    async def _main(self, main: Callable[[], Any]) -> Any:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._listen)
            result = await main()
            nursery.cancel_scope.cancel()
        return result

    async def _listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as received:
            task_status.started()
            if self.signum is not None:  # noted while trio started
                raise SoakInterrupted(self.signum)
            async for signum in received:
                self.signum = self.signum or signum
                raise SoakInterrupted(signum)

    @contextmanager
    def hurrying(self, hurry: Callable[[], None]) -> Iterator[None]:
        """While cleaning up, SIGINT and SIGTERM call ``hurry`` (e.g. ``kill -9`` the daemons) instead of raising.

        ``hurry`` runs inside a signal handler: it must only send signals, never wait or take locks.
        """
        if not self._active:
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.signum = self.signum or signum
            hurry()

        before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum in before:
            signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, previous in before.items():
                signal.signal(signum, previous)
