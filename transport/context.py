"""Per-request access to what the daemon hands the HTTP front door.

Route handlers are module-level functions on Blueprints, so they can be imported and read on their
own; the running application's :class:`Services` is found through Quart's app context rather than a
closure.
"""

from __future__ import annotations

from typing import cast

from quart import current_app, request

from spl.transport.auth import Caller
from spl.transport.services import Services

__all__ = ["SERVICES_KEY", "caller", "services"]

SERVICES_KEY = "SPL"


def services() -> Services:
    """The :class:`Services` of the application serving the current request."""
    return cast(Services, current_app.config[SERVICES_KEY])


def caller() -> Caller:
    """Who is calling, as the gatekeeper established it before the route ran."""
    return cast(Caller, request.caller)  # type: ignore[attr-defined]
