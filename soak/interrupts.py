"""SIGTERM and SIGHUP stop a soak the way Ctrl-C does: the run unwinds and the daemons it started are stopped.

Python's default SIGTERM (and SIGHUP: the terminal closed, the ssh session dropped) action ends the
process on the spot: no ``finally`` runs, and the two throw-away daemons (children of the soak) were
re-parented to PID 1 and left running with their homes. :class:`StopSignals` turns them into
:class:`SoakInterrupted` — a ``KeyboardInterrupt`` carrying the signal, and the figures of the run so
far when it had started — raised where raising is safe:

- in plain code (starting the daemons), from the signal handler, like Ctrl-C;
- inside ``trio.run``, from a task listening with :func:`trio.open_signal_receiver`, so trio's
  own machinery is never interrupted half-way (trio protects itself from SIGINT the same way);
- while the daemons are being stopped, a second SIGINT or SIGTERM does not abort the cleanup: it
  hurries it (``kill -9`` at once instead of waiting for a graceful stop).

A signal the soak was started with ignored stays ignored: ``nohup spl federation soak …`` keeps
running when the terminal goes away, as ``nohup`` promises.

Signal handlers can only be installed from the main thread; elsewhere this does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from spl.soak.result import SoakResult

__all__ = ["STOP_SIGNALS", "SoakInterrupted", "StopSignals"]

#: The signals that stop a soak; SIGINT (Ctrl-C) is Python's KeyboardInterrupt already, the others are routed.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_ROUTED = (signal.SIGTERM, signal.SIGHUP)


class SoakInterrupted(KeyboardInterrupt):
    """The soak was stopped by a signal (SIGINT, SIGTERM or SIGHUP); the daemons it started are stopped.

    ``partial`` holds the figures up to the stop when the run had started emitting, else None.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.partial: SoakResult | None = None

    @property
    def exit_status(self) -> int:
        """What a shell reports for a process ended by this signal: 128 + its number."""
        return 128 + self.signum


_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StopSignals:
    """Route SIGTERM and SIGHUP (and, during cleanup, SIGINT) for the length of one soak; see the module docstring."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the first stop signal received
        self._active = threading.current_thread() is threading.main_thread()
        self._saved: dict[int, _Handler] = {}
        self._routed: tuple[int, ...] = ()  # the routed signals not ignored when the soak started

    def __enter__(self) -> StopSignals:
        if self._active:
            self._saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
            self._routed = tuple(signum for signum in _ROUTED if self._saved[signum] is not signal.SIG_IGN)
            for signum in self._routed:
                signal.signal(signum, self._raise)
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
        """``trio.run(main)``, with SIGTERM and SIGHUP raised inside trio as :class:`SoakInterrupted`.

        A signal that arrives while trio starts up is only noted (a handler raising into trio's
        own start-up code could leave it in a broken state), then raised as soon as the listener runs.
        """
        if not self._active:
            return trio.run(main)
        for signum in self._routed:
            signal.signal(signum, self._note)
        try:
            return trio.run(self._main, main)
        finally:
            for signum in self._routed:
                signal.signal(signum, self._raise)

    async def _main(self, main: Callable[[], Any]) -> Any:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._listen)
            result = await main()
            nursery.cancel_scope.cancel()
        return result

    async def _listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not self._routed:  # every routed signal was ignored when the soak started: nothing to listen for
            task_status.started()
            await trio.sleep_forever()
        with trio.open_signal_receiver(*self._routed) as received:
            task_status.started()
            if self.signum is not None:  # noted while trio started
                raise SoakInterrupted(self.signum)
            async for signum in received:
                self.signum = self.signum or signum
                raise SoakInterrupted(signum)

    def _hurried(self) -> tuple[int, ...]:
        """SIGINT, and the routed signals that were not ignored."""
        return (signal.SIGINT, *self._routed)

    @contextmanager
    def hurrying(self, hurry: Callable[[], None]) -> Iterator[None]:
        """While cleaning up, SIGINT, SIGTERM and SIGHUP call ``hurry`` (``kill -9`` the daemons) instead of raising.

        ``hurry`` runs inside a signal handler: it must only send signals, never wait or take locks.
        """
        if not self._active:
            yield
            return

        def handler(signum: int, frame: FrameType | None) -> None:
            self.signum = self.signum or signum
            hurry()

        before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS if signum in self._hurried()}
        for signum in before:
            signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum, previous in before.items():
                signal.signal(signum, previous)
