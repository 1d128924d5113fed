"""Instance routes: health, identity, discovery, namespaces, tokens and status."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, cast

import trio
from quart import Blueprint, Response, current_app, request

from spl.core import tokens
from spl.core.errors import NotFound
from spl.core.manifest import capabilities_manifest
from spl.core.rotation import own_keys
from spl.core.tokens import TokenInfo
from spl.core.wire import decode_namespace_create, decode_token_mint
from spl.store.ingest import namespace_registry
from spl.transport.auth import require
from spl.transport.context import services
from spl.transport.metrics import METRICS_KEY, Metrics
from spl.transport.requests import body_bytes
from spl.transport.responses import json_response, with_rfc3339_times
from spl.transport.services import Services

__all__ = ["blueprint"]

blueprint = Blueprint("admin", __name__)

log = logging.getLogger("spl.http")


def _federation_summary(services: Services) -> dict[str, Any]:
    if services.federation is None:
        return {"pairs_total": 0}
    by_state: dict[str, int] = {}
    for view in services.federation.pairs.values():
        by_state[view.status.state] = by_state.get(view.status.state, 0) + 1
    return {"pairs_total": len(services.federation.pairs), "pairs_by_state": by_state}


@blueprint.get("/health")
async def health() -> Response:
    """200 ``ok`` while everything runs; 503 ``degraded`` or ``stopping``, with the reasons.

    Load balancers and ``spl status`` read the status code, so it must not say 200 while
    a child is down or the store refuses writes (``services().problems``), nor while the
    daemon is draining for a stop.
    """
    try:
        problems = [str(problem) for problem in services().problems()]
    except Exception:  # the health route itself must never fail
        log.exception("services().problems() failed")
        problems = ["health check failed; see the daemon log"]
    stopping = services().stopping.is_set()
    status = "stopping" if stopping else "degraded" if problems else "ok"
    return json_response(
        {
            "status": status,
            "problems": problems,
            "service": "spl",
            "version": capabilities_manifest(auth_required=services().auth_required)["daemon"]["version"],
            "instance_did": services().identity.did,
            "sequence": services().head_sequence(),
            "uptime_secs": round(time.time() - services().started_at, 3),
            "auth_required": services().auth_required,
            "federation": _federation_summary(services()),
            # The kill switch: a frozen instance is healthy (200) but refuses writes; say so (no reason: open route).
            "fleet": {"level": services().fleet().level},
        },
        200 if status == "ok" else 503,
    )


@blueprint.get("/v1/identity")
async def identity() -> Response:
    caller = request.caller  # type: ignore[attr-defined]
    token = caller.token
    return json_response(
        {
            "object": "identity",
            "did": services().identity.did,
            "actor": services().identity.did,
            "display_name": f"spl instance {services().identity.fingerprint[:8]}",
            "method": "did:key",
            "key_fingerprint": services().identity.fingerprint,
            "endpoint_url": services().endpoint,
            "is_authenticated": caller.authenticated,
            "scopes": sorted(caller.scopes) if caller.authenticated or not services().auth_required else [],
            "service_account_id": token.sa_id if token else None,
        }
    )


@blueprint.get("/v1/capabilities")
async def capabilities() -> Response:
    return json_response(capabilities_manifest(auth_required=services().auth_required))


@blueprint.get("/.well-known/syncropel")
async def well_known() -> Response:
    return json_response(
        {
            "object": "discovery",
            "did": services().identity.did,
            "capabilities_manifest": capabilities_manifest(auth_required=services().auth_required),
            "federation_manifest": services().manifest,
        }
    )


def _wall_clock_retries(tree: Any, offset: float) -> Any:
    """The supervision snapshot with each ``next_retry_at`` moved from trio's clock to the wall clock.

    Supervisors schedule restarts on trio's monotonic clock, which means nothing outside the process;
    ``offset`` is wall time minus trio time, read once for the whole tree.
    """
    if isinstance(tree, dict):
        moved = {key: _wall_clock_retries(value, offset) for key, value in tree.items()}
        retry = tree.get("next_retry_at")
        if isinstance(retry, int | float) and not isinstance(retry, bool):
            moved["next_retry_at"] = retry + offset
        return moved
    if isinstance(tree, list):
        return [_wall_clock_retries(item, offset) for item in tree]
    return tree


@blueprint.get("/v1/status")
async def status() -> Response:
    require(request.caller, "config:read")  # type: ignore[attr-defined]
    offset = time.time() - trio.current_time()
    view = with_rfc3339_times(
        {
            "object": "status",
            "instance_did": services().identity.did,
            "endpoint_url": services().endpoint,
            "bind_host": services().bind_host,
            "home": str(services().home_root),
            "auth_required": services().auth_required,
            "sequence": services().head_sequence(),
            "uptime_secs": round(time.time() - services().started_at, 3),
            "fleet": services().fleet().to_wire(),  # the kill switch (spl kill / spl unkill)
            "supervision": _wall_clock_retries(services().snapshot(), offset),
            "streams": services().hub.stats(),
            # Where the token-free /metrics listener serves ([metrics] port; [] when none): port 0 shows its port.
            "metrics_listener": list(cast(Metrics, current_app.config[METRICS_KEY]).listener_urls),
            "federation": {
                "pairs": services().federation.listing() if services().federation else [],
                "health": services().federation.health() if services().federation else None,
            },
        }
    )
    return json_response(view)


# -- namespaces ----------------------------------------------------------------------


@blueprint.get("/v1/namespaces")
async def list_namespaces() -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    registry = await services().read(namespace_registry, own_keys(services().identity))
    return json_response({"object": "list", "data": [entry.to_wire() for entry in registry.listing()]})


@blueprint.get("/v1/namespaces/<path:namespace>")
async def show_namespace(namespace: str) -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    registry = await services().read(namespace_registry, own_keys(services().identity))
    entry = registry.entries.get(namespace)
    if entry is None:
        raise NotFound(f"namespace {namespace!r} is not registered; create it with `spl namespace create {namespace}`")
    return json_response(entry.to_wire())


@blueprint.post("/v1/namespaces")
async def create_namespace() -> Response:
    """Register a namespace. The store writer decides (it holds the registry and commits one command at
    a time), so of two concurrent creates of one namespace exactly one is 201 and the other 409."""
    require(request.caller, "config:write")  # type: ignore[attr-defined]
    namespace, description = decode_namespace_create(await body_bytes(services().config.max_body_bytes))
    accepted = await services().local.create_namespace(namespace, description)
    entry = {
        "object": "namespace",
        "id": namespace,
        "status": "active",
        "description": description,
        "record_id": accepted.record.id,
    }
    return json_response(entry, 201)


# -- tokens --------------------------------------------------------------------------


@blueprint.get("/v1/tokens")
async def list_tokens() -> Response:
    require(request.caller, "admin")  # type: ignore[attr-defined]
    return json_response(
        with_rfc3339_times({"object": "list", "data": [info.to_wire() for info in services().tokens.listing()]})
    )


@blueprint.post("/v1/tokens")
async def mint_token() -> Response:
    require(request.caller, "admin")  # type: ignore[attr-defined]
    wanted = decode_token_mint(await body_bytes(services().config.max_body_bytes))
    minted = tokens.mint(wanted.env)
    info = replace(
        TokenInfo.of_minted(minted, wanted.label, wanted.scopes, time.time()), target_namespace=wanted.target_namespace
    )
    await services().writer.mint_token(info)
    services().tokens.remember(info)  # only once durable: a token that works survives a restart
    return json_response(with_rfc3339_times({**info.to_wire(), "token": minted.plaintext}), 201)


@blueprint.delete("/v1/tokens/<token_id>")
async def revoke(token_id: str) -> Response:
    require(request.caller, "admin")  # type: ignore[attr-defined]
    if services().tokens.get(token_id) is None:
        raise NotFound(f"no token {token_id!r}; list them with `spl token list`")
    now = time.time()
    await services().writer.revoke_token(token_id, now)
    services().tokens.mark_revoked(token_id, now)
    return json_response({"object": "token", "token_id": token_id, "status": "revoked"})
