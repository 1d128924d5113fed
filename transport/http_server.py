"""The HTTP server actor: Hypercorn's HTTP/1.1 protocol behind spl's own accept loop.

``hypercorn.trio.serve`` accepts every connection the kernel offers and keeps one whose
request head never completes for ``keep_alive_timeout``: about 1,000 half-open
connections used to exhaust the default 1,024 descriptors for 75 s. So spl runs
Hypercorn's per-connection ``TCPServer`` (the same protocol code ``serve`` uses) from its
own loop, which bounds what many clients can cost (:class:`ConnectionLimits`):

- at most ``max_connections`` connections are open at once; while all slots are taken
  nothing is accepted and new clients wait in the kernel's listen backlog, which costs
  the process no descriptor;
- a client has ``header_timeout`` seconds to finish each request head;
- a client that takes none of the bytes sent to it for ``write_timeout`` seconds (an SSE
  watcher that stopped reading) has its connection aborted by the kernel;
- the soft ``RLIMIT_NOFILE`` is raised to the hard limit before serving.

No signal handlers are installed. The daemon calls ``bind()`` before it starts the tree, so a
port that is taken or an address that is not this machine's is a one-line refusal at start,
not a child failing and restarting; the first incarnation serves those sockets. A stop is
two steps, so the daemon can name them in its shutdown phases: ``stop_accepting()`` closes
the listeners (new clients are refused at once), then the child's ``stop_requested`` ends
the connections still open. A restarted incarnation binds the port the first one got, so
clients keep their URL even when the daemon was started on port 0.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from spl.core.config import Config
from spl.runtime.supervisor import ChildContext

__all__ = ["ConnectionLimits", "ExchangeGuard", "HttpServer", "hypercorn_config", "raise_open_file_limit"]

log = logging.getLogger("spl.http")

SEND_BUDGET = 10.0  # seconds the last message of a response may take, even when the request is cancelled
DRAIN_BUDGET = 5.0  # seconds spent reading an unread request body after an early answer
MAX_REQUEST_HEAD = 16 * 1024  # bytes of request line + headers (Hypercorn's default, made explicit)
RESERVED_DESCRIPTORS = 256  # kept free of client connections: the store, logs, peers, pipes
ACCEPT_RETRY = 0.1  # seconds before accepting again when the process is out of descriptors or memory
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class ConnectionLimits:
    """What one daemon grants its clients (serve.* in config.toml)."""

    max_connections: int = 512
    header_timeout: float = 10.0
    write_timeout: float = 30.0
    backlog: int = 1024
    drain_limit: int = 4 * 1024 * 1024

    @classmethod
    def from_config(cls, config: Config) -> ConnectionLimits:
        """Limits from the home's config.

        The write deadline is two heartbeat periods: an SSE watcher that cannot take even
        a heartbeat in that time is gone (the SDK's own watchdog allows four). An unread
        request body is drained up to four maximum bodies so that an early answer (413,
        401, …) leaves the connection usable instead of cutting it under the client.
        """
        return cls(
            max_connections=max(1, config.max_connections),
            header_timeout=max(0.1, config.header_timeout),
            write_timeout=max(1.0, 2 * config.heartbeat_seconds),
            drain_limit=4 * config.max_body_bytes,
        )


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns the soft limit in force.

    The default soft limit (often 1,024) is far below what the hard limit allows and below
    what ``max_connections`` plus the store and peers need.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as error:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, error)
        return soft
    return target


def hypercorn_config(host: str, port: int, limits: ConnectionLimits) -> HypercornConfig:
    """Hypercorn's settings for a server on ``host:port`` within ``limits``.

    Public so that ``spl.soak.emit_overhead`` can serve its bare quart-trio baseline exactly as
    spl serves its app, and measure only what spl adds.
    """
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = 1.0  # streams end themselves on stop; idle keep-alives need no 3 s
    # Hypercorn's idle timer runs from the moment a connection opens (or a response ends)
    # until a complete request head has arrived, whatever trickles in meanwhile: that is
    # the header deadline. Idle keep-alive connections close after the same time, which
    # pools handle (httpx expires idle connections after 5 s on its own).
    config.keep_alive_timeout = limits.header_timeout
    config.h11_max_incomplete_size = MAX_REQUEST_HEAD
    config.backlog = limits.backlog
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    return config


def _set_write_deadline(stream: trio.SocketStream, seconds: float) -> None:
    """Have the kernel abort the connection once sent data waits ``seconds`` for the peer.

    Hypercorn writes with its cancel scope shielded, so no deadline in the app can cut a
    write the peer never takes; ``TCP_USER_TIMEOUT`` covers both unacknowledged data and
    data held back by a zero receive window (Linux). Elsewhere the hub's bounded buffers
    still cap what such a client pins.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:
        return
    try:
        stream.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
    except OSError:
        pass  # not TCP (a Unix socket) or already gone: nothing to bound


class _Connection(TCPServer):
    """Hypercorn's per-connection server, closing as soon as the client has gone.

    Hypercorn notices the end of the client's stream, but then waits for its idle timer
    (the keep-alive timeout) before closing its side: every connection a client opened and
    closed without a request — or closed while idle — lingered in CLOSE-WAIT for 75 s,
    holding a descriptor (and now one of the ``max_connections`` slots).
    """

    async def _read_data(self) -> None:
        await super()._read_data()  # returns once the client closed, reset, or the read failed
        await self.idle_task.stop()


class _Exchange:
    """One request/response exchange as :class:`ExchangeGuard` sees it."""

    def __init__(self, scope: dict[str, Any], drain_limit: int) -> None:
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name.lower() == b"transfer-encoding":
                chunked = True
        self.has_body = chunked or bool(declared)
        self.declared = None if chunked else declared
        self.drain_limit = drain_limit
        self.received = 0
        # Set once the request body has ended, the client left, or more than the drain limit
        # arrived: from then on nothing is gained by waiting for the rest.
        self.settled = trio.Event()
        if not self.has_body:
            self.settled.set()

    def saw(self, message: dict[str, Any]) -> None:
        if message.get("type") == "http.request":
            self.received += len(message.get("body", b""))
            if not message.get("more_body", False) or self.received > self.drain_limit:
                self.settled.set()
        elif message.get("type") == "http.disconnect":
            self.settled.set()

    def closes_connection(self) -> bool:
        """Decided when the response starts: whether to say ``Connection: close``.

        Only when the body is still arriving and will not be read to its end (too large,
        or of unknown length): then the connection cannot be reused, and the header makes
        the client open a new one instead of finding this one closed under it.
        """
        return not self.settled.is_set() and not (self.declared is not None and self.declared <= self.drain_limit)

    def worth_draining(self) -> bool:
        """Whether to wait for the rest of the body before ending the response.

        Reading it lets Hypercorn recycle the connection, and even when the connection
        closes, a close with unread data would send the client a reset that can destroy
        the response before the client reads it (RFC 9112 §9.6).
        """
        return not self.settled.is_set() and not (self.declared is not None and self.declared > self.drain_limit)


class ExchangeGuard:
    """ASGI wrapper around the app: every exchange ends cleanly for the client.

    - **Early answers keep the connection usable.** When the app answers before reading
      the request body (413, 401, 415…), Hypercorn used to close the connection without
      ``Connection: close``: a pooled client reused it and its next request failed with
      "Server disconnected" (11 of 20 tries). Now the unread body is drained (Quart's
      receive loop discards it) before the response ends, so the connection is recycled;
      a body too large to drain (or of unknown length) gets ``Connection: close`` instead,
      so the client opens a new connection rather than reusing a dead one.
    - **The last message is shielded.** quart-trio cancels a request's task group on
      ``http.disconnect``; landing inside ``send`` while Hypercorn closed a half-read
      connection, that left the connection neither closed nor recycled and the client's
      next request hung. Shielded within a budget, the close completes.
    """

    def __init__(self, app: Any, drain_limit: int) -> None:
        self.app = app
        self.drain_limit = drain_limit
        self._final_sends: set[trio.CancelScope] = set()
        self._abandoned = False

    def abandon_final_sends(self) -> None:
        """End every shielded last message now, and shield none from here on: the server's stop ran out of time.

        Without this a client that never finishes its request body held a stop for the drain budget (5 s),
        past the shutdown phase that was meant to end it.
        """
        self._abandoned = True
        for scope in self._final_sends:
            scope.cancel()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, self.drain_limit)

        async def watched_receive() -> Any:
            message = await receive()
            exchange.saw(message)
            return message

        async def guarded_send(message: Any) -> None:
            kind = message.get("type")
            if kind == "http.response.start" and exchange.closes_connection():
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            if kind != "http.response.body" or message.get("more_body", False):
                # A cancel scope per stream chunk would cost every SSE frame for nothing.
                await send(message)
                return
            with trio.CancelScope(shield=not self._abandoned, deadline=trio.current_time() + SEND_BUDGET) as scope:
                self._final_sends.add(scope)
                try:
                    if exchange.worth_draining():
                        with trio.move_on_after(DRAIN_BUDGET):
                            await exchange.settled.wait()
                    await send(message)
                finally:
                    self._final_sends.discard(scope)

        await self.app(scope, watched_receive, guarded_send)


class HttpServer:
    """Child of the root supervisor: serves the app until ``stop_requested``."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        on_bound: Callable[[list[str]], None],
        limits: ConnectionLimits | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._on_bound = on_bound
        if limits is None:  # the app carries the daemon's services, hence its config
            services = getattr(app, "config", {}).get("SPL")
            limits = ConnectionLimits.from_config(services.config) if services is not None else ConnectionLimits()
        self.limits = limits
        self.urls: list[str] = []
        self._open: set[trio.SocketStream] = set()  # connections being served (cut at the end of a stop)
        self._bound: list[socket.socket] = []  # bound by ``bind()``, served by the next incarnation
        self._accepting = trio.Event()  # set: stop accepting (the current incarnation's)

    def bind(self) -> list[str]:
        """Bind and listen now, before the daemon starts anything else; returns the URLs.

        Raises:
            OSError: The address cannot be bound (taken, not this machine's, not allowed) or the host name does
                not resolve (``socket.gaierror``).
        """
        config = self._config()
        sockets = config.create_sockets().insecure_sockets
        try:
            for sock in sockets:
                sock.listen(config.backlog)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self._bound = list(sockets)
        urls = [f"http://{repr_socket_addr(sock.family, sock.getsockname())}" for sock in sockets]
        if self._port == 0 and urls:
            self._port = int(urls[0].rsplit(":", 1)[1])
        return urls

    def stop_accepting(self) -> None:
        """Close the listeners: new clients are refused from now on, open connections go on being served."""
        self._accepting.set()

    def _config(self) -> HypercornConfig:
        return hypercorn_config(self._host, self._port, self.limits)

    async def run(self, ctx: ChildContext) -> None:
        self._accepting = trio.Event()
        async with trio.open_nursery() as nursery:

            async def stop_accepting_at_stop() -> None:
                await ctx.stop_requested.wait()
                self._accepting.set()

            nursery.start_soon(stop_accepting_at_stop)
            urls = await nursery.start(partial(self._serve, shutdown_trigger=ctx.stop_requested.wait))
            self.urls = list(urls)
            if self._port == 0 and self.urls:
                self._port = int(self.urls[0].rsplit(":", 1)[1])
            self._on_bound(self.urls)
            log.info("listening on %s", ", ".join(self.urls))
            ctx.started()

    def _connection_cap(self) -> int:
        """``max_connections``, lowered if the open-file limit could not make room for it."""
        available = raise_open_file_limit() - RESERVED_DESCRIPTORS
        if available < self.limits.max_connections:
            cap = max(16, available)
            log.warning(
                "open-file limit leaves room for %d connections, not serve.max_connections = %d; "
                "raise the hard limit (LimitNOFILE= under systemd)",
                cap,
                self.limits.max_connections,
            )
            return cap
        return self.limits.max_connections

    async def _serve(
        self,
        *,
        shutdown_trigger: Callable[[], Awaitable[None]],
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hypercorn's trio ``worker_serve``, with a capped accept loop in place of ``serve_listeners``."""
        config = self._config()
        guard = ExchangeGuard(self._app, self.limits.drain_limit)
        app = wrap_app(guard, config.wsgi_max_body_size, "asgi")
        context = WorkerContext(None)
        lifespan_state: LifespanState = {}
        lifespan = Lifespan(app, config, lifespan_state)
        slots = trio.Semaphore(self._connection_cap())

        def new_connection(stream: trio.SocketStream) -> _Connection:
            # TCPServer is annotated for TLS streams but serves plain ones too (it probes for a handshake).
            return _Connection(app, config, context, ConnectionState(lifespan_state.copy()), stream)  # type: ignore[arg-type]

        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            sockets, self._bound = self._bound, []
            if not sockets:  # a restarted incarnation: bind the port again
                sockets = config.create_sockets().insecure_sockets
                for sock in sockets:
                    sock.listen(config.backlog)
            listeners: list[trio.SocketListener] = []
            urls: list[str] = []
            for sock in sockets:
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                urls.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            async with trio.open_nursery() as janitor:
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(self._accept_forever, listener, slots, connections, new_connection)
                        task_status.started(urls)
                        await self._accepting.wait()  # stop_accepting(), or the child's stop
                        acceptors.cancel_scope.cancel()
                    for listener in listeners:
                        await listener.aclose()
                    await shutdown_trigger()
                    # Idle keep-alives close now; exchanges in flight get the graceful budget.
                    await context.terminated.set()
                    deadline = trio.current_time() + config.graceful_timeout
                    connections.cancel_scope.deadline = deadline
                    janitor.start_soon(self._cut_connections_at, deadline, guard)
                janitor.cancel_scope.cancel()  # every connection ended in time: nothing to cut
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()

    async def _cut_connections_at(self, deadline: float, guard: ExchangeGuard) -> None:
        """At the end of a stop's grace period, shut down the sockets of connections still open.

        Cancelling them is not enough: Hypercorn writes under a shielded cancel scope, so a
        client that stopped reading would hold the stop until the kernel's write deadline
        (or forever without one). A socket shut down makes that write fail at once. The
        guard's own shielded last messages (draining an unread body) end at the same time.
        """
        await trio.sleep_until(deadline)
        guard.abandon_final_sends()
        for stream in list(self._open):
            try:
                stream.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer

    async def _accept_forever(
        self,
        listener: trio.SocketListener,
        slots: trio.Semaphore,
        connections: trio.Nursery,
        new_connection: Callable[[trio.SocketStream], _Connection],
    ) -> None:
        """Accept only while a slot is free: the rest wait in the backlog, not in our descriptors."""
        starved = False  # log the first of a run of failed accepts, not every retry
        while True:
            await slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as error:
                slots.release()
                if error.errno not in OUT_OF_RESOURCES:
                    raise
                if not starved:
                    log.warning("cannot accept connections (%s); retrying every %g s", error.strerror, ACCEPT_RETRY)
                starved = True
                await trio.sleep(ACCEPT_RETRY)
                continue
            starved = False
            connections.start_soon(self._handle, stream, slots, new_connection)

    async def _handle(
        self,
        stream: trio.SocketStream,
        slots: trio.Semaphore,
        new_connection: Callable[[trio.SocketStream], _Connection],
    ) -> None:
        """One connection, start to close; its slot is released whatever happens."""
        self._open.add(stream)
        try:
            _set_write_deadline(stream, self.limits.write_timeout)
            await new_connection(stream).run()
        except Exception:
            # One broken connection must not stop the server (trio.serve_listeners would crash).
            log.exception("error serving a connection")
        finally:
            self._open.discard(stream)
            slots.release()
            await stream.aclose()  # TCPServer closes it too; this covers a failure before it ran
