"""Device pairing routes (``spl pair``, docs/pairing.md): create, list and revoke (admin), and redeem (open).

``POST /v1/pairing/redeem`` is answered without a token (the device has none yet) and is the one place a
stranger can try codes, so it is bounded before anything else: every attempt takes a token from the
caller's bucket and the instance's (:class:`spl.core.pairing.RedeemLimiter`), given back only when the
redeem works; an empty bucket answers 429 with ``Retry-After`` before the body is read.

State lives in :class:`PairingState`, one per application (kept in ``app.config`` beside the services):
the book in memory, loaded from ``<home>/pairings.json`` on first use, and a lock that makes every change
read-decide-save-swap in one piece. A redeem saves the code as used *before* its token is stored: a crash
in between leaves a used code and no token (the device asks again), never two tokens from one code.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any, cast

import trio
from quart import Blueprint, Response, current_app, request

from spl.core import tokens
from spl.core.errors import InvalidRequest, SplError
from spl.core.manifest import rfc3339
from spl.core.pairing import (
    DEFAULT_TTL,
    Pairing,
    PairingBook,
    PairingRateLimited,
    RedeemLimiter,
    code_hash,
    deep_link,
    device_token_label,
    format_code,
    new_code,
    parse_code,
    validate_device_label,
    validate_device_name,
    validate_link_url,
    validate_pairing_scopes,
    validate_ttl,
)
from spl.core.tokens import TokenInfo
from spl.store.pairing import PAIRINGS_FILE, load_pairings, save_pairings
from spl.transport.auth import Caller, require
from spl.transport.context import caller, services
from spl.transport.requests import json_body
from spl.transport.responses import error_response, json_response

__all__ = ["OPEN_ROUTES", "REDEEM_PATH", "PairingState", "blueprint"]

blueprint = Blueprint("pairing", __name__)

REDEEM_PATH = "/v1/pairing/redeem"
# Paths of this module answered without a token even when auth is on (transport/app.py gate 4).
OPEN_ROUTES: frozenset[str] = frozenset({REDEEM_PATH})

STATE_KEY = "spl.pairing"
MAX_CREATE_BODY = 4096
MAX_REDEEM_BODY = 512  # a code and a short label: anything longer is not a redeem
_CREATE_FIELDS = frozenset({"device", "scopes", "ttl_secs", "url"})
_REDEEM_FIELDS = frozenset({"code", "label"})


@dataclass
class PairingState:
    """One application's pairings: the book (None until loaded), the lock around changes, the redeem limiter."""

    book: PairingBook | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    limiter: RedeemLimiter = field(default_factory=RedeemLimiter)

    async def loaded(self) -> PairingBook:
        """The book, read from the home on first use (call with :attr:`lock` held)."""
        if self.book is None:
            self.book = await trio.to_thread.run_sync(load_pairings, services().home_root / PAIRINGS_FILE)
        return self.book

    async def save(self, book: PairingBook) -> None:
        """Make ``book`` durable, then the one in memory (call with :attr:`lock` held)."""
        await trio.to_thread.run_sync(save_pairings, services().home_root / PAIRINGS_FILE, book)
        self.book = book


def pairing_state() -> PairingState:
    """This application's :class:`PairingState`, made on first use (no await in between: no race)."""
    state = current_app.config.get(STATE_KEY)
    if state is None:
        state = current_app.config[STATE_KEY] = PairingState()
    return cast(PairingState, state)


def _token_live(token_id: str | None) -> bool:
    info = services().tokens.get(token_id) if token_id is not None else None
    return info is not None and info.status() == "active"


def _view(pairing: Pairing, now: float) -> dict[str, Any]:
    """A pairing as operators read it: times as RFC 3339 UTC text, and a device whose token was revoked by
    `spl token revoke` (not `spl pair revoke`) shown revoked."""
    wire = pairing.to_wire(now)
    info = services().tokens.get(pairing.token_id) if pairing.token_id is not None else None
    if wire["status"] == "redeemed" and info is not None and info.revoked_at is not None:
        wire["status"], wire["revoked_at"] = "revoked", info.revoked_at
    for key in ("created_at", "expires_at", "redeemed_at", "revoked_at"):
        if wire[key] is not None:
            wire[key] = rfc3339(wire[key])
    return wire


def _object(raw: Any, allowed: frozenset[str], example: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"send a JSON object such as {example}", code="INVALID_REQUEST")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown field(s) {', '.join(repr(name)[:40] for name in unknown[:3])}; send only "
            f"{', '.join(sorted(allowed))}",
            code="INVALID_REQUEST",
        )
    return raw


@blueprint.post("/v1/pairings")
async def create_pairing() -> Response:
    """Record a pairing for a device and answer its one-time code (shown once) and deep link."""
    who: Caller = caller()
    require(who, "admin")
    body = _object(
        await json_body(MAX_CREATE_BODY), _CREATE_FIELDS, '{"device": "laptop", "scopes": ["records:write"]}'
    )
    device = validate_device_name(body.get("device"))
    scopes = validate_pairing_scopes(body.get("scopes"), who.scopes)
    ttl = validate_ttl(body.get("ttl_secs", DEFAULT_TTL))
    url = validate_link_url(body["url"]) if body.get("url") is not None else services().endpoint
    code = new_code()
    state = pairing_state()
    async with state.lock:
        book = await state.loaded()
        now = time.time()
        earlier = book.pairings.get(device)
        pairing = Pairing(device, code_hash(code), tuple(scopes), url, now, now + ttl)
        changed = book.create(pairing, live_token=earlier is not None and _token_live(earlier.token_id))
        await state.save(changed)
    return json_response({**_view(pairing, now), "code": format_code(code), "link": deep_link(url, code)}, 201)


@blueprint.get("/v1/pairings")
async def list_pairings() -> Response:
    require(caller(), "admin")
    state = pairing_state()
    async with state.lock:
        book = await state.loaded()
    now = time.time()
    return json_response({"object": "list", "data": [_view(pairing, now) for pairing in book.listing()]})


@blueprint.delete("/v1/pairings/<device>")
async def revoke_pairing(device: str) -> Response:
    """Revoke one device: its code if still pending, its token if redeemed. Every other token keeps working."""
    require(caller(), "admin")
    state = pairing_state()
    async with state.lock:
        book = await state.loaded()
        pairing = book.get(device)
        now = time.time()
        token_revoked = False
        if _token_live(pairing.token_id):
            assert pairing.token_id is not None
            # The token first: if saving the book fails after this, the device is cut off all the same.
            token_revoked = await services().writer.revoke_token(pairing.token_id, now)
            services().tokens.mark_revoked(pairing.token_id, now)
        changed, revoked = book.revoke(device, now)
        if changed is not book:
            await state.save(changed)
    return json_response({**_view(revoked, now), "token_revoked": token_revoked})


def _source() -> str:
    """The rate limit's key for the caller: its address (an IPv6 caller's /64, which one host usually holds)."""
    address = request.remote_addr or "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


@blueprint.post(REDEEM_PATH)
async def redeem_pairing() -> Response:
    """Trade a one-time code for the device's own token (the plaintext is in this answer only)."""
    state = pairing_state()
    source = _source()
    try:
        state.limiter.attempt(source, trio.current_time())
    except PairingRateLimited as limited:
        response = error_response(limited)
        response.headers["Retry-After"] = str(limited.retry_after)
        return response
    try:
        answer = await _redeem(state)
    except SplError as failure:
        if failure.status >= 500:  # our failure, not the caller's guess: it does not count
            state.limiter.succeeded(source, trio.current_time())
        raise
    state.limiter.succeeded(source, trio.current_time())
    return answer


async def _redeem(state: PairingState) -> Response:
    body = _object(await json_body(MAX_REDEEM_BODY), _REDEEM_FIELDS, '{"code": "ABCD-EFGH-JKMN-PQRS"}')
    label = validate_device_label(body.get("label", ""))
    minted = tokens.mint("local")
    async with state.lock:
        book = await state.loaded()
        now = time.time()
        changed, pairing = book.redeem(parse_code(body.get("code")), now, minted.token_id, label)
        original = book.pairings[pairing.device]
        info = TokenInfo.of_minted(minted, device_token_label(pairing.device, label), list(pairing.scopes), now)
        await state.save(changed)  # the code is used from here on, whatever happens next
        # Shielded: a caller that hangs up now must not leave the code in doubt. The writer answers every
        # command it was given (or fails it as it stops), so this wait is bounded.
        with trio.CancelScope(shield=True):
            try:
                await services().writer.mint_token(info)
            except SplError:
                # The writer rolled the token back: the code is good again (the device may retry). If this save
                # fails too, the code stays used with no token, which only costs the operator a new code.
                with contextlib.suppress(SplError):
                    await state.save(changed.put(original))
                raise
            services().tokens.remember(info)  # only once durable: a token that works survives a restart
    return json_response(
        {
            "object": "device_token",
            "device": pairing.device,
            "token": minted.plaintext,
            "token_id": info.token_id,
            "label": info.label,
            "scopes": sorted(info.scopes),
            "url": pairing.url,
            "instance_did": services().identity.did,
        },
        201,
    )
