"""The actor routes: who takes part in this instance's threads, and the actor registry (``th_actor_registry``).

* ``GET /v1/actors`` (``records:read``): seed 004's ``spl actor list``. Registered actors with their display name,
  category and status, and every DID seen as a participant of some thread that is not registered, marked
  ``unregistered``; the instance first (it signs every record it accepts and opens the reserved threads).
* ``GET /v1/actors/{did}`` (``records:read``): one actor's registration and participation; 404 for a DID that is
  neither registered nor seen.
* ``POST /v1/actors`` (``config:write``): register a DID, or update its registration (201 new, 200 updated). The
  only way onto ``th_actor_registry``: a ``LEARN`` signed by the instance (``LocalRecords.record_system``).

The registry is folded once (``Services.actor_registry``: when the app starts, or on first use) and each committed
registration is applied to it at once, so every read is a dict look-up. A fold is order-free (the highest
sequence wins, ``spl.core.actor_registry``), so a registration applied while a reload runs is never lost.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from typing import Any

import apsw
from quart import Blueprint, Response

from spl.core.actor_registry import (
    ACTOR_REGISTRY_THREAD,
    ActorRegistry,
    check_did,
    registration_body,
    registration_request,
)
from spl.core.errors import Conflict, NotFound, SplError
from spl.core.rotation import own_keys
from spl.store import queries
from spl.transport.auth import require
from spl.transport.context import caller, services
from spl.transport.requests import json_body
from spl.transport.responses import json_response
from spl.transport.services import Services

__all__ = ["MAX_REGISTERED", "actor_registry", "blueprint", "reload_actor_registry"]

blueprint = Blueprint("actors", __name__)

log = logging.getLogger("spl.http")

# The registry holds at most this many DIDs (one answer of GET /v1/actors lists them all); a new DID beyond it is
# refused, an update of a registered one never is. A config:write token cannot grow the daemon's memory without end.
MAX_REGISTERED = queries.MAX_ACTORS


def _fold(connection: apsw.Connection, own_did: str, keys: Collection[str] = ()) -> ActorRegistry:
    """The registry as the store holds it; registrations signed by any key of the instance's chain count."""
    return ActorRegistry.folded(queries.thread_objects(connection, ACTOR_REGISTRY_THREAD), own_did, keys)


async def reload_actor_registry(svc: Services) -> ActorRegistry:
    """Fold the registry from the store again (after an import: it may have brought, or adopted, registrations).

    When the instance DID is unchanged the fresh fold is merged into the one in use rather than replacing it,
    so a registration applied meanwhile stays.
    """
    did = svc.identity.did
    chain = own_keys(svc.identity)
    loaded = await svc.read(_fold, did, frozenset({chain}) if isinstance(chain, str) else chain)
    current = svc.actor_registry
    if current is not None and current.own_did == did:
        for registration in loaded.entries.values():
            current.keep(registration)
        return current
    svc.actor_registry = loaded
    return loaded


async def actor_registry(svc: Services) -> ActorRegistry:
    """The registry in use, folded first when it is not loaded yet (or was folded for another DID)."""
    current = svc.actor_registry
    if current is not None and current.own_did == svc.identity.did:
        return current
    return await reload_actor_registry(svc)


@blueprint.before_app_serving
async def _load_registry() -> None:
    """Fold the registry when the daemon starts serving; if that fails, the first request that needs it retries."""
    try:
        await reload_actor_registry(services())
    except (SplError, apsw.Error, OSError):
        log.exception("could not load the actor registry at start; it is loaded on first use")


def _instance_entry(svc: Services) -> dict[str, Any]:
    """The instance as an actor when it has no registration of its own: what ``/v1/identity`` says of it."""
    return {
        "display_name": f"spl instance {svc.identity.fingerprint[:8]}",
        "category": "instance",
        "status": "instance",
    }


def _actor(svc: Services, did: str, registry: ActorRegistry, participation: dict[str, Any] | None) -> dict[str, Any]:
    instance = did == svc.identity.did
    registration = registry.get(did)
    if registration is not None:
        fields: dict[str, Any] = {
            "display_name": registration.display_name,
            "category": registration.category,
            "status": registration.status,
        }
    elif instance:
        fields = _instance_entry(svc)
    else:
        fields = {"display_name": None, "category": None, "status": "unregistered"}
    return {
        "object": "actor",
        "did": did,
        "kind": "instance" if instance else "participant" if participation is not None else "registered",
        "registered": registration is not None,
        **fields,
        "record_count": participation["record_count"] if participation else 0,
        "thread_count": participation["thread_count"] if participation else 0,
        "role": participation["role"] if participation else None,
        "registration": registration.to_wire() if registration is not None else None,
    }


@blueprint.get("/v1/actors")
async def list_actors() -> Response:
    require(caller(), "records:read")
    svc = services()
    instance = svc.identity.did
    registry = await actor_registry(svc)
    seen = await svc.read(queries.actor_listing)
    participation = {entry["actor"]: entry for entry in seen}
    dids = {instance, *participation, *registry.entries}
    data = [
        _actor(svc, did, registry, participation.get(did))
        for did in sorted(dids, key=lambda did: (did != instance, did))
    ]
    return json_response({"object": "list", "data": data, "truncated": len(seen) >= queries.MAX_ACTORS})


@blueprint.get("/v1/actors/<did>")
async def show_actor(did: str) -> Response:
    require(caller(), "records:read")
    svc = services()
    check_did(did)
    registry = await actor_registry(svc)
    seen = await svc.read(queries.actor_listing, did=did, limit=1)
    participation = seen[0] if seen else None
    if participation is None and registry.get(did) is None and did != svc.identity.did:
        raise NotFound(
            f"no actor {did} on this instance: it is not registered and took part in no thread; "
            "list them with `spl actor list`, or register it with `spl actor register`"
        )
    return json_response(_actor(svc, did, registry, participation))


@blueprint.post("/v1/actors")
async def register_actor() -> Response:
    """Register a DID or update its registration: one ``LEARN`` on ``th_actor_registry``, signed by the instance.

    201 when the DID was not registered, 200 when this updated it (the same fields again are an update too: the
    latest registration wins). Two concurrent first registrations of one DID may both answer 201; the one
    committed last is the registration.
    """
    require(caller(), "config:write")
    svc = services()
    did, display_name, category, status = registration_request(await json_body(svc.config.max_body_bytes))
    registry = await actor_registry(svc)
    created = registry.get(did) is None
    if created and len(registry.entries) >= MAX_REGISTERED:
        raise Conflict(
            f"this instance already has {MAX_REGISTERED} registered actors, the most it keeps; update or retire "
            "a registered one instead (`spl actor register DID --status retired`)",
            code="ACTOR_REGISTRY_FULL",
        )
    accepted = await svc.local.record_system(
        ACTOR_REGISTRY_THREAD, registration_body(did, display_name, category, status)
    )
    registry = await actor_registry(svc)  # the same one, unless an import swapped it meanwhile
    registry.apply(json.loads(accepted.record.json))
    participation = await svc.read(queries.actor_listing, did=did, limit=1)
    answer = _actor(svc, did, registry, participation[0] if participation else None)
    return json_response(answer, 201 if created else 200)
