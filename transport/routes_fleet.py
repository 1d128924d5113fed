"""The kill switch routes (``th_fleet_control``, docs/kill-switch.md).

* ``POST /v1/fleet/kill`` ``{"level": "soft"|"hard"|"emergency", "reason": "…"}`` (``admin``): freeze, or move a
  freeze to another level. 200 with the new state; 409 ``ALREADY_FROZEN`` when the instance is frozen at that
  level already (a second ``spl kill --hard`` says so instead of writing a record that changes nothing).
* ``POST /v1/fleet/unkill`` ``{"reason": "…"}`` (``admin``): lift the freeze. 200 with the new state; 409
  ``NOT_FROZEN`` when nothing is frozen. Pairs that backed off during the freeze are kicked: they pull what they
  held back at once instead of after their backoff (up to 5 minutes).
* ``GET /v1/fleet/control`` (``config:read``; ``admin`` implies it): the state.

Each change is one ``LEARN`` signed by the instance (``LocalRecords.record_system``): the writer applies it in the
commit that stores it, so the answer already reflects it. Under an emergency freeze only admin callers reach these
routes at all (``transport/app.py``, gate 5); under hard, the freeze and unfreeze records still pass because they
are the daemon's own configuration (origin ``system``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import trio
from quart import Blueprint, Response

from spl.actors.messages import Kick
from spl.core.errors import Conflict, InvalidRequest
from spl.core.fleet_control import FLEET_THREAD, check_level, check_reason, freeze_body, unfreeze_body
from spl.core.text import printable
from spl.transport.auth import require
from spl.transport.context import caller, services
from spl.transport.requests import json_body
from spl.transport.responses import json_response
from spl.transport.services import Services

__all__ = ["blueprint"]

blueprint = Blueprint("fleet_control", __name__)

log = logging.getLogger("spl.http")


def _fields(payload: object, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """The request body as an object holding only ``allowed`` keys, or 400 naming the first stray one."""
    if not isinstance(payload, Mapping):
        raise InvalidRequest(f"the body must be a JSON object with {' and '.join(allowed)}", code="INVALID_REQUEST")
    unknown = sorted(str(key) for key in payload if key not in allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown field {printable(unknown[0], 64)!r}: this route takes {' and '.join(allowed)}",
            code="INVALID_REQUEST",
        )
    return payload


def _kick_pairs(svc: Services) -> int:
    """Send every running pair (sync and federation pullers alike) a ``Kick``; how many were kicked.

    A pair that failed during the freeze sleeps out its backoff; a kick starts a round now and resets the backoff.
    A paused pair stays paused, and a full inbox already holds work, so neither gets one.
    """
    federation = svc.federation
    if federation is None:
        return 0
    kicked = 0
    for child in federation.supervisor.snapshot().children:
        if child.paused:
            continue
        with contextlib.suppress(KeyError, ValueError, trio.WouldBlock, trio.ClosedResourceError):
            federation.supervisor.inbox(child.id).send_nowait(Kick())
            kicked += 1
    return kicked


@blueprint.get("/v1/fleet/control")
async def fleet_control() -> Response:
    require(caller(), "config:read")
    return json_response(services().fleet().to_wire())


@blueprint.post("/v1/fleet/kill")
async def kill() -> Response:
    """Freeze the instance at ``level`` (or move the freeze there)."""
    require(caller(), "admin")
    svc = services()
    payload = _fields(await json_body(svc.config.max_body_bytes), ("level", "reason"))
    level, reason = check_level(payload.get("level")), check_reason(payload.get("reason"))
    current = svc.fleet()
    if current.level == level:
        raise Conflict(
            f"this instance is frozen ({level}) already, since {current.since}; "
            "choose another level to move the freeze, or lift it with `spl unkill`",
            code="ALREADY_FROZEN",
        )
    await svc.local.record_system(FLEET_THREAD, freeze_body(level, reason))
    log.warning("kill switch: frozen (%s): %s", level, printable(reason, 200))
    return json_response(svc.fleet().to_wire())


@blueprint.post("/v1/fleet/unkill")
async def unkill() -> Response:
    """Lift the freeze; pairs resume at once."""
    require(caller(), "admin")
    svc = services()
    payload = _fields(await json_body(svc.config.max_body_bytes), ("reason",))
    reason = check_reason(payload.get("reason"))
    if not svc.fleet().frozen:
        raise Conflict(
            "this instance is not frozen; freeze it with `spl kill --soft|--hard|--emergency`", code="NOT_FROZEN"
        )
    await svc.local.record_system(FLEET_THREAD, unfreeze_body(reason))
    kicked = _kick_pairs(svc)
    log.warning("kill switch: lifted (%s); %d pair(s) kicked", printable(reason, 200), kicked)
    return json_response({**svc.fleet().to_wire(), "pairs_kicked": kicked})
