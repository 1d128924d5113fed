"""Instance routes: health, identity, discovery, namespaces, tokens and status."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from quart import Blueprint, Response, request

from spl.core import tokens as token_kernel
from spl.core.errors import Conflict, InvalidRequest, NotFound, SplError
from spl.core.manifest import capabilities_manifest
from spl.core.namespaces import (
    NAMESPACE_KIND,
    REGISTRY_THREAD,
    NamespaceRegistry,
    ancestors,
    validate_namespace_id,
)
from spl.core.record import validate_envelope
from spl.core.stored import Accepted, Candidate
from spl.store.queries import records_after
from spl.transport.auth import insert_token, new_token_info, require, revoke_token
from spl.transport.context import services
from spl.transport.requests import json_body
from spl.transport.responses import json_response
from spl.transport.services import Services

__all__ = ["blueprint"]

blueprint = Blueprint("admin", __name__)

log = logging.getLogger("spl.http")


def _registry(connection: Any, own_did: str) -> NamespaceRegistry:
    """The namespace registry as the writer folds it (``kernel.ingest.load_writer_state``).

    Only records this instance signed are configuration (spec §15.18): a registry record a
    peer managed to get stored must not show up as a namespace here either.
    """
    registry = NamespaceRegistry()
    after = 0
    while True:
        page = records_after(connection, REGISTRY_THREAD, after, 1000)
        for record in page:
            data = json.loads(record.json)
            if data.get("signer") == own_did:
                registry.apply(data["thread"], data["act"], data["body"], data["id"], data["clock"])
        if len(page) < 1000:
            return registry
        after = page[-1].seq


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


@blueprint.get("/v1/status")
async def status() -> Response:
    require(request.caller, "config:read")  # type: ignore[attr-defined]
    return json_response(
        {
            "object": "status",
            "instance_did": services().identity.did,
            "endpoint_url": services().endpoint,
            "bind_host": services().bind_host,
            "home": str(services().home_root),
            "auth_required": services().auth_required,
            "sequence": services().head_sequence(),
            "uptime_secs": round(time.time() - services().started_at, 3),
            "supervision": services().snapshot(),
            "streams": services().hub.stats(),
            "federation": {
                "pairs": services().federation.listing() if services().federation else [],
                "health": services().federation.health() if services().federation else None,
            },
        }
    )


# -- namespaces ----------------------------------------------------------------------


@blueprint.get("/v1/namespaces")
async def list_namespaces() -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    registry = await services().read(_registry, services().identity.did)
    return json_response({"object": "list", "data": [entry.to_wire() for entry in registry.listing()]})


@blueprint.get("/v1/namespaces/<path:namespace>")
async def show_namespace(namespace: str) -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    registry = await services().read(_registry, services().identity.did)
    entry = registry.entries.get(namespace)
    if entry is None:
        raise NotFound(f"namespace {namespace!r} is not registered; create it with `spl namespace create {namespace}`")
    return json_response(entry.to_wire())


@blueprint.post("/v1/namespaces")
async def create_namespace() -> Response:
    require(request.caller, "config:write")  # type: ignore[attr-defined]
    payload = await json_body(services().config.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequest('send a JSON object such as {"id": "acme/ops", "description": "…"}')
    namespace = payload.get("id", payload.get("namespace"))
    if not isinstance(namespace, str):
        raise InvalidRequest('the namespace id is required: {"id": "acme/ops"}', code="INVALID_NAMESPACE")
    validate_namespace_id(namespace)
    description = payload.get("description", "")
    if not isinstance(description, str):
        raise InvalidRequest("description must be a string")
    registry = await services().read(_registry, services().identity.did)
    if namespace == "default" or registry.is_active(namespace):
        raise Conflict(f"namespace {namespace!r} already exists and is active", code="ALREADY_EXISTS")
    for ancestor in ancestors(namespace)[:-1]:
        if not registry.is_active(ancestor):
            raise InvalidRequest(
                f"parent namespace '{ancestor}' is not active; create it first: spl namespace create {ancestor}",
                code="PARENT_NAMESPACE_MISSING",
            )
    envelope = validate_envelope(
        {
            "act": "LEARN",
            "actor": services().identity.did,
            "thread": REGISTRY_THREAD,
            "clock": time.time_ns() // 1000,
            "body": {
                "kind": NAMESPACE_KIND,
                "_v": 1,
                "namespace_id": namespace,
                "status": "active",
                "description": description,
            },
        }
    )
    candidate = Candidate(envelope, services().identity.did, services().identity.sign_record_id(envelope.id))
    (outcome,) = await services().writer.ingest([candidate])
    if isinstance(outcome, SplError):
        raise outcome
    assert isinstance(outcome, Accepted)
    entry = {
        "object": "namespace",
        "id": namespace,
        "status": "active",
        "description": description,
        "record_id": outcome.record.id,
    }
    return json_response(entry, 201)


# -- tokens --------------------------------------------------------------------------


@blueprint.get("/v1/tokens")
async def list_tokens() -> Response:
    require(request.caller, "admin")  # type: ignore[attr-defined]
    return json_response({"object": "list", "data": [info.to_wire() for info in services().tokens.listing()]})


@blueprint.post("/v1/tokens")
async def mint_token() -> Response:
    require(request.caller, "admin")  # type: ignore[attr-defined]
    payload = await json_body(services().config.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequest('send a JSON object such as {"scopes": ["records:read"], "label": "ci"}')
    scopes = payload.get("scopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise InvalidRequest(
            f"scopes must be a non-empty list drawn from: {', '.join(token_kernel.SCOPES)}", code="INVALID_SCOPES"
        )
    unknown = token_kernel.unknown_scopes(scopes)
    if unknown:
        raise InvalidRequest(
            f"unknown scope(s) {', '.join(unknown)}; choose from: {', '.join(token_kernel.SCOPES)}",
            code="INVALID_SCOPES",
        )
    label = token_kernel.validate_label(payload.get("label", ""))
    env = token_kernel.validate_env(payload.get("env", "local"))
    minted = token_kernel.mint(env)
    info = new_token_info(minted, label, scopes)
    await services().writer.transact(lambda connection: insert_token(connection, info))
    services().tokens.remember(info)
    return json_response({**info.to_wire(), "token": minted.plaintext}, 201)


@blueprint.delete("/v1/tokens/<token_id>")
async def revoke(token_id: str) -> Response:
    require(request.caller, "admin")  # type: ignore[attr-defined]
    info = services().tokens.get(token_id)
    if info is None:
        raise NotFound(f"no token {token_id!r}; list them with `spl token list`")
    now = time.time()
    await services().writer.transact(lambda connection: revoke_token(connection, token_id, now))
    services().tokens.forget(token_id, now)
    return json_response({"object": "token", "token_id": token_id, "status": "revoked"})
