"""The receive step every actor loop shares: next message, or None once stopping."""

from __future__ import annotations

import trio

from spl.runtime.supervisor import ChildContext

__all__ = ["next_message"]


async def next_message(ctx: ChildContext) -> object | None:
    """The next inbox message, or None when a graceful stop was requested.

    Queued messages are still handed out first (``receive_nowait``), so an actor asked
    to stop finishes what was already sent to it and then returns within its budget
    instead of waiting to be cancelled.
    """
    try:
        return ctx.receive_nowait()
    except trio.WouldBlock:
        pass
    if ctx.stop_requested.is_set():
        return None
    received: list[object] = []
    async with trio.open_nursery() as nursery:

        async def take() -> None:
            received.append(await ctx.receive())
            nursery.cancel_scope.cancel()

        async def stop() -> None:
            await ctx.stop_requested.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(take)
        nursery.start_soon(stop)
    return received[0] if received else None
