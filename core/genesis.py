"""Genesis records: the opening INTEND of each of the six reserved threads of seed 003. Pure: no I/O.

Seed 003 says every thread starts with an INTEND stating its purpose, and that the six reserved threads
(``th_engine_config``, ``th_actor_registry``, ``th_namespace_registry``, ``th_instance_registry``,
``th_fleet_control``, ``th_consent``) exist from the start. ``spl init`` therefore writes one genesis record on
each, signed by the instance: act ``INTEND``, actor the instance DID, body
``{"kind": "core.reserved.genesis.v1", "_v": 1, "goal": <purpose>, "read_by": <reader>}`` (the seed's table, word for
word). ``th_instance_registry``'s also names the instance and the capabilities it serves.

A genesis body is configuration of nothing: every fold of a reserved thread reads only ``LEARN`` records of its
own ``kind``, so a genesis record opens the thread (its fold shows who opened it and why) and changes no state.
The store part (which threads still lack one, the commit) is ``spl.store.genesis``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spl.core.manifest import VERSION, capabilities_manifest
from spl.core.record import Envelope, validate_envelope

__all__ = [
    "GENESIS_ACT",
    "GENESIS_KIND",
    "GENESIS_THREADS",
    "INSTANCE_REGISTRY",
    "PURPOSES",
    "genesis_body",
    "genesis_envelope",
    "genesis_envelopes",
    "instance_capabilities",
    "is_genesis",
]

GENESIS_KIND = "core.reserved.genesis.v1"
GENESIS_ACT = "INTEND"
INSTANCE_REGISTRY = "th_instance_registry"

# thread -> (goal, read_by): seed 003's "Reserved threads" table, in its order.
PURPOSES: Mapping[str, tuple[str, str]] = {
    "th_engine_config": (
        "Engine config: routing rules, triggers, CEL policies, auth config.",
        "The engine on every broadcast.",
    ),
    "th_actor_registry": (
        "Registered actors: DID, display name, category, status.",
        "Actor resolution in the router, CEL record.actor binding.",
    ),
    "th_namespace_registry": (
        "Namespace hierarchy: ORG / PROJECT / ENV / JOB entries.",
        "The namespace narrowing check at ingest.",
    ),
    INSTANCE_REGISTRY: (
        "Live fleet: heartbeats, endpoint URLs, capabilities per instance.",
        "Fan-out dispatch target selection.",
    ),
    "th_fleet_control": (
        "Kill switch state: soft / hard / emergency freeze records.",
        "CEL permission rules on every write.",
    ),
    "th_consent": (
        "Cross-namespace consent grants.",
        "The federation consent filter on every sync pull.",
    ),
}
GENESIS_THREADS: tuple[str, ...] = tuple(PURPOSES)


def instance_capabilities() -> list[str]:
    """The capabilities this spl serves, by name: those its capabilities manifest (spec §8.2) marks true."""
    flags = capabilities_manifest(auth_required=True)["capabilities"]
    return sorted(name for name, served in flags.items() if served is True)


def genesis_body(thread: str, did: str) -> dict[str, Any]:
    """The body of ``thread``'s genesis record for the instance ``did``.

    Raises:
        ValueError: ``thread`` is not one of the six (a bug in the caller).
    """
    if thread not in PURPOSES:
        raise ValueError(f"{thread} has no genesis record: only the six reserved threads of seed 003 do")
    goal, read_by = PURPOSES[thread]
    body: dict[str, Any] = {"kind": GENESIS_KIND, "_v": 1, "goal": goal, "read_by": read_by}
    if thread == INSTANCE_REGISTRY:
        # Who this instance is and what it serves, as of its creation. No heartbeats: see docs/reserved-threads.md.
        body["instance"] = {"did": did, "version": VERSION, "capabilities": instance_capabilities()}
    return body


def genesis_envelope(thread: str, did: str, clock: int) -> Envelope:
    """``thread``'s genesis record for ``did`` at ``clock`` (validated, its id computed), to be signed by ``did``."""
    return validate_envelope(
        {"act": GENESIS_ACT, "actor": did, "thread": thread, "clock": clock, "body": genesis_body(thread, did)}
    )


def genesis_envelopes(did: str, clock: int, threads: Sequence[str] = GENESIS_THREADS) -> list[Envelope]:
    """The genesis records of ``threads`` (all six by default) for ``did``, each at ``clock``.

    One clock serves all six: a record's clock is unique per (thread, actor), and each is on its own thread.
    """
    return [genesis_envelope(thread, did, clock) for thread in threads]


def is_genesis(act: object, body: object) -> bool:
    """Whether a record (its act and body) is a genesis record: what a fold of a reserved thread skips."""
    return act == GENESIS_ACT and isinstance(body, Mapping) and body.get("kind") == GENESIS_KIND
