"""Pure kernel logic: the thread fold, the namespace registry, tokens and scopes."""

from __future__ import annotations

from typing import Any

import pytest

from spl.core import tokens
from spl.core.errors import InvalidRequest, NamespaceRejected
from spl.core.fold import ThreadFold
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD, NamespaceRegistry, ancestors, validate_namespace_id

_seq = iter(range(1, 10_000))


def record(
    act: str, actor: str = "did:a", body: dict[str, Any] | None = None, rid: str | None = None
) -> dict[str, Any]:
    seq = next(_seq)
    return {"id": rid or f"{seq:064x}", "act": act, "actor": actor, "body": body or {}, "clock": seq, "sequence": seq}


def test_lifecycle_open_active_observed_done() -> None:
    fold = ThreadFold("th_x")
    assert fold.state == "unopened"
    intend = record("INTEND", rid="a" * 64)
    fold.apply(intend)
    assert fold.state == "open" and fold.opened_by == "a" * 64
    fold.apply(record("DO", actor="did:b"))
    assert fold.state == "active"
    fold.apply(record("KNOW", actor="did:b", body={"summary": "half way"}))
    assert fold.state == "observed"
    closing = record("KNOW", body={"fulfills": ["a" * 64]})
    fold.apply(closing)
    assert fold.state == "done" and fold.closed_by == closing["id"]
    fold.apply(record("DO"))
    assert fold.state == "done"  # terminal


def test_fulfills_must_name_an_intent_of_the_thread() -> None:
    fold = ThreadFold("th_x")
    fold.apply(record("INTEND", rid="a" * 64))
    fold.apply(record("KNOW", body={"fulfills": "b" * 64}))
    assert fold.state == "observed"


@pytest.mark.parametrize(("act", "body"), [("DO", {"cancels": "a" * 64}), ("KNOW", {"verdict": "reject"})])
def test_cancellation(act: str, body: dict[str, Any]) -> None:
    fold = ThreadFold("th_x")
    fold.apply(record("INTEND", rid="a" * 64))
    fold.apply(record(act, actor="did:reviewer", body=body))
    assert fold.state == "cancelled"


def test_participants_counts_roles_and_replay_is_ignored() -> None:
    fold = ThreadFold("th_x")
    first = record("INTEND", actor="did:opener")
    fold.apply(first)
    fold.apply(record("KNOW", actor="did:rev", body={"verdict": "accept"}))
    fold.apply(record("DO", actor="did:rev"))
    fold.apply(first)  # same sequence again: already folded
    wire = fold.to_wire()
    assert wire["record_count"] == 3
    assert {p["actor"]: (p["record_count"], p["role"]) for p in wire["participants"]} == {
        "did:opener": (1, "opener"),
        "did:rev": (2, "reviewer"),
    }


def registry_record(namespace: str, status: str = "active") -> dict[str, Any]:
    return {"kind": NAMESPACE_KIND, "namespace_id": namespace, "status": status}


def test_namespace_chain_names_the_first_missing_ancestor() -> None:
    registry = NamespaceRegistry()
    registry.check("default")
    with pytest.raises(NamespaceRejected) as caught:
        registry.check("acme/ops")
    assert "ancestor 'acme' is not Active in the registry" in caught.value.message
    assert "spl namespace create acme" in caught.value.message
    assert registry.apply(REGISTRY_THREAD, "LEARN", registry_record("acme"), "r1", 1)
    with pytest.raises(NamespaceRejected) as caught:
        registry.check("acme/ops")
    assert "ancestor 'acme/ops'" in caught.value.message
    registry.apply(REGISTRY_THREAD, "LEARN", registry_record("acme/ops"), "r2", 2)
    registry.check("acme/ops")
    registry.apply(REGISTRY_THREAD, "LEARN", registry_record("acme", "archived"), "r3", 3)
    with pytest.raises(NamespaceRejected):
        registry.check("acme/ops")


def test_registry_ignores_other_threads_acts_and_default() -> None:
    registry = NamespaceRegistry()
    assert not registry.apply("th_other", "LEARN", registry_record("x"), "r", 1)
    assert not registry.apply(REGISTRY_THREAD, "KNOW", registry_record("x"), "r", 1)
    assert not registry.apply(REGISTRY_THREAD, "LEARN", registry_record("default", "deleted"), "r", 1)
    assert registry.is_active("default") and not registry.is_active("x")


@pytest.mark.parametrize("bad", ["", "Acme", "a//b", "-a", "a/b/c/d/e", "a" * 64, "a b"])
def test_invalid_namespace_ids(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        validate_namespace_id(bad)


def test_ancestors() -> None:
    assert ancestors("a/b/c") == ["a", "a/b", "a/b/c"]


def test_token_format_parse_and_scopes() -> None:
    minted = tokens.mint("prod")
    assert minted.plaintext.startswith("spl_prod_sa_")
    parsed = tokens.parse(minted.plaintext)
    assert parsed is not None and parsed.token_id == minted.token_id and parsed.sa_id == minted.sa_id
    assert minted.token_id not in minted.plaintext  # only the hash is stored
    assert tokens.parse("spl_prod_sa_x_nothex") is None
    assert tokens.parse("Bearer whatever") is None
    assert tokens.allows(frozenset({"admin"}), "records:write")
    assert tokens.allows(frozenset({"records:write"}), "records:write")
    assert not tokens.allows(frozenset({"records:read"}), "records:write")
    assert tokens.unknown_scopes(["records:read", "root"]) == ["root"]
