"""``GET /openapi.json``: the API contract (OpenAPI 3.1), generated from this application's route table.

Open (no token, even with auth on), like the route table in docs/api.md: it says which routes exist and what they
take, nothing about what this instance holds. Built on the first request and kept for the application's life: the
route table does not change once the app serves.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Blueprint, Response, current_app

from spl.transport import routes_discovery, routes_federation, routes_pairing, routes_ui
from spl.transport.openapi import build_document
from spl.transport.responses import json_response

__all__ = ["OPEN_ROUTES", "blueprint", "document_for", "is_open_path"]

blueprint = Blueprint("openapi", __name__)

# Paths of this module answered without a token even when auth is on (transport/app.py gate 4).
OPEN_ROUTES: frozenset[str] = frozenset({"/openapi.json"})

DOCUMENT_KEY = "SPL_OPENAPI_JSON"

# The routes transport/app.py answers without a token (its OPEN_ROUTES and OPEN_PREFIX, gate 4), from the same
# constants. app.py imports this module, so this module cannot import app.py (tests/test_layers.py forbids the
# cycle); tests/transport/test_openapi.py checks that the two agree on every route.
_OPEN_PATHS = (
    frozenset({"/health", "/v1/identity"})
    | routes_federation.HANDSHAKE_ROUTES
    | OPEN_ROUTES
    | routes_ui.OPEN_ROUTES
    | routes_discovery.OPEN_ROUTES
    | routes_pairing.OPEN_ROUTES
)
_OPEN_PREFIX = "/.well-known/"


def is_open_path(path: str) -> bool:
    """Whether ``path`` (a concrete path or a route template) is answered without a token when auth is on."""
    return path in _OPEN_PATHS or path.startswith(_OPEN_PREFIX)


def document_for(app: Any) -> str:
    """The application's OpenAPI document as JSON text, generated once per application."""
    cached = app.config.get(DOCUMENT_KEY)
    if cached is None:
        routes = [(rule.rule, frozenset(rule.methods or ()), rule.endpoint) for rule in app.url_map.iter_rules()]
        cached = json.dumps(build_document(routes, is_open_path), separators=(",", ":"))
        app.config[DOCUMENT_KEY] = cached
    return str(cached)


@blueprint.get("/openapi.json")
async def openapi() -> Response:
    return json_response(document_for(current_app))
