"""Emitting at the window rates: a pacer on trio's clock feeding bounded workers.

- the **pacer** (:func:`produce`) computes how many emits are due (:func:`spl.soak.plan.emits_due`:
  the integral of the window's rate, times the number of pairs) and sends ``(pair, clock)`` jobs
  into a bounded channel;
- ``--emit records``: each **emit worker** owns one raw HTTP/1.1 keep-alive connection to the
  source (:mod:`spl.soak.raw_http`) and POSTs one record per request; an emit is acknowledged
  with the record's id and the source's commit time;
- ``--emit push``: each **push worker** sends whatever is queued (up to :data:`PUSH_BATCH`) as
  one batch signed by the run's own key to ``POST /v1/sync/records``; the source's commit times
  come from :func:`spl.soak.readback.read_source`.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from spl.core.record import validate_envelope
from spl.core.syncstats import parse_rfc3339
from spl.soak.ledger import Emitted
from spl.soak.plan import emits_due, rate_at, window_index
from spl.soak.raw_http import KeepAliveConnection, ProtocolError
from spl.soak.session import Session

__all__ = ["EMIT_ATTEMPTS", "PUSH_BATCH", "ROUND_TRIP_TIMEOUT", "emit"]

PUSH_BATCH = 500  # records per POST /v1/sync/records
EMIT_ATTEMPTS = 6
ROUND_TRIP_TIMEOUT = 30.0

Job = tuple[int, int]  # (pair index, clock)


async def emit(session: Session) -> None:
    """Emit for the whole run, then return once every worker has sent what it was given."""
    connections = session.config.emit_connections()
    push = session.config.emit == "push"
    send, receive = trio.open_memory_channel[Job](PUSH_BATCH * 2 if push else connections)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, session, send)
        async with receive:
            for _ in range(connections):
                nursery.start_soon(push_worker if push else emit_worker, session, receive.clone())


async def produce(session: Session, send: trio.MemorySendChannel[Job]) -> None:
    """Pace emits on trio's clock; skip (and count) what the source cannot take in time.

    The emitter never runs more than half a second behind the schedule, and what a
    window scheduled but could not send by its end is dropped, not carried into the
    next window: a saturated source shows as ``emitted < target``, never as a spike
    that spills into recovery.
    """
    config, windows, skipped = session.config, session.windows, session.ledger.skipped_by_window
    total = config.total_seconds
    connections = config.emit_connections()
    tick = min(0.02, max(0.002, 1.0 / max(config.peak_total_rate, 1.0)))
    done = 0  # emits produced or skipped so far
    current_window = 0
    async with send:
        while (t := session.now()) < total:
            window = window_index(windows, t)
            due = int(config.pairs * emits_due(windows, config.rate, t))
            if window != current_window:  # the previous window's backlog is dropped
                behind = int(config.pairs * emits_due(windows, config.rate, windows[window].start)) - done
                if behind > 0:
                    skipped[current_window] += behind
                    done += behind
                current_window = window
            allowed = max(4 * connections, int(0.5 * config.pairs * rate_at(windows, config.rate, t)))
            if due - done > allowed:
                skipped[window] += due - done - allowed
                done = due - allowed
            deadline = trio.current_time() + 0.05
            while done < due and trio.current_time() < deadline:
                index = done % config.pairs
                session.clocks[index] += 1
                await send.send((index, session.clocks[index]))
                done += 1
            if done >= due:
                await trio.sleep(tick)


def _note_failure(session: Session, outcome: str, what: str, count: int = 1) -> None:
    failures = session.ledger.emit_failures
    failures.extend([outcome] * count)
    if len(failures) <= 3 * count:
        session.progress.note(f"{what} failed after retries: {outcome}")


async def emit_worker(session: Session, jobs: trio.MemoryReceiveChannel[Job]) -> None:
    """``--emit records``: one POST /v1/records per job, on a raw keep-alive connection (httpx for https)."""
    ledger = session.ledger
    parts = urlsplit(session.cluster.source_url)
    raw = parts.scheme == "http"
    host, port = parts.hostname or "127.0.0.1", parts.port or (80 if raw else 443)
    auth = "".join(f"{name}: {value}\r\n" for name, value in session.source_headers.items())
    connection: KeepAliveConnection | None = None
    try:
        async for index, clock in jobs:
            body = session.emit_body(index, clock)
            request = (
                f"POST {parts.path.rstrip('/')}/v1/records HTTP/1.1\r\nhost: {parts.netloc}\r\n{auth}"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            ).encode() + body
            t_sent = session.now()
            outcome: str | None = None
            for attempt in range(EMIT_ATTEMPTS):
                try:
                    if raw:
                        if connection is None:
                            connection = await KeepAliveConnection.open(host, port)
                        with trio.fail_after(ROUND_TRIP_TIMEOUT):
                            status, payload, keep = await connection.round_trip(request)
                        if not keep:
                            await connection.aclose()
                            connection = None
                    else:
                        response = await session.client().post(
                            f"{session.cluster.source_url}/v1/records",
                            content=body,
                            headers={**session.source_headers, "content-type": "application/json"},
                        )
                        status, payload = response.status_code, response.content
                except (OSError, trio.BrokenResourceError, trio.TooSlowError, ProtocolError, httpx.HTTPError):
                    if connection is not None:
                        await connection.aclose()
                        connection = None
                    outcome = "connection failed"
                    await trio.sleep(min(1.0, 0.05 * 2**attempt))
                    continue
                if status in (200, 201):
                    record = json.loads(payload)
                    committed = parse_rfc3339(record.get("created_at"))
                    window = window_index(session.windows, t_sent)
                    ledger.emitted[record["id"]] = Emitted(t_sent, window, committed or time.time())
                    ledger.emitted_by_window[window] += 1
                    outcome = None
                    break
                outcome = f"HTTP {status}: {payload[:200].decode(errors='replace')}"
                if status < 500 and status != 429:
                    break
                await trio.sleep(min(1.0, 0.05 * 2**attempt))
            if outcome is not None:
                _note_failure(session, outcome, "emit")
    finally:
        if connection is not None:
            await connection.aclose()


def signed_record(session: Session, index: int, clock: int) -> dict[str, Any]:
    """A record signed by this run's own key, as ``POST /v1/sync/records`` takes it."""
    assert session.signer is not None
    envelope = validate_envelope(json.loads(session.emit_body(index, clock)))
    return {
        **envelope.fields(),
        "signer": session.signer.did,
        "sig": session.signer.sign_record_id(envelope.id),
    }


async def push_worker(session: Session, jobs: trio.MemoryReceiveChannel[Job]) -> None:
    """``--emit push``: whatever is queued (up to PUSH_BATCH) goes out as one signed batch."""
    ledger = session.ledger
    parts = urlsplit(session.cluster.source_url)
    url = f"{session.cluster.source_url}/v1/sync/records"
    headers = {**session.source_headers, "content-type": "application/json"}
    async for first in jobs:
        items = [first]
        while len(items) < PUSH_BATCH:
            try:
                items.append(jobs.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        records = [signed_record(session, index, clock) for index, clock in items]
        body = json.dumps({"records": records}, separators=(",", ":")).encode()
        t_sent = session.now()
        outcome: str | None = "no attempt"
        for attempt in range(EMIT_ATTEMPTS):
            try:
                response = await session.client().post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__} ({parts.netloc})"
                await trio.sleep(min(1.0, 0.05 * 2**attempt))
                continue
            if response.status_code == 200:
                answer = response.json()
                window = window_index(session.windows, t_sent)
                for record_id in [*answer.get("accepted", []), *answer.get("duplicates", [])]:
                    if record_id not in ledger.emitted:
                        committed = ledger.source_times.get(record_id)
                        ledger.emitted[record_id] = Emitted(t_sent, window, committed)
                        ledger.emitted_by_window[window] += 1
                        ledger.unconfirmed += committed is None
                for refusal in answer.get("refused", []):
                    ledger.emit_failures.append(f"refused {refusal.get('code')}: {refusal.get('reason')}")
                outcome = None
                break
            outcome = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code < 500 and response.status_code != 429:
                break
            await trio.sleep(min(1.0, 0.05 * 2**attempt))
        if outcome is not None:
            _note_failure(session, outcome, "push", len(items))
