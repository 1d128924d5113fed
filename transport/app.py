"""The Quart (quart-trio) application: the daemon's HTTP front door.

Every route turns a request into a message to an actor or a read on the read pool, and
every failure becomes the JSON error envelope of spec §15.9 in exactly one place
(:func:`_error_response`). Bad input is a 4xx; a 500 means a bug and is logged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from quart import Response, request
from quart.sessions import NullSession, SessionInterface
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from spl.kernel.errors import InvalidRequest, NotFound, PayloadTooLarge, SplError
from spl.transport import routes_admin, routes_records, routes_sync, routes_threads
from spl.transport.auth import ANONYMOUS_ADMIN, presented_token
from spl.transport.services import Services

__all__ = ["create_app", "json_response"]

log = logging.getLogger("spl.http")

# Routes anyone may call, even with auth on (spec §6): health and discovery.
OPEN_ROUTES = {"/health", "/.well-known/syncropel", "/v1/identity"}


def json_response(payload: Any, status: int = 200) -> Response:
    body = payload if isinstance(payload, str | bytes) else json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json")


def _loopback_sync_call() -> bool:
    """A federation call (``/v1/sync/*``) arriving on the loopback interface."""
    if not request.path.startswith("/v1/sync/"):
        return False
    remote = (request.remote_addr or "").strip("[]")
    return remote == "::1" or remote.startswith("127.")


def _error_response(error: SplError) -> Response:
    return json_response(error.to_wire(), error.status)


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
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_body_bytes
    app.config["SPL"] = services
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = True
    # The SDK does not URL-encode threads: '//' must be a 404 JSON, not a 308 HTML redirect.
    app.url_map.merge_slashes = False
    app.session_interface = NoSessions()  # type: ignore[assignment]

    @app.before_request
    async def authenticate() -> None:
        request.caller = ANONYMOUS_ADMIN  # type: ignore[attr-defined]
        if not services.auth_required or request.path in OPEN_ROUTES:
            if request.path in OPEN_ROUTES and services.auth_required:
                token = presented_token(request.headers)
                if token:
                    request.caller = services.tokens.authenticate(token)  # type: ignore[attr-defined]
                else:
                    from spl.transport.auth import ANONYMOUS

                    request.caller = ANONYMOUS  # type: ignore[attr-defined]
            return
        token = presented_token(request.headers)
        if not token and services.trust_loopback_sync and _loopback_sync_call():
            return  # same-machine federation (seed 002 walk-through): the local operator
        request.caller = services.tokens.authenticate(token)  # type: ignore[attr-defined]

    @app.after_request
    async def cors(response: Response) -> Response:
        response.headers.setdefault("access-control-allow-origin", "*")
        return response

    @app.errorhandler(SplError)
    async def spl_error(error: SplError) -> Response:
        return _error_response(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 404:
            return _error_response(
                NotFound(
                    f"no route for {request.method} {request.path}; see docs/api.md for the routes",
                    code="ROUTE_NOT_FOUND",
                )
            )
        if status == 405:
            return _error_response(
                InvalidRequest(
                    f"{request.method} is not allowed on {request.path}", code="METHOD_NOT_ALLOWED", status=405
                )
            )
        if status == 413:
            limit = services.config.max_body_bytes
            return _error_response(
                PayloadTooLarge(
                    f"request body is larger than {limit} bytes; send smaller records (serve.max_body_bytes)"
                )
            )
        if status < 500:
            return _error_response(
                InvalidRequest(error.description or "bad request", code="BAD_REQUEST", status=status)
            )
        return _error_response(SplError("internal error; see the daemon log"))

    @app.errorhandler(Exception)
    async def crash(error: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(SplError("internal error; see the daemon log"))

    routes_records.register(app, services)
    routes_threads.register(app, services)
    routes_admin.register(app, services)
    routes_sync.register(app, services)
    return app
