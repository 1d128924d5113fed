"""Federation pair routes: create, list, show, change, pause, resume, kick and remove sync pairs; sync health.

Thin: each route checks scopes and the body's shape and hands the rest to the federation manager
(``actors/federation.py``), which owns the pairs. The data routes (change feed, push) are ``routes_feed.py``.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from spl.core.errors import InvalidRequest, Unavailable
from spl.transport.auth import require, require_any
from spl.transport.context import caller, services
from spl.transport.requests import json_body
from spl.transport.responses import json_response, with_rfc3339_times

__all__ = ["blueprint"]

blueprint = Blueprint("sync", __name__)


def manager() -> Any:
    if services().federation is None:
        raise Unavailable("federation is starting; retry in a moment")
    return services().federation


@blueprint.get("/v1/sync/pairs")
async def list_pairs() -> Response:
    require_any(caller(), ("federation:manage", "records:read"))
    return json_response(with_rfc3339_times({"object": "list", "data": manager().listing()}))


@blueprint.post("/v1/sync/pairs")
async def create_pair() -> Response:
    require(request.caller, "federation:manage")  # type: ignore[attr-defined]
    payload = await json_body(services().config.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequest('send {"peer_did": …, "peer_url": …, "thread_id": …}')
    return json_response(with_rfc3339_times(await manager().create(payload)), 201)


@blueprint.get("/v1/sync/pairs/<pair_id>")
async def show_pair(pair_id: str) -> Response:
    require_any(caller(), ("federation:manage", "records:read"))
    return json_response(with_rfc3339_times(manager().describe(pair_id)))


@blueprint.patch("/v1/sync/pairs/<pair_id>")
async def update_pair(pair_id: str) -> Response:
    """Change a pair's ``mode`` and/or ``poll_interval`` (recorded, so it survives a restart)."""
    require(request.caller, "federation:manage")  # type: ignore[attr-defined]
    payload = await json_body(services().config.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequest('send {"mode": …} and/or {"poll_interval": <seconds>}', code="INVALID_PAIR_UPDATE")
    return json_response(with_rfc3339_times(await manager().update(pair_id, payload)))


@blueprint.delete("/v1/sync/pairs/<pair_id>")
async def remove_pair(pair_id: str) -> Response:
    require(request.caller, "federation:manage")  # type: ignore[attr-defined]
    return json_response(with_rfc3339_times(await manager().remove(pair_id)))


@blueprint.post("/v1/sync/pairs/<pair_id>/pause")
async def pause_pair(pair_id: str) -> Response:
    require(request.caller, "federation:manage")  # type: ignore[attr-defined]
    return json_response(with_rfc3339_times(await manager().pause(pair_id)))


@blueprint.post("/v1/sync/pairs/<pair_id>/resume")
async def resume_pair(pair_id: str) -> Response:
    require(request.caller, "federation:manage")  # type: ignore[attr-defined]
    return json_response(with_rfc3339_times(await manager().resume(pair_id)))


@blueprint.post("/v1/sync/pairs/<pair_id>/kick")
async def kick_pair(pair_id: str) -> Response:
    require(request.caller, "federation:manage")  # type: ignore[attr-defined]
    wait = request.args.get("wait") in ("1", "true", "yes")
    return json_response(with_rfc3339_times(await manager().kick(pair_id, wait=wait)))


@blueprint.get("/v1/sync/pairs/<pair_id>/stats")
async def pair_stats(pair_id: str) -> Response:
    require_any(caller(), ("federation:manage", "records:read"))
    return json_response(with_rfc3339_times(manager().stats(pair_id)))


@blueprint.get("/v1/sync/health")
async def sync_health() -> Response:
    require_any(caller(), ("federation:manage", "records:read"))
    return json_response(with_rfc3339_times(manager().health()))
