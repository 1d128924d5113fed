"""Setting a run up: one pair per thread on the receiver, a priming record per thread, wait until they all pull."""

from __future__ import annotations

from typing import Any

import trio

from spl.soak.config import SoakError
from spl.soak.readback import read_receiver
from spl.soak.samplers import look_at_daemons
from spl.soak.session import Session

__all__ = ["CONTROL_CONCURRENCY", "pair_states", "set_up"]

CONTROL_CONCURRENCY = 8  # control calls (create, pause, resume) in flight at once


async def set_up(session: Session) -> None:
    """Create the pairs, emit each thread's clock-1 record, and wait until every pair runs and has it.

    Raises:
        SoakError: the source has no identity, a pair or an emit was refused, or the pairs did not
            start within the setup timeout.
    """
    config, ledger = session.config, session.ledger
    source = session.cluster.source_url
    response = await session.request("GET", f"{source}/v1/identity", headers=session.source_headers)
    if response.status_code != 200:
        raise SoakError(f"the peer at {source} answered {response.status_code} to GET /v1/identity")
    did = response.json().get("did")
    if not isinstance(did, str):
        raise SoakError(f"the peer at {source} has no identity (GET /v1/identity gave no did)")
    limiter = trio.CapacityLimiter(CONTROL_CONCURRENCY)
    pair_ids: dict[int, str] = {}
    for sample in await trio.to_thread.run_sync(look_at_daemons, session.cluster, 0.0):
        ledger.baseline[sample.role] = sample

    async def create(index: int) -> None:
        async with limiter:
            body: dict[str, Any] = {
                "peer_did": did,
                "peer_url": session.cluster.pair_url,
                "thread_id": session.threads[index],
                "mode": config.mode,
            }
            if config.mode == "polling":
                body["poll_interval"] = config.poll_interval
            if config.peer_token:
                body["token"] = config.peer_token
            answer = await session.request("POST", f"{session.receiver_url}/v1/sync/pairs", json=body)
            if answer.status_code != 201:
                raise SoakError(f"creating a pair on the receiver failed: {answer.status_code} {answer.text[:300]}")
            pair_ids[index] = str(answer.json()["pair_id"])

    async def prime(index: int) -> None:
        async with limiter:
            answer = await session.request(
                "POST",
                f"{source}/v1/records",
                headers={**session.source_headers, "content-type": "application/json"},
                content=session.emit_body(index, 1),
            )
            if answer.status_code not in (200, 201):
                raise SoakError(
                    f"emitting to {source} failed: {answer.status_code} {answer.text[:300]}"
                    + (" (is --peer-token valid, with records:write?)" if answer.status_code in (401, 403) else "")
                )

    async with trio.open_nursery() as nursery:
        for index in range(config.pairs):
            nursery.start_soon(create, index)
    session.pair_ids = [pair_ids[index] for index in range(config.pairs)]
    if config.emit == "push":  # read the source back from its current head, not from its first record
        status = await session.request("GET", f"{source}/v1/status", headers=session.source_headers)
        if status.status_code == 200:
            session.source_after = int(status.json().get("sequence") or 0)
    async with trio.open_nursery() as nursery:
        for index in range(config.pairs):
            nursery.start_soon(prime, index)
    session.progress.note(f"{config.pairs} {config.mode} pair(s) created; waiting for them to pull")
    limit = config.setup_timeout or 60.0 + 0.1 * config.pairs
    with trio.move_on_after(limit) as scope:
        while True:
            await read_receiver(session)
            states = await pair_states(session)
            if all(ledger.primed) and states.get("running", 0) >= config.pairs:
                break
            await trio.sleep(0.2)
    if scope.cancelled_caught:
        raise SoakError(
            f"the pairs did not start within {limit:.0f}s (priming records synced: "
            f"{sum(ledger.primed)}/{config.pairs}); see the receiver's log"
        )
    await trio.sleep(config.settle)  # let continuous streams open after their first pull


async def pair_states(session: Session) -> dict[str, int]:
    """How many of this run's pairs are in each state, as the receiver reports them."""
    response = await session.request("GET", f"{session.receiver_url}/v1/sync/pairs")
    counts: dict[str, int] = {}
    ours = set(session.pair_ids)
    for pair in response.json().get("data", []):
        if pair.get("pair_id") in ours:
            counts[str(pair.get("state"))] = counts.get(str(pair.get("state")), 0) + 1
    return counts
