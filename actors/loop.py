"""The receive step every actor loop shares: next message, or None once stopping (or timed out)."""

from __future__ import annotations

import math

import trio

from spl.runtime.supervisor import ChildContext

__all__ = ["next_message"]


async def next_message(ctx: ChildContext, *, deadline: float = math.inf) -> object | None:
    """The next inbox message; None when a graceful stop was requested or ``deadline`` passed.

    Queued messages are still handed out first (``receive_nowait``), so an actor asked to
    stop finishes what was already sent to it and then returns within its budget instead
    of waiting to be cancelled. Callers that pass a ``deadline`` tell the two ``None``
    cases apart with ``ctx.stop_requested.is_set()``.
    """
    try:
        return ctx.receive_nowait()
    except trio.WouldBlock:
        pass
    with trio.move_on_at(deadline):
        return await ctx.receive_until_stop()
    return None
