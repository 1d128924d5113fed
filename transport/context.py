"""Per-request access to what the daemon hands the HTTP front door.

Route handlers are module-level functions on Blueprints, so they can be imported and read on their
own; the running application's :class:`Services` is found through Quart's app context rather than a
closure.
"""

from __future__ import annotations

from typing import cast

from quart import Request, current_app, request
from quart.globals import request_ctx

from spl.transport.auth import Caller
from spl.transport.services import Services

__all__ = ["SERVICES_KEY", "caller", "current_request", "services"]

SERVICES_KEY = "SPL"


def services() -> Services:
    """The :class:`Services` of the application serving the current request."""
    return cast(Services, current_app.config[SERVICES_KEY])


def current_request() -> Request:
    """The request being served, as the object itself rather than Quart's ``request`` proxy.

    Every attribute read through the proxy looks the request up in its context variable again; code
    that reads several (the gates, the emit route) takes the object once. It must not outlive the request.
    """
    return request_ctx.request


def caller() -> Caller:
    """Who is calling, as the gatekeeper established it before the route ran."""
    return cast(Caller, request.caller)  # type: ignore[attr-defined]
