"""The HTTP server actor: Hypercorn serving the Quart app inside the supervision tree.

``hypercorn.trio.serve`` installs no signal handlers; it stops when the child's
``stop_requested`` fires. A restarted incarnation binds the port the first one got, so
clients keep their URL even when the daemon was started on port 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from spl.runtime.supervisor import ChildContext

__all__ = ["HttpServer"]

log = logging.getLogger("spl.http")


SEND_BUDGET = 10.0


class ShieldedSend:
    """ASGI wrapper: the app's ``send`` calls finish even when the request task is cancelled.

    quart-trio cancels a request's task group on ``http.disconnect``; when that lands while
    Hypercorn is closing a half-read connection inside ``send`` (an error answered before
    the request body arrived), the connection was neither closed nor recycled and the
    client's next request on it hung. Shielded — within a budget, so a stuck peer cannot
    hold shutdown — the close completes and the client sees a clean end of connection.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def shielded_send(message: Any) -> None:
            # Only the last body message ends (closes or recycles) the connection; a cancel
            # scope per stream chunk would cost every SSE frame for nothing.
            if message.get("type") == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_BUDGET):
                    await send(message)
            else:
                await send(message)

        await self.app(scope, receive, shielded_send)


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, on_bound: Callable[[list[str]], None]) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._on_bound = on_bound
        self.urls: list[str] = []

    def _config(self) -> HypercornConfig:
        config = HypercornConfig()
        host = f"[{self._host}]" if ":" in self._host else self._host
        config.bind = [f"{host}:{self._port}"]
        config.graceful_timeout = 1.0  # streams end themselves on stop; idle keep-alives need no 3 s
        config.keep_alive_timeout = 75.0
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.include_server_header = False
        return config

    async def run(self, ctx: ChildContext) -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                partial(serve, ShieldedSend(self._app), self._config(), shutdown_trigger=ctx.stop_requested.wait)
            )
            self.urls = list(urls)
            if self._port == 0 and self.urls:
                self._port = int(self.urls[0].rsplit(":", 1)[1])
            self._on_bound(self.urls)
            log.info("listening on %s", ", ".join(self.urls))
            ctx.started()
