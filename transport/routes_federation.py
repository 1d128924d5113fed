"""Federation pair routes: the handshake a peer calls, the operator's pair lifecycle, AITL decisions, consent grants.

Thin: each route checks scopes and the body's shape and hands the rest to
:class:`spl.actors.federation_pairs.FederationPairs` (docs/federation-pairs.md is the contract).

The four handshake routes (``/v1/federation/pair``, ``…/pair/poll``, ``…/pair/notify``, ``…/pair/moved``) take
no bearer token: the signed document is the authentication (spec §8.3, §15.19), checked before anything is
stored. Their bodies are bounded far below ``serve.max_body_bytes``: a handshake document is a few KiB.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from spl.core.errors import InvalidRequest, Unavailable
from spl.core.text import printable
from spl.core.wire import parse_json
from spl.store import queries
from spl.transport.auth import require
from spl.transport.context import caller, services
from spl.transport.requests import json_body
from spl.transport.responses import json_response, with_rfc3339_times

__all__ = ["HANDSHAKE_ROUTES", "blueprint"]

blueprint = Blueprint("federation", __name__)

HANDSHAKE_ROUTES = frozenset(
    {"/v1/federation/pair", "/v1/federation/pair/poll", "/v1/federation/pair/notify", "/v1/federation/pair/moved"}
)
MAX_HANDSHAKE_BODY = 64 * 1024
OUT_LAG_CAP = 10_000


def pairs() -> Any:
    federation = services().federation
    if federation is None or federation.fed is None:
        raise Unavailable("federation is starting; retry in a moment")
    return federation.fed


async def _handshake_body() -> Any:
    return await json_body(MAX_HANDSHAKE_BODY)


async def _optional_body() -> dict[str, Any]:
    """A lifecycle command's optional JSON object (``{}`` when there is no body)."""
    raw = await request.get_data(cache=False)
    if not raw:
        return {}
    if len(raw) > MAX_HANDSHAKE_BODY:
        raise InvalidRequest("body too large for this command", code="INVALID_PARAMETER")
    payload = parse_json(raw if isinstance(raw, bytes) else raw.encode())
    if not isinstance(payload, dict):
        raise InvalidRequest("send a JSON object", code="INVALID_PARAMETER")
    return payload


def _reason(payload: dict[str, Any]) -> str:
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 256:
        raise InvalidRequest("reason must be text of at most 256 characters", code="INVALID_PARAMETER")
    return printable(reason, 256)


# -- the handshake (open routes) -------------------------------------------------------------------------


@blueprint.post("/v1/federation/pair")
async def pair_request() -> Response:
    status, answer = await pairs().on_pair_request(await _handshake_body())
    return json_response(answer, status)


@blueprint.post("/v1/federation/pair/poll")
async def pair_poll() -> Response:
    status, answer = await pairs().on_poll(await _handshake_body())
    return json_response(answer, status)


@blueprint.post("/v1/federation/pair/notify")
async def pair_notify() -> Response:
    return json_response(await pairs().on_notice(await _handshake_body()))


@blueprint.post("/v1/federation/pair/moved")
async def pair_moved() -> Response:
    """A pair's peer now answers at another endpoint (signed ``endpoint_moved``): 200 with our signed
    ``endpoint_moved_ack`` once the pair points there, 409 ``DUPLICATE_STEWARD`` while the old URL still answers."""
    return json_response(await pairs().on_endpoint_moved(await _handshake_body()))


# -- the operator's pairs ----------------------------------------------------------------------------------


@blueprint.get("/v1/federation/pairs")
async def list_pairs() -> Response:
    require(caller(), "federation:manage")
    return json_response(with_rfc3339_times({"object": "list", "data": pairs().listing()}))


@blueprint.post("/v1/federation/pairs")
async def create_pair() -> Response:
    require(caller(), "federation:manage")
    payload = await json_body(MAX_HANDSHAKE_BODY)
    if not isinstance(payload, dict):
        raise InvalidRequest('send {"url": "<peer base URL>"}', code="INVALID_PAIR_REQUEST")
    status, answer = await pairs().initiate(payload)
    return json_response(with_rfc3339_times(answer), status)


@blueprint.get("/v1/federation/pairs/<pair_id>")
async def show_pair(pair_id: str) -> Response:
    """One pair; ``lag.out_records`` is what the peer has not pulled yet (counted before consent filters it, up
    to 10,000), known once the peer has pulled since this daemon started (null until then)."""
    require(caller(), "federation:manage")
    answer = pairs().describe(pair_id)
    served = answer["cursors"]["serve"]
    out = None
    if served:
        namespaces = sorted({mapping["local"] for mapping in answer["maps"]})
        out = await services().read(
            queries.scoped_pending, namespaces=namespaces, thread=None, after=served, cap=OUT_LAG_CAP
        )
    answer["lag"]["out_records"] = out
    return json_response(with_rfc3339_times(answer))


@blueprint.patch("/v1/federation/pairs/<pair_id>")
async def update_pair(pair_id: str) -> Response:
    require(caller(), "federation:manage")
    payload = await json_body(MAX_HANDSHAKE_BODY)
    if not isinstance(payload, dict):
        raise InvalidRequest(
            "send a JSON object with mode, poll_interval, thread_allow or maps", code="INVALID_PAIR_UPDATE"
        )
    return json_response(with_rfc3339_times(await pairs().update(pair_id, payload)))


@blueprint.post("/v1/federation/pairs/<pair_id>/<action>")
async def pair_action(pair_id: str, action: str) -> Response:
    require(caller(), "federation:manage")
    fed = pairs()
    payload = await _optional_body()
    if action == "pause":
        return json_response(with_rfc3339_times(await fed.pause(pair_id)))
    if action == "resume":
        return json_response(with_rfc3339_times(await fed.resume(pair_id)))
    if action == "refresh":
        return json_response(with_rfc3339_times(await fed.refresh(pair_id)))
    if action == "revoke":
        return json_response(with_rfc3339_times(await fed.revoke(pair_id, _reason(payload))))
    if action == "sync":
        return json_response(with_rfc3339_times(await fed.sync(pair_id)))
    raise InvalidRequest(
        "unknown action; use pause, resume, refresh, revoke or sync", code="INVALID_PARAMETER", status=404
    )


# -- AITL decisions ------------------------------------------------------------------------------------------


@blueprint.get("/v1/aitl")
async def aitl_list() -> Response:
    require(caller(), "federation:manage")
    return json_response(with_rfc3339_times({"object": "list", "data": pairs().pending()}))


@blueprint.post("/v1/aitl/<pair_id>/<decision>")
async def aitl_decide(pair_id: str, decision: str) -> Response:
    require(caller(), "federation:manage")
    payload = await _optional_body()
    if decision == "approve":
        return json_response(with_rfc3339_times(await pairs().approve(pair_id)))
    if decision == "reject":
        return json_response(with_rfc3339_times(await pairs().reject(pair_id, _reason(payload))))
    raise InvalidRequest("decide with approve or reject", code="INVALID_PARAMETER", status=404)


# -- consent grants --------------------------------------------------------------------------------------------


@blueprint.get("/v1/consent/grants")
async def grants() -> Response:
    require(caller(), "federation:manage")
    return json_response(with_rfc3339_times({"object": "list", "data": pairs().grants()}))


@blueprint.post("/v1/consent/grants")
async def create_grant() -> Response:
    require(caller(), "federation:manage")
    return json_response(with_rfc3339_times(await pairs().grant(await json_body(MAX_HANDSHAKE_BODY))), 201)


@blueprint.get("/v1/consent/grants/<grant_id>")
async def show_grant(grant_id: str) -> Response:
    require(caller(), "federation:manage")
    return json_response(with_rfc3339_times(pairs().grant_view(grant_id)))


@blueprint.delete("/v1/consent/grants/<grant_id>")
async def revoke_grant(grant_id: str) -> Response:
    require(caller(), "federation:manage")
    return json_response(with_rfc3339_times(await pairs().revoke_grant(grant_id)))
