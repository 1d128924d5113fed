"""The optional token-free ``/metrics`` listener (``[metrics] host`` / ``port``).

A Prometheus server that cannot send a bearer token scrapes this one instead of the main port. It answers
``GET /metrics`` (and ``HEAD``) from the same :class:`~spl.transport.metrics.Metrics` object as the main app,
without a token, and nothing else: any other path is a 404 and any other method a 405, both as the JSON error
envelope. It opens no route, record or credential to whoever reaches it, only the figures; the operator binds it
to an address only the scraper reaches (``docs/operations.md``).

It is served exactly as the main app is (:class:`~spl.transport.http_server.HttpServer`: Hypercorn's protocol
behind spl's own capped accept loop, header and write deadlines), with tighter caps: a scraper needs a connection
or two, and a request here never has a body worth reading. The app is a few lines of plain ASGI rather than a
second Quart app: there is one route, and nothing of the main app's gates applies to it.

Where it listens (port 0 picks a free one) is logged at start and kept in ``Metrics.listener_urls``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from spl.core.errors import InvalidRequest, NotFound, SplError
from spl.runtime.supervisor import ChildContext
from spl.transport.http_server import ConnectionLimits, HttpServer
from spl.transport.metrics import METRICS_KEY, Metrics

__all__ = ["LIMITS", "MetricsApp", "MetricsListener"]

log = logging.getLogger("spl.metrics")

# A scraper or two; request heads are tiny; a body is never read (at most this much is drained to keep a
# connection reusable after an early answer).
LIMITS = ConnectionLimits(
    max_connections=16, header_timeout=10.0, write_timeout=30.0, backlog=64, drain_limit=64 * 1024
)
ALLOWED = ("GET", "HEAD")
DRAIN_SECONDS = 2.0  # how long a refused request's body may take to arrive before the answer goes anyway

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class MetricsApp:
    """The listener's ASGI app: ``GET /metrics`` → the scrape; anything else → a JSON error."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets: Hypercorn closes a socket the app did not accept
        method = str(scope.get("method", ""))
        if method not in ALLOWED:
            # Read (and drop) a body first, as the main app does: an answer before it leaves the connection
            # unusable or has it wait for the drain. Bounded in bytes and time.
            with trio.move_on_after(DRAIN_SECONDS):
                await _discard_body(receive)
        if scope.get("path") != "/metrics":
            await _error(
                send,
                NotFound(
                    "this listener ([metrics] port) serves only GET /metrics; every other route is on the main port",
                    code="ROUTE_NOT_FOUND",
                ),
            )
            return
        if method not in ALLOWED:
            refusal = InvalidRequest("only GET (or HEAD) is allowed on /metrics", code="METHOD_NOT_ALLOWED", status=405)
            await _error(send, refusal, [(b"allow", b"GET, HEAD")])
            return
        try:
            body = await self.metrics.scrape()
        except Exception:
            log.exception("metrics listener: the scrape failed")
            await _error(send, SplError("internal error; see the daemon log"))
            return
        headers = [(b"content-type", CONTENT_TYPE_PLAIN_0_0_4.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _discard_body(receive: Receive) -> None:
    received = 0
    while received <= LIMITS.drain_limit:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _error(send: Send, error: SplError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(error.to_wire()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MetricsListener:
    """Serves only ``GET /metrics`` of ``app`` (the main app, whose Metrics it shares) on ``host:port``.

    The daemon calls :meth:`bind` before the tree starts (a port in use is one line at start) and runs
    :meth:`run` as the non-essential child ``metrics-http``, which stops at the daemon's "stop accepting" phase.
    """

    def __init__(self, services: Any, app: Any, host: str, port: int) -> None:
        self.services, self.app, self.host, self.port = services, app, host, port
        self.metrics: Metrics = app.config[METRICS_KEY]
        self.server = HttpServer(MetricsApp(self.metrics), host, port, self._bound, limits=LIMITS)

    def bind(self) -> list[str]:
        """Bind the socket before the tree starts; returns the URLs (a refused bind raises ``OSError``)."""
        urls = self.server.bind()
        self.metrics.listener_urls = [f"{url}/metrics" for url in urls]
        return urls

    def _bound(self, urls: list[str]) -> None:
        self.metrics.listener_urls = [f"{url}/metrics" for url in urls]
        log.info("metrics listener on %s (GET /metrics, no token)", ", ".join(self.metrics.listener_urls))

    async def run(self, ctx: ChildContext) -> None:
        """Serve until the child's stop (``HttpServer.run`` calls ``ctx.started()`` once listening)."""
        await self.server.run(ctx)
