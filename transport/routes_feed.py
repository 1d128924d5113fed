"""Federation data routes: the change feed a peer pulls and signed-record push.

Spec §8.4 and §15.6: cursors are opaque ``s1.<sequence>`` strings, so a page boundary can
never split records that share a clock.

Reserved threads (spec §15.18) are configuration: the change feed never serves them and a
push never writes them (each such record is refused with ``RESERVED_THREAD``).
"""

from __future__ import annotations

import weakref

import trio
from quart import Blueprint, Response, request

from spl.core.cursor import decode_cursor, encode_cursor
from spl.core.errors import InvalidRequest
from spl.core.record import validate_thread
from spl.core.reserved import refuse_reserved
from spl.core.wire import MAX_PUSH_RECORDS, decode_push
from spl.store import queries
from spl.transport import sse
from spl.transport.auth import require_any
from spl.transport.context import caller, services
from spl.transport.requests import body_bytes, int_arg
from spl.transport.responses import json_response
from spl.transport.routes_threads import watch_stream

__all__ = ["blueprint"]

blueprint = Blueprint("feed", __name__)

MAX_PAGE = MAX_PUSH_RECORDS  # records per change page, as per push
FEED_BUFFER = 16_384
LONGPOLL_MAX = 30.0


def _longpoll_seconds(value: str | None) -> float:
    """``timeout`` of a longpoll: seconds (decimals allowed), 0 to 30; 30 when absent."""
    if value is None or value == "":
        return LONGPOLL_MAX
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= LONGPOLL_MAX:
        raise InvalidRequest(
            "query parameter 'timeout' must be a number of seconds from 0 to 30", code="INVALID_PARAMETER"
        )
    return seconds


def _page_json(page: queries.ChangePage, after: int) -> str:
    """The page as JSON spliced from stored record texts (no re-encoding)."""
    items = ",".join(f'{{"id":"{r.id}","record":{r.json}}}' for r in page.records)
    cursor = encode_cursor(page.records[-1].seq if page.records else after)
    return (
        f'{{"object":"sync_changes","records":[{items}],"next_cursor":"{cursor}",'
        f'"has_more":{"true" if page.has_more else "false"},"pending":{page.pending}}}'
    )


@blueprint.get("/v1/sync/changes")
async def changes() -> Response:
    require_any(caller(), ("federation:sync", "records:read"))
    thread = validate_thread(request.args.get("thread"), "thread (query parameter)")
    refuse_reserved(thread)
    header = request.headers.get("last-event-id")
    after = decode_cursor(request.args.get("since"))
    feed = request.args.get("feed", "normal")
    if feed == "continuous":
        resumed = sse.parse_cursor(header)
        if resumed is not None:
            after = resumed
        # A peer's pair drains in pages when it falls behind, but a deeper buffer means
        # it rarely has to: bursts are absorbed instead of ending the stream as lagged.
        subscription = await services().hub.subscribe(thread, buffer=FEED_BUFFER)
        body = watch_stream(services(), subscription, after, None)
        # A body that never starts (the peer left before the headers went out) never runs the
        # generator's ``finally``: release the subscription when the generator is freed.
        weakref.finalize(body, services().hub.unsubscribe, subscription).atexit = False
        response = Response(
            body,
            content_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache"},
        )
        response.timeout = None
        return response
    if feed not in ("normal", "longpoll"):
        raise InvalidRequest("feed must be normal, longpoll or continuous", code="INVALID_PARAMETER")
    limit = int_arg("limit", 1000, minimum=1, maximum=MAX_PAGE) or 1000
    page = await services().read(queries.change_page, thread, after, limit)
    if not page.records and feed == "longpoll":
        wait = _longpoll_seconds(request.args.get("timeout"))
        subscription = await services().hub.subscribe(thread)
        try:
            page = await services().read(queries.change_page, thread, after, limit)
            if not page.records:
                with trio.move_on_after(wait):
                    try:
                        await subscription.take()
                    except trio.EndOfChannel:
                        pass
                page = await services().read(queries.change_page, thread, after, limit)
        finally:
            services().hub.unsubscribe(subscription)
    return json_response(_page_json(page, after))


@blueprint.post("/v1/sync/records")
async def push_records() -> Response:
    """Signed records a peer pushes: the reconciler screens, verifies and ingests them as it does pulled pages."""
    require_any(caller(), ("federation:sync", "records:write"))
    raws = decode_push(await body_bytes(services().config.max_body_bytes))
    if request.headers.get("x-syncropel-federation") == "1":
        unsigned = sum(1 for r in raws if not (isinstance(r, dict) and r.get("sig") and r.get("signer")))
        if unsigned:
            raise InvalidRequest(
                f"{unsigned} record(s) carry no signer/sig; federation pushes must be signed",
                code="SIGNATURE_REQUIRED",
                status=422,
            )
    result = await services().remote_ingest().push(raws)
    return json_response(
        {
            "object": "sync_ingest_result",
            "accepted": [record.id for record in result.stored],
            "duplicates": result.duplicate_ids,
            "refused": [refusal.to_wire() for refusal in result.refusals],
        }
    )
