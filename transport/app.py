"""The Quart (quart-trio) application: the daemon's HTTP front door.

Every route turns a request into a message to an actor or a read on the read pool, and
every failure becomes the JSON error envelope of spec §15.9 in exactly one place
(:func:`_error_response`). Bad input is a 4xx; a 500 means a bug and is logged.

Before any route runs, a request passes these gates in this order (spec §15.19):

0. **Host, when authentication is off.** A daemon started with ``--insecure-localhost``
   (or ``[auth] required = false``) answers only requests addressed to a loopback name:
   ``127.0.0.1``, ``localhost`` or ``[::1]``, with or without a port (421
   ``HOST_NOT_ALLOWED`` otherwise, for every path and method). Without this, a web page on
   ``rebind.attacker.example`` whose DNS answer is switched to 127.0.0.1 (DNS rebinding)
   is same-origin with the daemon in the browser's eyes and could read and write through
   it. With authentication on, the token is what protects the daemon and ``Host`` is left
   alone (a daemon may be reached under any name).
1. **Routing.** An unknown path is a 404, a known path with the wrong method a 405, for
   anyone. The route table is public (docs/api.md) and every parameterised route matches
   any value, so answering before authentication tells a caller nothing it could not read
   in the docs — and a typo is not reported as a credential problem.
2. **CORS preflight.** ``OPTIONS`` never carries credentials; it is answered from the route
   table, with CORS headers only for an origin the operator listed (``serve.cors_origins``).
3. **Media type.** Every POST/PUT/PATCH/DELETE must say ``content-type: application/json``
   (415 otherwise). A browser sends a cross-origin "simple request" (``text/plain``, form
   data) without asking the server first, so this is what stops a web page from writing
   through a daemon — including one started with ``--insecure-localhost``.
4. **Authentication.** Every route but the open ones (:data:`OPEN_ROUTES`, ``/.well-known/``)
   needs a valid token. Loopback is not an identity: behind a same-host proxy or TLS
   terminator every remote caller is loopback.
5. **Emergency freeze.** While ``spl kill --emergency`` holds (``spl.core.fleet_control``), every
   request but ``/health``, ``/v1/identity``, ``/.well-known/*`` and those of callers holding the
   ``admin`` scope is refused with 503 ``FLEET_FROZEN_EMERGENCY`` (docs/kill-switch.md).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import trio
from quart import Request, Response, request
from quart.sessions import NullSession, SessionInterface
from quart_trio import QuartTrio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers import TrioRequest
from quart_trio.wrappers.request import TrioBody
from werkzeug.exceptions import HTTPException

from spl.core.errors import AuthRequired, InvalidRequest, NotFound, PayloadTooLarge, SplError
from spl.core.pairs import is_loopback_host as core_is_loopback_host
from spl.core.text import printable
from spl.transport import (
    routes_actors,
    routes_admin,
    routes_discovery,
    routes_federation,
    routes_feed,
    routes_fleet,
    routes_metrics,
    routes_openapi,
    routes_pairing,
    routes_portability,
    routes_records,
    routes_rotation,
    routes_snapshots,
    routes_sync,
    routes_tasks,
    routes_threads,
    routes_ui,
)
from spl.transport.auth import ANONYMOUS, ANONYMOUS_ADMIN, Caller, presented_token
from spl.transport.context import SERVICES_KEY, current_request
from spl.transport.metrics import METRICS_KEY, Metrics
from spl.transport.responses import error_response, json_response
from spl.transport.services import Services

__all__ = ["OPEN_ROUTES", "create_app", "is_loopback_host", "json_response"]

log = logging.getLogger("spl.http")

# Routes anyone may call, even with auth on (spec §15.19): health and identity, every document
# under /.well-known/ (discovery), and the federation handshake, whose signed documents are their
# own authentication (the handshake is what mints the tokens).
OPEN_ROUTES = (
    frozenset({"/health", "/v1/identity"})
    | routes_federation.HANDSHAKE_ROUTES
    | routes_openapi.OPEN_ROUTES  # the API contract is public, like the route table in docs/api.md
    | routes_ui.OPEN_ROUTES  # the page and its assets (the page asks for a token for its data)
    | routes_discovery.OPEN_ROUTES  # a did:sync directory's signed registrations and lookups
    | routes_pairing.OPEN_ROUTES  # a device redeems its one-time code before it has a token
)
OPEN_PREFIX = "/.well-known/"
# What an emergency freeze still answers to anyone (gate 5): health and identity, and /.well-known/ (discovery).
# /metrics too: an emergency is when monitoring matters most (the route still needs its metrics:read scope).
# The mesh-health page and its data stream likewise (the stream still needs metrics:read).
EMERGENCY_OPEN_ROUTES = (
    frozenset({"/health", "/v1/identity", "/metrics", routes_ui.EVENTS_ROUTE}) | routes_ui.OPEN_ROUTES
)

# Methods that change something: they must carry a JSON body's media type (gate 3).
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_MEDIA_TYPE = "application/json"

# Uploads that are not JSON (gate 3 accepts these media types on these routes only) and may be larger than
# ``serve.max_body_bytes`` (the route reads them as a stream, bounded by its own limit). None of these media
# types is one a browser sends cross-origin without a CORS preflight, so gate 3 still keeps forms out.
SNAPSHOT_MEDIA_TYPES = frozenset({"application/x-ndjson", "application/jsonl"})  # a .snap.jsonl (JSON too)
UPLOADS: dict[tuple[str, str], tuple[frozenset[str], int]] = {
    ("POST", "/v1/portability/import"): (routes_portability.BUNDLE_MEDIA_TYPES, routes_portability.MAX_UPLOAD_BYTES),
    ("POST", "/v1/threads/restore"): (SNAPSHOT_MEDIA_TYPES, routes_snapshots.MAX_RESTORE_BYTES),
}


UPLOAD_HIGH_WATER = 4 * 1024 * 1024  # bytes of an upload held in memory before the socket is read again


class FlowControlledBody(TrioBody):
    """An upload's body that holds at most :data:`UPLOAD_HIGH_WATER` bytes not yet taken by its route.

    Quart's own body takes every ASGI message as it comes: an upload faster than its route (a 240 MB bundle
    while the spool's disk writes stall) would wait in the daemon's memory. Here the task that reads the ASGI
    messages (:class:`SplASGIHTTPConnection`) waits in :meth:`put` instead; Hypercorn's queue to it then fills,
    Hypercorn stops reading the socket, and TCP holds the sender back.
    """

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._taken = trio.Event()
        self._whole = False  # awaited whole (``get_data``): the route wants it all, bounded by its limit

    async def put(self, data: bytes) -> None:
        while len(self._data) >= UPLOAD_HIGH_WATER and not self._whole and self._must_raise is None:
            self._taken = trio.Event()
            await self._taken.wait()
        self.append(data)

    def __await__(self) -> Generator[Any, None, Any]:
        self._whole = True
        self._taken.set()
        return super().__await__()

    async def __anext__(self) -> bytes:
        data: bytes = await super().__anext__()
        self._taken.set()
        return data


class SplASGIHTTPConnection(TrioASGIHTTPConnection):
    """Quart-trio's HTTP connection, reading an upload's messages no faster than its route takes them."""

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: Any
    ) -> None:
        body = request.body
        if not isinstance(body, FlowControlledBody):
            await super().handle_messages(nursery, request, receive)
            return
        while True:
            message = await receive()
            if message["type"] == "http.request":
                await body.put(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()


class SplRequest(TrioRequest):
    """Quart's request, with an upload route's (:data:`UPLOADS`) body limit and flow-controlled body.

    Both must be set when the request is made: Quart starts taking the body at once, and a body over the
    app-wide limit would be refused (and dropped) before the route could raise it.
    """

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        upload = UPLOADS.get((method, path))
        if upload is not None:
            kwargs["max_content_length"] = upload[1]
            self.body_class = FlowControlledBody
        super().__init__(method, scheme, path, *args, **kwargs)


# A Host header (gate 0): a name or IPv4 literal, or a bracketed IPv6 literal, then an optional port.
HOST_HEADER = re.compile(r"(\[[0-9a-fA-F:.]*\]|[^:\[\]]*)(?::[0-9]{1,5})?")

# What a listed origin's page may send (gate 2): the SDK's and the CLI's headers.
CORS_ALLOW_HEADERS = "authorization, x-api-key, content-type, last-event-id"
CORS_MAX_AGE_SECONDS = "600"


def is_open_route(path: str) -> bool:
    """Routes answered without a token even when auth is on."""
    return path in OPEN_ROUTES or path.startswith(OPEN_PREFIX)


def is_loopback_host(host: str) -> bool:
    """A Host header naming this machine: ``localhost``, a 127/8 literal or ``[::1]`` (any case), with or without
    ``:port``. Names are never resolved: ``127.0.0.1.attacker.example`` is not loopback (DNS rebinding)."""
    match = HOST_HEADER.fullmatch(host)
    return match is not None and core_is_loopback_host(match.group(1))


def _require_loopback_host(req: Request) -> None:
    """Gate 0 (auth off only): refuse a request addressed to any name but a loopback one.

    A request without a ``Host`` header (HTTP/1.0) is let through: every browser sends one,
    so such a request cannot come from a rebound web page.
    """
    host = req.headers.get("host")
    if host is None or is_loopback_host(host):
        return
    raise InvalidRequest(
        f"Host '{printable(host, 64)}' is not allowed: this daemon runs with authentication off "
        "(--insecure-localhost) and answers only requests addressed to 127.0.0.1, localhost or [::1] "
        "(a guard against DNS rebinding); use http://127.0.0.1:<port>, or turn authentication on "
        "(restart without --insecure-localhost, [auth] required = true) to reach it under another name",
        code="HOST_NOT_ALLOWED",
        status=421,
    )


def _require_json_media_type(req: Request) -> None:
    """Gate 3: a write must declare a JSON body (parameters such as ``charset`` are fine).

    The header exactly as every client sends it is accepted without parsing its parameters.
    """
    if req.method not in WRITE_METHODS:
        return
    sent = req.headers.get("content-type")
    if sent == JSON_MEDIA_TYPE or req.mimetype == JSON_MEDIA_TYPE:
        return
    upload = UPLOADS.get((req.method, req.path))
    if upload is not None and req.mimetype in upload[0]:
        return
    shown = f"'{sent[:64]}'" if sent else "none"
    raise InvalidRequest(
        f"{req.method} requests must send 'content-type: application/json' (got {shown}); "
        "add that header, even when the request has no body",
        code="UNSUPPORTED_MEDIA_TYPE",
        status=415,
    )


def _caller(services: Services, req: Request) -> Caller:
    """Gate 4: who is calling. Raises 401 on a protected route without a valid token."""
    if not services.auth_required:
        return ANONYMOUS_ADMIN  # --insecure-localhost: bound to 127.0.0.1, no tokens at all
    token = presented_token(req.headers)
    if not is_open_route(req.path):
        return services.tokens.authenticate(token)
    if not token:
        return ANONYMOUS
    try:
        return services.tokens.authenticate(token)
    except AuthRequired:
        # An open route answers everyone alike: a stale or foreign token gets what no token gets.
        return ANONYMOUS


def _refuse_in_emergency(services: Services, req: Request) -> None:
    """Gate 5: under an emergency freeze (``spl kill --emergency``) only health, identity, discovery and admin
    callers get through; everyone else gets the freeze's 503 (``FLEET_FROZEN_EMERGENCY``)."""
    fleet = services.fleet()
    if fleet.level != "emergency" or req.path in EMERGENCY_OPEN_ROUTES or req.path.startswith(OPEN_PREFIX):
        return
    if "admin" in req.caller.scopes:  # type: ignore[attr-defined]
        return  # the operator lifting the freeze, or looking at why it holds
    frozen = fleet.error()
    assert frozen is not None  # the level is emergency
    raise frozen


class NoSessions(SessionInterface):
    """spl sets no cookies: hand every request one shared (immutable) null session instead of
    building a new one each time (measurable on the emit path)."""

    _null = NullSession()

    async def open_session(self, app: Any, request: Any) -> NullSession:
        return self._null

    async def save_session(self, app: Any, session: Any, response: Any) -> None:
        return None

    def is_null_session(self, obj: object) -> bool:
        return True


def create_app(services: Services) -> QuartTrio:
    here = str(Path(__file__).parent)  # the spl namespace package has no single root for Quart to find
    app = QuartTrio("spl.transport", root_path=here, instance_path=here)
    app.request_class = SplRequest
    app.asgi_http_class = SplASGIHTTPConnection
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body_bytes
    app.config[SERVICES_KEY] = services
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True  # OPTIONS answered from the route table (gate 2)
    # The SDK does not URL-encode threads: '//' must be a 404 JSON, not a 308 HTML redirect.
    app.url_map.merge_slashes = False
    app.session_interface = NoSessions()  # type: ignore[assignment]
    # Browsers send the origin lowercased and without a trailing slash; accept config either way.
    cors_origins = frozenset(origin.strip().rstrip("/").lower() for origin in services.config.cors_origins)
    metrics = Metrics(services)  # GET /metrics (routes_metrics.py); one registry per app, never the global one
    app.config[METRICS_KEY] = metrics

    @app.before_request
    async def start_clock() -> None:
        """Registered before the gates, so the latency of a request they refuse is measured too."""
        current_request().metrics_started = time.perf_counter()  # type: ignore[attr-defined]

    @app.after_request
    async def count_request(response: Response) -> Response:
        """Every answered request, refused ones included, by its route template (never the raw path)."""
        req = current_request()
        started = getattr(req, "metrics_started", None)
        rule = req.url_rule.rule if req.url_rule is not None else None
        elapsed = time.perf_counter() - started if started is not None else 0.0
        metrics.requests.observe(rule, req.method, response.status_code, elapsed)
        return response

    @app.before_request
    async def gatekeeper() -> None:
        """Gates 0-4 of the module docstring; a gate that refuses raises an ``SplError``."""
        req = current_request()
        req.caller = ANONYMOUS  # type: ignore[attr-defined]
        if not services.auth_required:
            _require_loopback_host(req)  # gate 0, before routing: a rebound page learns nothing at all
            req.caller = ANONYMOUS_ADMIN  # type: ignore[attr-defined]
        if req.routing_exception is not None or req.method == "OPTIONS":
            return  # gate 1 (dispatch raises the 404/405) and gate 2 (no credentials by design)
        _require_json_media_type(req)
        req.caller = _caller(services, req)  # type: ignore[attr-defined]
        _refuse_in_emergency(services, req)  # gate 5

    async def cors(response: Response) -> Response:
        """CORS only for listed origins: echo the origin (never ``*``) and answer preflights.

        Registered only when origins are listed: without them every response goes out as the route made it.
        """
        response.vary.add("Origin")  # caches must not hand one origin's answer to another
        origin = request.headers.get("origin")
        if origin is None or origin.lower() not in cors_origins:
            return response
        response.headers["access-control-allow-origin"] = origin
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            allowed = response.headers.get("allow") or "GET, HEAD, POST, PUT, PATCH, DELETE"
            response.headers["access-control-allow-methods"] = allowed
            response.headers["access-control-allow-headers"] = CORS_ALLOW_HEADERS
            response.headers["access-control-max-age"] = CORS_MAX_AGE_SECONDS
        return response

    if cors_origins:
        app.after_request(cors)

    @app.errorhandler(SplError)
    async def spl_error(error: SplError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404:
            return error_response(
                NotFound(
                    f"no route for {request.method} {request.path}; see docs/api.md for the routes",
                    code="ROUTE_NOT_FOUND",
                )
            )
        if status == 405:
            return error_response(
                InvalidRequest(
                    f"{request.method} is not allowed on {request.path}", code="METHOD_NOT_ALLOWED", status=405
                )
            )
        if status == 413:
            limit = services.config.max_body_bytes
            return error_response(
                PayloadTooLarge(
                    f"request body is larger than {limit} bytes; send smaller records (serve.max_body_bytes)"
                )
            )
        if status < 500:
            return error_response(InvalidRequest(error.description or "bad request", code="BAD_REQUEST", status=status))
        return error_response(SplError("internal error; see the daemon log"))

    @app.errorhandler(Exception)
    async def crash(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(SplError("internal error; see the daemon log"))

    for blueprint in (
        routes_records.blueprint,
        routes_snapshots.blueprint,  # before routes_threads: /v1/threads/snapshot is not a thread id
        routes_threads.blueprint,
        routes_admin.blueprint,
        routes_feed.blueprint,
        routes_sync.blueprint,
        routes_federation.blueprint,
        routes_portability.blueprint,
        routes_actors.blueprint,
        routes_tasks.blueprint,
        routes_fleet.blueprint,
        routes_metrics.blueprint,
        routes_openapi.blueprint,
        routes_ui.blueprint,
        routes_discovery.blueprint,
        routes_pairing.blueprint,
        routes_rotation.blueprint,
    ):
        app.register_blueprint(blueprint)
    return app
