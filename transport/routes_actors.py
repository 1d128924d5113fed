"""``GET /v1/actors``: who takes part in this instance's threads (seed 004's ``spl actor list``).

Today every actor is one seen as a participant of some thread; the instance itself is always listed (it signs
every record it accepts and owns the reserved threads). The actor registry (``th_actor_registry``: display
names, categories, statuses) is issue 12's; until it lands every participant is listed as ``unregistered``.
"""

from __future__ import annotations

from quart import Blueprint, Response

from spl.store import queries
from spl.transport.auth import require
from spl.transport.context import caller, services
from spl.transport.responses import json_response

__all__ = ["blueprint"]

blueprint = Blueprint("actors", __name__)


@blueprint.get("/v1/actors")
async def list_actors() -> Response:
    require(caller(), "records:read")
    svc = services()
    instance = svc.identity.did
    seen = await svc.read(queries.actor_listing)
    if not any(entry["actor"] == instance for entry in seen):
        seen.append({"actor": instance, "record_count": 0, "thread_count": 0, "role": None})
    data = [
        {
            "object": "actor",
            "did": entry["actor"],
            "kind": "instance" if entry["actor"] == instance else "participant",
            "status": "instance" if entry["actor"] == instance else "unregistered",
            "record_count": entry["record_count"],
            "thread_count": entry["thread_count"],
            "role": entry["role"],
        }
        for entry in sorted(seen, key=lambda entry: (entry["actor"] != instance, entry["actor"]))
    ]
    return json_response({"object": "list", "data": data, "truncated": len(seen) >= queries.MAX_ACTORS})
