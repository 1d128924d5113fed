"""Building JSON responses: one helper every route and the error handlers share.

Kept apart from ``app.py`` so route modules never import the application that imports them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from quart import Response

from spl.core.errors import SplError
from spl.core.manifest import rfc3339

__all__ = ["error_response", "json_response", "with_rfc3339_times"]


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response; ``payload`` may already be JSON text (spliced stored records) or a plain value."""
    body = payload if isinstance(payload, str | bytes) else json.dumps(payload, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json")


def error_response(error: SplError) -> Response:
    """The spec §15.9 error envelope with the error's HTTP status."""
    return json_response(error.to_wire(), error.status)


# Keys whose value is a document another party signed or a peer reads back as it is (a manifest, a registration
# record): a view passes them through untouched, whatever their fields are called.
VERBATIM_KEYS = frozenset({"peer_manifest", "federation_manifest", "capabilities_manifest", "registration", "record"})


def _is_time_key(key: object) -> bool:
    return isinstance(key, str) and (key == "at" or key.endswith("_at"))


def _as_rfc3339(value: float) -> str | float:
    try:
        return rfc3339(value)
    except (OverflowError, OSError, ValueError):  # a time no calendar holds: show the number rather than fail
        return value


def with_rfc3339_times(view: Any) -> Any:
    """``view`` with every wall-clock time as RFC 3339 UTC text (``2026-11-30T23:35:45Z``).

    The actors and the store keep times as seconds since the epoch (cheap to compare and do arithmetic on);
    operators and clients read text a person and every JSON library understand. A time is a number under a key
    named ``at`` or ending in ``_at``; durations (``uptime_secs``, ``lag_seconds``) keep their numbers, and text
    and nulls pass through. Only operator views go through here, never a signed document or one a peer reads
    back (:data:`VERBATIM_KEYS` are left as they are even inside a view). Returns a new value; ``view`` is not
    changed.
    """
    if isinstance(view, Mapping):
        out: dict[str, Any] = {}
        for key, value in view.items():
            if key in VERBATIM_KEYS:
                out[key] = value
            elif _is_time_key(key) and isinstance(value, int | float) and not isinstance(value, bool):
                out[key] = _as_rfc3339(value)
            else:
                out[key] = with_rfc3339_times(value)
        return out
    if isinstance(view, list | tuple):
        return [with_rfc3339_times(item) for item in view]
    return view
