"""The mesh-health page (issue 13): ``GET /ui`` and its assets, and ``GET /v1/ui/events``, the page's live data.

The page is four files shipped in the package (``transport/ui/``: HTML, CSS, JS, an icon; no build step, nothing fetched
from anywhere else), read once and served from memory. They are open routes (:data:`OPEN_ROUTES`): they hold no
data. Every figure the page shows comes from the event stream, which needs a token with the ``metrics:read`` scope
when authentication is on (the same figures ``/metrics`` exports; ``admin`` implies it). What ``/metrics`` does not
export, and the pair routes keep behind ``federation:manage`` (each pair's peer URL and DID, the thread it syncs, the
state's reason, error messages, the supervision tree's errors), is sent only to a caller that holds
``federation:manage`` too (:data:`DETAIL_SCOPE`); a scraper's ``metrics:read`` token sees states and figures only.
The page sends its token in an ``Authorization`` header from ``fetch()``: ``EventSource`` cannot set headers, and a
token in the query string would end up in access logs and browser history.

The stream sends one JSON snapshot of the mesh at once and then one per :data:`TICK_SECONDS`: every pair of both
kinds (fleet sync pairs and federation pairs) with its state, lag and last error, the supervision tree and the head
sequence. Each snapshot is built when it is due and written before the next one is built, so a slow reader holds
back its own stream and nothing queues for it; at most :data:`MAX_STREAMS` streams run at once, and they share
one snapshot (:class:`StreamSlots`), so a daemon builds at most two a second however many pages are open. A stream
ends with ``server_shutdown`` as soon as the daemon starts stopping, inside the shutdown plan's "stop accepting" phase.

Everything in a snapshot that a peer or a client chose (pair states' reasons, error messages, URLs) is cut to a
bounded single line (``spl.core.text.printable``); the page renders all of it as text, never as HTML.
"""

from __future__ import annotations

import functools
import json
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, current_app, request

from spl.core import tokens
from spl.core.errors import SplError, Unavailable
from spl.core.text import printable
from spl.transport import sse
from spl.transport.auth import require
from spl.transport.context import caller, services
from spl.transport.services import Services

__all__ = [
    "ASSETS",
    "EVENTS_ROUTE",
    "MAX_STREAMS",
    "OPEN_ROUTES",
    "TICK_SECONDS",
    "blueprint",
    "mesh_events",
    "mesh_snapshot",
]

blueprint = Blueprint("ui", __name__)

# Route -> (file under transport/ui/, content type). The page names its assets by these absolute paths.
ASSETS: dict[str, tuple[str, str]] = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/style.css": ("style.css", "text/css; charset=utf-8"),
    "/ui/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
UI_DIR = Path(__file__).parent / "ui"

# Paths of this module answered without a token even when auth is on (transport/app.py gate 4): the page and
# its assets hold no data; the page asks for a token for the event stream.
OPEN_ROUTES: frozenset[str] = frozenset(ASSETS)
EVENTS_ROUTE = "/v1/ui/events"
# The scope that also shows who the peers are and what they said (the pair routes' own scope).
DETAIL_SCOPE = "federation:manage"

# Scripts and styles only from this daemon, and only as files (no inline script, no eval); data only from this
# daemon; no plugins, no <base>, no form posting anywhere, no framing (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}

TICK_SECONDS = 1.0  # one snapshot a second per stream
FRAME_REUSE_SECONDS = 0.5  # streams share a snapshot built less than this long ago
MAX_STREAMS = 16  # streams open at once, per daemon: each costs one snapshot a second
MAX_PAIRS = 500  # pairs of each kind in one snapshot (the rest are counted, not listed)
MAX_TREE_CHILDREN = 200  # children listed per supervisor in the tree (the rest are counted)
TEXT_LIMIT = 300  # characters of any free text a peer or client chose (reasons, error messages)
URL_LIMIT = 200
SLOTS_KEY = "SPL_UI_STREAMS"  # where the app keeps its :class:`StreamSlots` (``app.config``)


# -- the page ---------------------------------------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> bytes:
    """One file of the page, read from the package once (the files never change while the daemon runs)."""
    try:
        return (UI_DIR / name).read_bytes()
    except OSError as error:
        raise SplError(
            f"the mesh-health page's file ui/{name} is missing from the installed spl package ({error.strerror}); "
            "reinstall spl (`pip install --force-reinstall spl`) so that spl/transport/ui/ is shipped",
            code="UI_ASSET_MISSING",
        ) from None


def _asset_response(path: str) -> Response:
    name, content_type = ASSETS[path]
    return Response(_asset(name), status=200, content_type=content_type, headers=SECURITY_HEADERS)


@blueprint.get("/ui")
async def page() -> Response:
    return _asset_response("/ui")


@blueprint.get("/ui/app.js")
async def script() -> Response:
    return _asset_response("/ui/app.js")


@blueprint.get("/ui/style.css")
async def stylesheet() -> Response:
    return _asset_response("/ui/style.css")


@blueprint.get("/ui/favicon.svg")
async def icon() -> Response:
    return _asset_response("/ui/favicon.svg")


# -- the event stream ---------------------------------------------------------------------------------------------


class StreamSlots:
    """The app's event streams: how many are open (at most :data:`MAX_STREAMS`), and the snapshot they share.

    Building a snapshot grows with the number of pairs (~15 ms at 1,000 pairs, on the trio thread), so streams
    share one: a frame built less than :data:`FRAME_REUSE_SECONDS` ago is sent again rather than built anew, and
    the daemon builds at most two a second however many pages are open.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._frames: dict[bool, tuple[float, bytes]] = {}  # detail -> (built at, frame): two views, one each

    def frame(self, services: Services, now: float | None = None, *, detail: bool = True) -> bytes:
        """The current snapshot's frame, built now unless a recent one can be sent again (``now``: trio time).

        ``detail``: with the peers' URLs, DIDs and words (:data:`DETAIL_SCOPE`), or states and figures only.
        """
        now = trio.current_time() if now is None else now
        built_at, frame = self._frames.get(detail, (-math.inf, b""))
        if now - built_at >= FRAME_REUSE_SECONDS:
            frame = snapshot_frame(mesh_snapshot(services, detail=detail))
            self._frames[detail] = (now, frame)
        return frame

    def take(self) -> Slot:
        if self.open >= self.limit:
            raise Unavailable(
                f"{self.limit} mesh-health streams are open on this daemon already; close another /ui tab "
                "(or wait for one to end) and reload",
                code="UI_STREAMS_FULL",
            )
        self.open += 1
        return Slot(self)


class Slot:
    """One open stream's place; released once, whichever comes first: the stream's end or its body being freed."""

    def __init__(self, slots: StreamSlots) -> None:
        self._slots: StreamSlots | None = slots

    def release(self) -> None:
        if self._slots is not None:
            self._slots.open -= 1
            self._slots = None


def _slots() -> StreamSlots:
    slots = current_app.config.get(SLOTS_KEY)
    if not isinstance(slots, StreamSlots):
        slots = current_app.config[SLOTS_KEY] = StreamSlots(MAX_STREAMS)
    return slots


def _refuse_other_sites() -> None:
    """Refuse a stream that a page of another site opened (``Sec-Fetch-Site``), unless its origin is a listed CORS one.

    That page cannot read the stream (no CORS answer), but it can open it: any site a user visits could hold all
    :data:`MAX_STREAMS` places of a daemon whose authentication is off (``--insecure-localhost``: ``Host:
    127.0.0.1`` passes the Host gate) for as long as its tab is open. The page itself fetches same-origin; curl and
    other clients send no ``Sec-Fetch-Site`` at all.
    """
    site = request.headers.get("sec-fetch-site")
    if site is None or site in ("same-origin", "none"):
        return
    origin = (request.headers.get("origin") or "").rstrip("/").lower()
    if origin and origin in {listed.strip().rstrip("/").lower() for listed in services().config.cors_origins}:
        return
    raise SplError(
        "the mesh-health stream is read by this daemon's own page (/ui) only, not by a page of another site; "
        "open /ui on this daemon, or list that site in serve.cors_origins",
        code="CROSS_SITE_REFUSED",
        status=403,
    )


@blueprint.get(EVENTS_ROUTE)
async def events() -> Response:
    _refuse_other_sites()
    who = caller()
    require(who, "metrics:read")
    detail = tokens.allows(who.scopes, DETAIL_SCOPE)
    slots = _slots()
    slot = slots.take()
    body = mesh_events(services(), slot, functools.partial(slots.frame, detail=detail))
    # A body that never starts (the client left before the headers went out) never runs the generator's
    # ``finally``: free the slot when the generator is freed.
    weakref.finalize(body, slot.release).atexit = False
    response = Response(
        body,
        content_type="text/event-stream; charset=utf-8",
        headers={**SECURITY_HEADERS, "cache-control": "no-store", "x-accel-buffering": "no"},
    )
    response.timeout = None  # Quart would end the stream after 60 s otherwise
    return response


async def mesh_events(
    services: Services, slot: Slot | None = None, frame: Callable[[Services], bytes] | None = None
) -> AsyncIterator[bytes]:
    """The stream's body: a snapshot now, then one per tick, until the daemon starts stopping.

    ``frame`` builds (or reuses, :meth:`StreamSlots.frame`) a snapshot's frame; by default each is built anew.
    No cancel scope is held across a ``yield`` (runtime.md): the wait for the next tick ends before the frame is
    handed over, and the frame is written before the next snapshot is taken.
    """
    build = frame if frame is not None else lambda services: snapshot_frame(mesh_snapshot(services))
    try:
        while not services.stopping.is_set():
            yield build(services)
            with trio.move_on_after(TICK_SECONDS):
                await services.stopping.wait()
        yield sse.shutdown_frame(1000)
    finally:
        if slot is not None:
            slot.release()


def snapshot_frame(snapshot: Mapping[str, Any]) -> bytes:
    # ASCII-only JSON: no line end (nor U+2028) can appear inside the one data line.
    data = json.dumps(snapshot, ensure_ascii=True, separators=(",", ":"))
    return f"event: mesh\ndata: {data}\n\n".encode("ascii")


# -- the snapshot ---------------------------------------------------------------------------------------------------


def mesh_snapshot(services: Services, now: float | None = None, *, detail: bool = True) -> dict[str, Any]:
    """The mesh as the page shows it, now. Call it on the trio thread, where the actors keep their state.

    ``detail`` False (a caller without :data:`DETAIL_SCOPE`): every pair's peer URL, DID, thread or role, state reason
    and error message, and the tree's errors, are None; states, figures and error codes stay.
    """
    now = time.time() if now is None else now
    problems = [printable(problem, TEXT_LIMIT) for problem in services.problems()[:20]]  # /health shows them too
    stopping = services.stopping.is_set()
    sync_pairs, sync_total = _sync_pairs(services.federation, now)
    fed_pairs, fed_total = _federation_pairs(services.federation, now)
    pairs = sync_pairs + fed_pairs
    tree = _tree(services.snapshot(), services.federation)
    if not detail:
        pairs = [_without_detail(pair) for pair in pairs]
        tree = _tree_without_errors(tree)
    return {
        "object": "mesh_snapshot",
        "at": round(now, 3),
        "instance_did": services.identity.did,
        "status": "stopping" if stopping else "degraded" if problems else "ok",
        "problems": problems,
        "sequence": services.head_sequence(),
        "uptime_secs": round(now - services.started_at, 3),
        "fleet": services.fleet().level,
        "pairs": pairs,
        "pairs_total": {"sync": sync_total, "federation": fed_total},
        "supervision": tree,
        "detail": detail,
    }


def _without_detail(pair: dict[str, Any]) -> dict[str, Any]:
    """A pair row as a ``metrics:read`` caller sees it: what ``/metrics`` exports, plus the last error's code."""
    error = pair["last_error"]
    return {
        **pair,
        "peer_did": None,
        "peer_url": None,
        "scope": None,
        "state_reason": None,
        "last_error": None if error is None else {**error, "message": None},
    }


def _tree_without_errors(node: dict[str, Any]) -> dict[str, Any]:
    children = node.get("children")
    if isinstance(children, dict):  # a supervisor nested under a child
        return {**node, "last_error": None, "children": _tree_without_errors(children)}
    if isinstance(children, list):
        return {**node, "last_error": None, "children": [_tree_without_errors(child) for child in children]}
    return {**node, "last_error": None}


def _sync_pairs(federation: Any, now: float) -> tuple[list[dict[str, Any]], int]:
    """Fleet sync pairs (``/v1/sync/pairs``): the first :data:`MAX_PAIRS` by id, and how many there are."""
    if federation is None:
        return [], 0
    rows = []
    for pair_id in sorted(federation.pairs)[:MAX_PAIRS]:
        view = federation.pairs[pair_id]
        config, status = view.config, view.status
        rows.append(
            {
                "kind": "sync",
                "pair_id": pair_id,
                "peer_did": printable(config.peer_did, URL_LIMIT),
                "peer_url": printable(config.peer_url, URL_LIMIT),
                "scope": printable(config.thread_id, URL_LIMIT),
                "mode": config.mode,
                "state": status.state,
                "state_reason": printable(status.reason, TEXT_LIMIT),
                **_figures(status, now),
            }
        )
    return rows, len(federation.pairs)


def _federation_pairs(federation: Any, now: float) -> tuple[list[dict[str, Any]], int]:
    """Federation pairs (``/v1/federation/pairs``), with the state an operator sees (``state_of``)."""
    fed = getattr(federation, "fed", None)
    if fed is None:
        return [], 0
    rows = []
    for pair_id in sorted(fed.pairs)[:MAX_PAIRS]:
        view = fed.pairs[pair_id]
        state, reason = fed.state_of(view)
        pair = view.pair
        rows.append(
            {
                "kind": "federation",
                "pair_id": pair_id,
                "peer_did": printable(pair.peer_did, URL_LIMIT),
                "peer_url": printable(pair.peer_url, URL_LIMIT),
                "scope": printable(pair.role, 40),
                "mode": pair.mode,
                "state": printable(state, 40),
                "state_reason": printable(reason, TEXT_LIMIT),
                **_figures(view.status, now),
            }
        )
    return rows, len(fed.pairs)


def _figures(status: Any, now: float) -> dict[str, Any]:
    """A puller's figures (``spl.core.pairs.PairStatus``); zeros when none runs (a federation pair not started)."""
    if status is None:
        return {"lag_records": 0, "lag_seconds": 0.0, "records_pulled": 0, "errors_total": 0, "last_error": None}
    error = status.last_error
    return {
        "lag_records": status.lag_records,
        "lag_seconds": round(status.lag_seconds(now), 3),
        "records_pulled": status.records_pulled,
        "errors_total": status.errors_total,
        "last_error": None
        if error is None
        else {"code": printable(error.code, 60), "message": printable(error.message, TEXT_LIMIT), "at": error.at},
    }


def _tree(snapshot: Mapping[str, Any], federation: Any) -> dict[str, Any]:
    """The root supervisor's tree, with the pair supervisor (which the federation manager runs inside its own task,
    so the root's snapshot does not hold it) shown under the ``federation`` child."""
    pairs = getattr(federation, "supervisor", None)
    pair_tree = msgspec.to_builtins(pairs.snapshot()) if pairs is not None else None
    return _supervisor(snapshot, pair_tree)


def _supervisor(snapshot: Mapping[str, Any], pair_tree: Mapping[str, Any] | None) -> dict[str, Any]:
    children = list(snapshot.get("children") or ())
    shown = []
    for child in children[:MAX_TREE_CHILDREN]:
        nested = child.get("children")
        if not nested and child.get("id") == "federation" and pair_tree is not None:
            nested = pair_tree
        shown.append(
            {
                "id": printable(child.get("id", "?"), 80),
                "state": printable(child.get("state", "?"), 40),
                "restarts": int(child.get("restarts") or 0),
                "last_error": printable(child["last_error"], TEXT_LIMIT) if child.get("last_error") else None,
                "children": _supervisor(nested, None) if nested else None,
            }
        )
    return {
        "id": printable(snapshot.get("id", "root"), 80),
        "state": printable(snapshot.get("state", "?"), 40),
        "children": shown,
        "children_total": len(children),
    }
