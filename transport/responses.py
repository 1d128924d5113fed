"""Building JSON responses: one helper every route and the error handlers share.

Kept apart from ``app.py`` so route modules never import the application that imports them.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Response

from spl.core.errors import SplError

__all__ = ["error_response", "json_response"]


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response; ``payload`` may already be JSON text (spliced stored records) or a plain value."""
    body = payload if isinstance(payload, str | bytes) else json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json")


def error_response(error: SplError) -> Response:
    """The spec §15.9 error envelope with the error's HTTP status."""
    return json_response(error.to_wire(), error.status)
