"""Reading records back: the receiver's commit time of every record the soak emitted (and, for pushes, the source's).

A record's lag is its commit time on the receiver minus its commit time on the source, both as the
daemons wrote them (``created_at``), so the soak's own clock never enters the figure.
"""

from __future__ import annotations

import json
from typing import Any

from spl.core.syncstats import parse_rfc3339
from spl.soak.session import Session

__all__ = ["READBACK_PAGE", "read_receiver", "read_source"]

READBACK_PAGE = 10_000


async def _read_after(
    session: Session, base_url: str, after: int, headers: dict[str, str]
) -> tuple[list[Any], int, bool]:
    """One page of ``base_url``'s records after sequence ``after``: (records, new after, more to read)."""
    response = await session.sampler().get(
        f"{base_url}/v1/records",
        params={"after_sequence": after, "limit": READBACK_PAGE},
        headers=headers,
        timeout=60.0,
    )
    response.raise_for_status()
    page: list[Any] = json.loads(response.content).get("data", [])
    if page:
        after = max(after, int(page[-1].get("sequence", 0)))
    return page, after, len(page) == READBACK_PAGE


async def read_receiver(session: Session) -> None:
    """Read the receiver's records after the last one seen: their receiver commit times."""
    ledger = session.ledger
    more = True
    while more:
        page, session.receiver_after, more = await _read_after(
            session, session.receiver_url, session.receiver_after, {}
        )
        for record in page:
            thread = record.get("thread")
            if thread in session.thread_set:
                committed = parse_rfc3339(record.get("created_at"))
                if committed is not None:
                    ledger.synced[record["id"]] = committed
                if record.get("clock") == 1:
                    ledger.primed[int(thread.rsplit("_", 1)[1])] = True


async def read_source(session: Session) -> None:
    """``--emit push``: the source's commit time of each pushed record (a push ack carries none)."""
    ledger = session.ledger
    more = True
    while more:
        page, session.source_after, more = await _read_after(
            session, session.cluster.source_url, session.source_after, session.source_headers
        )
        for record in page:
            if record.get("thread") not in session.thread_set:
                continue
            committed = parse_rfc3339(record.get("created_at"))
            if committed is None:
                continue
            # The read-back can see a record before its push is acknowledged: keep every time.
            ledger.source_times[record["id"]] = committed
            emitted = ledger.emitted.get(record["id"])
            if emitted is not None and emitted.source_committed is None:
                emitted.source_committed = committed
                ledger.unconfirmed -= 1
