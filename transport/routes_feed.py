"""Federation data routes: the change feed a peer pulls and signed-record push.

Spec §8.4 and §15.6: cursors are opaque ``s1.<sequence>`` strings, so a page boundary can
never split records that share a clock.

Reserved threads (spec §15.18) are configuration: the change feed never serves them and a
push never writes them (each such record is refused with ``RESERVED_THREAD``).
"""

from __future__ import annotations

import contextlib
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable

import trio
from quart import Blueprint, Response, request

from spl.actors.federation_pairs import ServePolicy
from spl.actors.hub import EVERY_THREAD, Subscription
from spl.core.consent import project
from spl.core.cursor import decode_any_cursor, decode_cursor, encode_cursor, encode_policy_cursor
from spl.core.errors import AuthRequired, InvalidRequest, ScopeForbidden, SplError, Unavailable
from spl.core.namespaces import validate_namespace_id
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
from spl.transport.services import Services

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


# -- filtered feeds: a federation pair's namespaces, or any pull under a consent filter ---------------------

FILTERED_SCAN = 1000  # rows examined per filtered page; a page holds at most this many records
PENDING_CAP = 10_000  # a page's "pending" counts at most this many records (a receiver's lag shows "≥ 10000")
MAX_NAMESPACES = 16


def _namespaces_arg(value: str) -> list[str]:
    """``namespace=a,b``: 1-16 namespace ids (each checked), de-duplicated."""
    names = [name.strip() for name in value.split(",")]
    if not names or len(names) > MAX_NAMESPACES or any(not name for name in names):
        raise InvalidRequest(
            f"query parameter 'namespace' must be 1-{MAX_NAMESPACES} comma-separated namespace ids",
            code="INVALID_PARAMETER",
        )
    return sorted({validate_namespace_id(name) for name in names})


def _serve_policy(target_namespace: str | None) -> ServePolicy | None:
    """The filter this pull is served under: its token's federation pair, its ``target_namespace``, or none."""
    token = caller().token
    federation = services().federation
    fed = federation.fed if federation is not None else None
    if fed is None:
        if token is not None and token.pair_id:
            raise Unavailable("federation is starting; retry in a moment")
        return None
    policy: ServePolicy | None = fed.policy_for(token, target_namespace)
    return policy


def _filter_page(
    svc: Services, page: queries.ScopedPage, policy: ServePolicy | None, now: float
) -> tuple[list[tuple[int, str]], dict[str, int]]:
    """The served items of a scanned page, each ``(sequence, JSON text)``, and what was held back."""
    items: list[tuple[int, str]] = []
    held: dict[str, int] = {}
    # A federation pair pulls both ways: a record the peer itself signed came from it, and sending it back
    # would only make the peer verify what it already holds (the echo cost the source's CPU per record 3×).
    echo = f'"signer":"{policy.peer_did}"' if policy is not None and policy.pair_id is not None else None
    for row in page.rows:
        if policy is None:
            items.append((row.seq, f'{{"id":"{row.id}","record":{row.json}}}'))
            continue
        if echo is not None and _signed_by_peer(row.json, echo):
            held["theirs"] = held.get("theirs", 0) + 1
            continue
        decision, target = policy.decision(row.namespace, row.thread, now)
        if decision.action == "deliver":
            items.append((row.seq, f'{{"id":"{row.id}","record":{row.json}}}'))
        elif decision.action == "project":
            projection = project(
                json.loads(row.json),
                source_seq=row.seq,
                decision=decision,
                target_namespace=target,
                signer=svc.identity,
            )
            item = json.dumps({"id": projection["id"], "record": projection}, separators=(",", ":"))
            items.append((row.seq, item))
            held["projected"] = held.get("projected", 0) + 1
        else:
            held["withheld"] = held.get("withheld", 0) + 1
    return items, held


def _signed_by_peer(stored_json: str, signer_field: str) -> bool:
    """Whether a stored record's own ``signer`` is ``signer_field``'s DID, read off its JSON text.

    Exact without parsing: a stored record's top-level ``signer`` comes after its body (``core.stored``), and
    inside the body a quote is always escaped, so the last unescaped ``"signer":"`` is the record's own.
    """
    at = stored_json.rfind('"signer":"')
    return at >= 0 and stored_json.startswith(signer_field, at)


async def _scoped(
    svc: Services, namespaces: list[str] | None, thread: str | None, after: int, limit: int
) -> queries.ScopedPage:
    page: queries.ScopedPage = await svc.read(
        queries.scoped_page, namespaces=namespaces, thread=thread, after=after, limit=limit, scan_limit=limit
    )
    return page


def _start_of(cursor: str | None, policy: ServePolicy | None) -> int:
    """Where a filtered feed resumes: after the cursor's sequence, or from the start when what the requester
    may read has widened since the cursor was issued (a new grant, a wider allow-list): it then gets what it
    was refused before, and de-duplicates the rest."""
    seq, version = decode_any_cursor(cursor)
    if policy is None or seq == 0:
        return seq
    if version is None or (version < policy.version and policy.widened(version)):
        return 0
    return seq


async def _filtered_changes(namespaces: list[str] | None, thread: str | None, policy: ServePolicy | None) -> Response:
    feed = request.args.get("feed", "normal")
    header = request.headers.get("last-event-id")
    cursor = header if feed == "continuous" and header else request.args.get("since")
    after = _start_of(cursor, policy)
    version = policy.version if policy is not None else 0
    if feed == "continuous":
        svc = services()
        token = caller().token
        release = svc.federation.fed.open_stream(policy.pair_id) if policy is not None and policy.pair_id else None
        key = thread if thread is not None else EVERY_THREAD
        try:
            subscription = await svc.hub.subscribe(key, buffer=256)
        except BaseException:
            if release is not None:
                release()
            raise
        target = request.args.get("target_namespace")

        def recheck() -> ServePolicy | None:
            return _current_policy(svc, token.token_id if token is not None else None, target, policy)

        body = _filtered_stream(svc, subscription, namespaces, thread, recheck, after, version, release)
        weakref.finalize(body, _end_stream, svc, subscription, release).atexit = False
        response = Response(
            body, content_type="text/event-stream; charset=utf-8", headers={"cache-control": "no-cache"}
        )
        response.timeout = None
        return response
    if feed not in ("normal", "longpoll"):
        raise InvalidRequest("feed must be normal, longpoll or continuous", code="INVALID_PARAMETER")
    limit = int_arg("limit", FILTERED_SCAN, minimum=1, maximum=MAX_PAGE) or FILTERED_SCAN
    page = await _scoped(services(), namespaces, thread, after, limit)
    if not page.rows and feed == "longpoll":
        wait = _longpoll_seconds(request.args.get("timeout"))
        subscription = await services().hub.subscribe(thread if thread is not None else EVERY_THREAD)
        try:
            page = await _scoped(services(), namespaces, thread, after, limit)
            if not page.rows:
                with trio.move_on_after(wait):
                    with contextlib.suppress(trio.EndOfChannel):
                        await subscription.take()
                page = await _scoped(services(), namespaces, thread, after, limit)
        finally:
            services().hub.unsubscribe(subscription)
    items, held = _filter_page(services(), page, policy, time.time())
    if policy is not None and policy.pair_id is not None and services().federation is not None:
        services().federation.fed.note_served(policy.pair_id, page.scanned_to)
    cursor_out = (
        encode_policy_cursor(page.scanned_to, version) if policy is not None else encode_cursor(page.scanned_to)
    )
    pending = 0
    if page.has_more:
        pending = await services().read(
            queries.scoped_pending, namespaces=namespaces, thread=thread, after=page.scanned_to, cap=PENDING_CAP
        )
    return json_response(
        f'{{"object":"sync_changes","records":[{",".join(text for _, text in items)}],"next_cursor":"{cursor_out}",'
        f'"has_more":{"true" if page.has_more else "false"},"pending":{pending},'
        f'"held_back":{json.dumps(held, separators=(",", ":"))}}}'
    )


def _current_policy(
    svc: Services, token_id: str | None, target: str | None, opened_with: ServePolicy | None
) -> ServePolicy | None:
    """What the stream's caller may read *now*: its token may have been revoked or may have expired, its pair
    paused, revoked or narrowed since the stream opened. Raises the error that ends the stream."""
    if opened_with is None:
        return None
    token = svc.tokens.get(token_id) if token_id is not None else None
    if token_id is not None and (token is None or token.revoked_at is not None):
        raise AuthRequired("the token was revoked; the stream ends", code="TOKEN_REVOKED")
    if token is not None and token.expired(time.time()):
        raise AuthRequired("the token expired; the stream ends", code="TOKEN_EXPIRED")
    fed = svc.federation.fed if svc.federation is not None else None
    if fed is None:
        raise Unavailable("federation is stopping")
    policy: ServePolicy | None = fed.policy_for(token, target)
    return policy


def _end_stream(svc: Services, subscription: Subscription, release: Callable[[], None] | None) -> None:
    svc.hub.unsubscribe(subscription)
    if release is not None:
        release()


async def _filtered_stream(
    svc: Services,
    subscription: Subscription,
    namespaces: list[str] | None,
    thread: str | None,
    recheck: Callable[[], ServePolicy | None],
    after: int,
    version: int,
    release: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """The continuous form of a filtered feed: the hub only wakes it; every record comes from the store.

    Each event's ``id:`` is the cursor to resume from (a policy cursor under a filter), so a
    receiver that reconnects re-reads nothing it already has. A lagged wake-up subscription
    costs nothing: the next read from the store catches up. The caller's rights are checked
    again before every page (``recheck``): a revoked or expired token, a paused or revoked
    pair ends the stream with an ``error`` event, a narrowed allow-list or map applies at
    once, and a widened grant starts the feed over (the receiver de-duplicates). No cancel
    scope is held across a ``yield`` (runtime.md).
    """
    heartbeat = svc.config.heartbeat_seconds
    try:
        while True:
            try:
                policy = recheck()
            except SplError as error:
                yield sse.error_frame(error.code, error.message)
                return
            if policy is not None:
                if policy.version != version and policy.widened(version):
                    after = 0  # what it was refused before may now be its: start over
                version = policy.version if policy is not None else version
                if namespaces is not None and policy.pair_id is not None:
                    namespaces = [name for name in namespaces if name in policy.targets]
            page = await _scoped(svc, namespaces, thread, after, FILTERED_SCAN) if namespaces != [] else None
            if page is None:
                page = queries.ScopedPage([], False, after, after)
            if page.rows:
                frames = []
                items, _ = _filter_page(svc, page, policy, time.time())
                for seq, item in items:
                    event_id = encode_policy_cursor(seq, version) if policy is not None else str(seq)
                    frames.append(f"event: record.created\nid: {event_id}\ndata: {item}\n\n".encode("ascii"))
                after = page.scanned_to
                if policy is not None and policy.pair_id is not None and svc.federation is not None:
                    svc.federation.fed.note_served(policy.pair_id, after)
                if frames:
                    yield b"".join(frames)
                if page.has_more:
                    continue
            woke, ended = False, False
            with trio.move_on_after(heartbeat):
                try:
                    await subscription.take()
                    woke = True
                except trio.EndOfChannel:
                    ended = True
            if ended:
                if subscription.shutdown:
                    yield sse.shutdown_frame(200)
                    return
                svc.hub.unsubscribe(subscription)  # lagged: a fresh wake-up channel, nothing is lost
                subscription = await svc.hub.subscribe(thread if thread is not None else EVERY_THREAD, buffer=256)
                continue
            if woke:
                while True:  # everything buffered is covered by the next read
                    try:
                        subscription.take_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                continue
            yield sse.heartbeat_frame()
    finally:
        _end_stream(svc, subscription, release)


@blueprint.get("/v1/sync/changes")
async def changes() -> Response:
    require_any(caller(), ("federation:sync", "records:read"))
    thread_arg, namespace_arg = request.args.get("thread"), request.args.get("namespace")
    if thread_arg is not None and namespace_arg is not None:
        raise InvalidRequest(
            "name one feed to pull: thread=<thread id> or namespace=<ns>[,<ns>…], not both", code="INVALID_PARAMETER"
        )
    if thread_arg is None and namespace_arg is None:
        raise InvalidRequest(
            "query parameter 'thread' is required (or namespace=<ns>[,<ns>…] for a federation pair's feed)",
            code="INVALID_THREAD",
        )
    target_arg = request.args.get("target_namespace")
    target = validate_namespace_id(target_arg) if target_arg is not None else None
    policy = _serve_policy(target)
    if namespace_arg is not None:
        namespaces = _namespaces_arg(namespace_arg)
        if policy is not None and policy.pair_id is not None:
            # A namespace this side has not mapped is served as nothing, silently, like a namespace without a
            # grant: a map the peer added on its side alone must not stop the namespaces both sides share.
            namespaces = [name for name in namespaces if name in policy.targets]
            if not namespaces:
                return json_response(
                    '{"object":"sync_changes","records":[],"next_cursor":'
                    f'"{encode_policy_cursor(decode_any_cursor(request.args.get("since"))[0], policy.version)}",'
                    '"has_more":false,"pending":0}'
                )
        return await _filtered_changes(namespaces, None, policy)
    thread = validate_thread(thread_arg, "thread (query parameter)")
    refuse_reserved(thread)
    if policy is not None:
        return await _filtered_changes(None, thread, policy)
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
    token = caller().token
    if token is not None and token.pair_id:
        # A federation pair is pull-only: its token reads the pair's feed and nothing else.
        raise ScopeForbidden(
            "a federation pair's token only pulls the pair's feed; records reach this steward when it pulls them"
        )
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
