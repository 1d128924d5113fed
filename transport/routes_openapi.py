"""Routes of issue 13/14 (openapi): placeholder blueprint, registered in transport/app.py."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["OPEN_ROUTES", "blueprint"]

blueprint = Blueprint("openapi", __name__)

# Paths of this module answered without a token even when auth is on (transport/app.py gate 4).
OPEN_ROUTES: frozenset[str] = frozenset()
