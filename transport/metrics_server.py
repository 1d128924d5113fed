"""The optional token-free ``/metrics`` listener (``[metrics] port``).

Placeholder, filled in by issue 13's metrics work.
"""

from __future__ import annotations

from typing import Any

from spl.runtime.supervisor import ChildContext

__all__ = ["MetricsListener"]


class MetricsListener:
    """Serves only ``GET /metrics`` of ``app`` (the main app, whose Metrics it shares) on ``host:port``."""

    def __init__(self, services: Any, app: Any, host: str, port: int) -> None:
        self.services, self.app, self.host, self.port = services, app, host, port

    def bind(self) -> None:
        """Bind the socket before the tree starts (a refused bind is one line at start)."""

    async def run(self, ctx: ChildContext) -> None:
        ctx.started()
        await ctx.stop_requested.wait()
