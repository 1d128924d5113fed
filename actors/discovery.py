"""Peer discovery (issue 14): the mDNS listener and, opt-in, broadcaster for ``_syncropel._tcp.local``.

Placeholder wired into the daemon's tree (``daemon/assembly.py``); the discovery work fills it in.
"""

from __future__ import annotations

from typing import Any

from spl.runtime.supervisor import ChildContext

__all__ = ["Discovery"]


class Discovery:
    """The daemon's discovery child: keeps what mDNS has seen (bounded, expiring) for ``GET /v1/discovery/mdns``."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def peers(self) -> list[dict[str, Any]]:
        return []

    async def run(self, ctx: ChildContext) -> None:
        ctx.started()
        await ctx.stop_requested.wait()
