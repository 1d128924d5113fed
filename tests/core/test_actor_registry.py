"""The actor registry fold (``th_actor_registry``): request rules, own records only, the latest one wins."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spl.core.actor_registry import (
    ACTOR_REGISTRY_THREAD,
    CATEGORIES,
    MAX_DISPLAY_NAME,
    STATUSES,
    ActorRegistry,
    check_did,
    registration_body,
    registration_request,
)
from spl.core.errors import InvalidRequest

OWN = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
OTHER = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"
DIDS = ("did:sync:agent:builder", "did:sync:user:alice", "did:web:example.com", OWN)


def record(seq: int, did: str, name: str = "n", *, signer: str = OWN, **overrides: Any) -> dict[str, Any]:
    """A stored registration record as the store serves it (decoded), at sequence ``seq``."""
    body = {"kind": "core.actor.registration.v1", "_v": 1, "did": did, "display_name": name, "category": "agent"}
    body["status"] = "active"
    fields: dict[str, Any] = {"thread": ACTOR_REGISTRY_THREAD, "act": "LEARN", "body": body, "signer": signer}
    fields.update(id=f"{seq:064x}", sequence=seq)
    fields.update(overrides)
    return fields


def test_a_request_is_the_four_fields_each_checked() -> None:
    assert registration_request({"did": "did:sync:agent:a", "display_name": "A", "category": "agent"}) == (
        "did:sync:agent:a",
        "A",
        "agent",
        "active",
    )
    bad: list[tuple[dict[str, Any], str]] = [
        ({"did": "alice", "display_name": "A", "category": "agent"}, "INVALID_DID"),
        ({"did": "did:key:zNotAKey", "display_name": "A", "category": "agent"}, "INVALID_DID"),
        ({"did": "did:x:" + "a" * 600, "display_name": "A", "category": "agent"}, "INVALID_DID"),
        ({"did": "did:x:a", "display_name": "", "category": "agent"}, "INVALID_DISPLAY_NAME"),
        ({"did": "did:x:a", "display_name": "a\nb", "category": "agent"}, "INVALID_DISPLAY_NAME"),
        ({"did": "did:x:a", "display_name": "a" * (MAX_DISPLAY_NAME + 1), "category": "agent"}, "INVALID_DISPLAY_NAME"),
        ({"did": "did:x:a", "display_name": "A", "category": "robot"}, "INVALID_CATEGORY"),
        ({"did": "did:x:a", "display_name": "A", "category": "agent", "status": "gone"}, "INVALID_STATUS"),
        ({"did": "did:x:a", "display_name": "A", "category": "agent", "role": "x"}, "INVALID_REQUEST"),
    ]
    for payload, code in bad:
        with pytest.raises(InvalidRequest) as caught:
            registration_request(payload)
        assert caught.value.code == code, payload
    with pytest.raises(InvalidRequest) as caught:
        registration_request([])
    assert "JSON object" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        registration_request({"did": "did:x:a", "display_name": "A", "category": "bot"})
    assert "human, agent, service, instance, adapter" in caught.value.message  # the error names the choices
    assert check_did(OWN) == OWN


def test_only_well_formed_registrations_signed_by_this_instance_count() -> None:
    registry = ActorRegistry(OWN)
    assert registry.apply(record(1, "did:sync:agent:a", "A"))
    assert not registry.apply(record(2, "did:sync:agent:b", signer=OTHER))  # a peer's record: never config
    assert not registry.apply(record(3, "did:sync:agent:c", act="INTEND"))  # e.g. the genesis record
    assert not registry.apply(record(4, "did:sync:agent:d", thread="th_other"))
    assert not registry.apply(record(5, "alice"))  # a stored body is held to the request's rules
    forged = record(6, "did:sync:agent:e")
    forged["body"]["category"] = "root"
    assert not registry.apply(forged)
    assert set(registry.entries) == {"did:sync:agent:a"}
    assert registry.get("did:sync:agent:a") is not None and registry.get("did:sync:agent:a").display_name == "A"


def test_registration_body_round_trips_through_the_fold() -> None:
    body = registration_body("did:sync:user:alice", "Alice", "human", "suspended")
    registry = ActorRegistry.folded([record(9, "x", body=body)], OWN)
    (entry,) = registry.listing()
    assert (entry.did, entry.display_name, entry.category, entry.status, entry.seq) == (
        "did:sync:user:alice",
        "Alice",
        "human",
        "suspended",
        9,
    )


registrations = st.lists(
    st.tuples(
        st.sampled_from(DIDS),
        st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=1, max_size=20),
        st.sampled_from(CATEGORIES),
        st.sampled_from(STATUSES),
        st.booleans(),  # signed by this instance?
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(registrations, st.randoms(use_true_random=False))
def test_the_fold_is_the_latest_own_registration_per_did_whatever_the_order(
    items: list[tuple[str, str, str, str, bool]], rng: random.Random
) -> None:
    records = []
    for seq, (did, name, category, status, own) in enumerate(items, start=1):
        body = {"kind": "core.actor.registration.v1", "_v": 1, "did": did, "display_name": name}
        body.update(category=category, status=status)
        records.append(record(seq, did, body=body, signer=OWN if own else OTHER))
    expected: dict[str, tuple[str, str, str, int]] = {}
    for item in records:  # the model: walk the log, the last own record of each DID wins
        if item["signer"] == OWN and item["body"]["display_name"].isprintable():
            body = item["body"]
            expected[body["did"]] = (body["display_name"], body["category"], body["status"], item["sequence"])

    def view(registry: ActorRegistry) -> dict[str, tuple[str, str, str, int]]:
        return {e.did: (e.display_name, e.category, e.status, e.seq) for e in registry.listing()}

    assert view(ActorRegistry.folded(records, OWN)) == expected
    shuffled = records[:]
    rng.shuffle(shuffled)
    assert view(ActorRegistry.folded(shuffled, OWN)) == expected  # arrival order does not matter
    # Incremental = folded: two partial folds merged (a reload beside applied registrations) give the same.
    cut = rng.randrange(len(records) + 1)
    left, right = ActorRegistry.folded(records[:cut], OWN), ActorRegistry.folded(records[cut:], OWN)
    for entry in left.listing():
        right.keep(entry)
    assert view(right) == expected
