"""Identity rotation (issue 14): ``POST /v1/identity/rotate`` and ``GET /v1/identity/keys``.

The daemon does the rotation (``Services.rotate_identity``, wired by ``spl.daemon.assembly``): a new signing key
for the same identifier, linked to the old one by a statement the old key signs. The request carries nothing (a
body, if any, is ignored): there is nothing for a caller to choose, and so nothing hostile to parse.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from spl.core.errors import Unavailable
from spl.core.rotation import key_windows
from spl.transport.auth import require
from spl.transport.context import services
from spl.transport.responses import json_response

__all__ = ["blueprint"]

blueprint = Blueprint("rotation", __name__)


@blueprint.post("/v1/identity/rotate")
async def rotate() -> Response:
    """Rotate the instance's signing key (admin): every pair is kept, every old record keeps verifying."""
    require(request.caller, "admin")  # type: ignore[attr-defined]
    svc = services()
    if svc.rotate_identity is None:
        raise Unavailable(
            "this steward was started without identity rotation; restart it with `spl serve`",
            code="ROTATION_UNAVAILABLE",
        )
    return json_response(await svc.rotate_identity())


@blueprint.get("/v1/identity/keys")
async def keys() -> Response:
    """The instance's keys (current last, each with its validity window) and the rotation chain linking them."""
    require(request.caller, "config:read")  # type: ignore[attr-defined]
    identity = services().identity
    chain = getattr(identity, "keys", (identity.did,))
    statements = getattr(identity, "statements", ())
    return json_response(
        {
            "object": "identity_keys",
            "did": identity.did,
            "key": identity.key_did,
            "keys": key_windows(chain, statements),
            "rotations": list(statements),
        }
    )
