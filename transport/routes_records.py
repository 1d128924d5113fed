"""Record routes: emit (``POST /v1/records``), filtered listing and lookup by id."""

from __future__ import annotations

from quart import Blueprint, Response, request

from spl.core.errors import NotFound
from spl.core.record import RECORD_ID, validate_thread
from spl.core.reserved import is_reserved
from spl.core.stored import StoredRecord
from spl.core.wire import decode_record
from spl.store import queries
from spl.transport.auth import reads_configuration, require, require_thread_readable
from spl.transport.context import current_request, services
from spl.transport.requests import body_bytes, int_arg
from spl.transport.responses import json_response

__all__ = ["list_response", "blueprint"]

blueprint = Blueprint("records", __name__)

MAX_LIMIT = 10_000


def list_response(records: list[StoredRecord]) -> Response:
    """``{"object":"list","data":[…]}`` spliced from stored JSON (no re-encoding)."""
    return json_response('{"object":"list","data":[' + ",".join(r.json for r in records) + "]}")


@blueprint.post("/v1/records")
async def emit() -> Response:
    """The SDK's hot path: every lookup here is paid on every emit, so each is made once (issue 9)."""
    req = current_request()
    require(req.caller, "records:write")  # type: ignore[attr-defined]
    local = services()
    envelope = decode_record(await body_bytes(local.config.max_body_bytes))
    accepted = await local.local.accept(envelope)
    return json_response(accepted.record.json, 201 if accepted.created else 200)


@blueprint.get("/v1/records")
async def list_records() -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    caller = request.caller  # type: ignore[attr-defined]
    thread = request.args.get("thread") or None
    if thread is not None:
        validate_thread(thread, "thread (query parameter)")
        require_thread_readable(caller, thread)
    actor = request.args.get("actor") or None
    since = int_arg("since", None)
    limit = int_arg("limit", 100, minimum=1, maximum=MAX_LIMIT)
    after = int_arg("after_sequence", 0)
    records = await services().read(
        queries.list_records,
        thread=thread,
        actor=actor,
        since_clock=since,
        after_seq=after or 0,
        limit=limit or 100,
        # Configuration is not data: the reserved threads (their genesis records from `spl init` included) are
        # never in the unfiltered listing, so a fresh steward lists nothing; an admin reads them by naming one.
        hide_reserved=True,
    )
    return list_response(records)


@blueprint.get("/v1/records/<record_id>")
async def get_record(record_id: str) -> Response:
    require(request.caller, "records:read")  # type: ignore[attr-defined]
    if not RECORD_ID.fullmatch(record_id):
        raise NotFound(f"no record {record_id!r}: record ids are 64 lowercase hex characters")
    record = await services().read(queries.get_record, record_id)
    if record is None or (is_reserved(record.thread) and not reads_configuration(request.caller)):  # type: ignore[attr-defined]
        raise NotFound(f"no record {record_id} on this instance")
    return json_response(record.json)
