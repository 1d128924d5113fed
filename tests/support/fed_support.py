"""Helpers shared by the federation suites: signed records, waiting, paging a daemon.

Nothing here sleeps to let something happen: :func:`wait_until` polls a condition
against a deadline and fails with a message that says what it was waiting for.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from spl.core.identity import Identity
from spl.core.record import validate_envelope

__all__ = [
    "all_records",
    "envelope",
    "sign_envelope",
    "signed",
    "thread_count",
    "wait_until",
    "wire_record",
]


def envelope(thread: str, clock: int, *, actor: str = "did:test:fed", act: str = "PUT", **body: Any) -> dict[str, Any]:
    """The envelope a client sends to ``POST /v1/records``."""
    return {"act": act, "actor": actor, "thread": thread, "clock": clock, "body": body or {"n": clock}}


def signed(identity: Identity, thread: str, clock: int, *, actor: str = "did:test:fed", **body: Any) -> dict[str, Any]:
    """A record as a peer serves it: the envelope plus its id, ``signer`` and ``sig``."""
    return sign_envelope(identity, envelope(thread, clock, actor=actor, **body))


def sign_envelope(identity: Identity, raw: dict[str, Any]) -> dict[str, Any]:
    """Any envelope as ``identity`` would serve it once accepted: defaults, id, ``signer``, ``sig``."""
    checked = validate_envelope(raw)
    return {
        **raw,
        "data_type": checked.data_type,
        "parents": checked.parents,
        "id": checked.id,
        "signer": identity.did,
        "sig": identity.sign_record_id(checked.id),
    }


def wire_record(record: dict[str, Any], sequence: int) -> dict[str, Any]:
    """The served form of ``record`` at ``sequence`` on the serving instance."""
    return {"object": "record", **record, "namespace": "default", "sequence": sequence}


async def wait_until(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    within: float,
    what: str,
    *,
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; that value is returned.

    Fails after ``within`` seconds of real time with ``what`` and the last value seen.
    """
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}; last value: {last!r}"[:3000])
        await trio.sleep(interval)


async def all_records(
    client: httpx.AsyncClient, url: str, thread: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every record of ``thread`` on the daemon at ``url``, in sequence order (paged by ``after_sequence``)."""
    records: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await client.get(
            f"{url}/v1/records",
            params={"thread": thread, "limit": 10_000, "after_sequence": after},
            headers=headers or {},
        )
        assert response.status_code == 200, response.text[:500]
        page = response.json()["data"]
        records.extend(page)
        if len(page) < 10_000:
            return records
        after = page[-1]["sequence"]


async def thread_count(client: httpx.AsyncClient, url: str, thread: str, headers: dict[str, str] | None = None) -> int:
    """How many records ``thread`` holds on the daemon at ``url`` (0 when it has none yet)."""
    response = await client.get(f"{url}/v1/threads/{thread}", headers=headers or {})
    if response.status_code == 404:
        return 0
    assert response.status_code == 200, response.text[:500]
    return int(response.json()["record_count"])
