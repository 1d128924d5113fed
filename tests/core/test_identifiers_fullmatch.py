"""Identifiers are matched whole: a trailing newline is not part of any legal id.

``re.match`` with a pattern written ``^…$`` accepts ``"th_x\\n"``, because ``$`` also
matches just before a final newline. Every validator here must refuse such a value, and
the exported patterns must refuse it even when a caller uses ``.match``.
"""

from __future__ import annotations

import pytest

from spl.core import tokens
from spl.core.errors import InvalidRecord, InvalidRequest, NamespaceRejected
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD, NamespaceRegistry, validate_namespace_id
from spl.core.record import RECORD_ID, THREAD, validate_envelope, validate_thread

RID = "a" * 64
ENDINGS = ["\n", "\r\n", "\n\n", " ", "\x00"]


def envelope(**fields: object) -> dict[str, object]:
    record: dict[str, object] = {"act": "PUT", "actor": "did:test:x", "body": {}, "clock": 1, "thread": "th_x"}
    record.update(fields)
    return record


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_thread_with_a_trailing_newline_is_refused(ending: str) -> None:
    assert validate_thread("th_x") == "th_x"
    with pytest.raises(InvalidRecord) as caught:
        validate_thread("th_x" + ending)
    assert caught.value.code == "INVALID_THREAD"
    with pytest.raises(InvalidRecord) as caught:
        validate_envelope(envelope(thread="th_x" + ending))
    assert caught.value.code == "INVALID_THREAD"


def test_the_exported_patterns_refuse_a_trailing_newline_even_with_match() -> None:
    # Other modules import RECORD_ID / THREAD (transport/routes_records.py uses .match).
    assert RECORD_ID.match(RID) and THREAD.match("th_x")
    assert RECORD_ID.match(RID + "\n") is None
    assert THREAD.match("th_x\n") is None
    assert THREAD.match("a" * 256 + "\n") is None


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_record_id_with_a_trailing_newline_is_refused(ending: str) -> None:
    assert validate_envelope(envelope(parents=[RID], judged_by=RID)).parents == [RID]
    with pytest.raises(InvalidRecord) as caught:
        validate_envelope(envelope(parents=[RID + ending]))
    assert caught.value.field == "parents"
    with pytest.raises(InvalidRecord) as caught:
        validate_envelope(envelope(judged_by=RID + ending))
    assert caught.value.field == "judged_by"


@pytest.mark.parametrize("namespace", ["acme\n", "acme/ops\n", "acme\r\n", "default\n"])
def test_a_namespace_with_a_trailing_newline_is_refused(namespace: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_namespace_id(namespace)
    assert caught.value.code == "INVALID_NAMESPACE"


def test_the_registry_refuses_a_namespace_registered_with_a_trailing_newline() -> None:
    # A registry record may carry any namespace_id (it can arrive from a peer); ingest must
    # still refuse "acme\n" as a record's body.namespace.
    registry = NamespaceRegistry()
    body = {"kind": NAMESPACE_KIND, "namespace_id": "acme\n", "status": "active"}
    assert registry.apply(REGISTRY_THREAD, "LEARN", body, RID, 1)
    with pytest.raises(NamespaceRejected):
        registry.check("acme\n")


def test_a_token_or_env_with_a_trailing_newline_is_refused() -> None:
    minted = tokens.mint("local")
    assert tokens.parse(minted.plaintext) is not None
    # Surrounding whitespace of a presented token is stripped on purpose (copied from a file);
    # anything else after the secret is not a token.
    assert tokens.parse(minted.plaintext + "\n") is not None
    assert tokens.parse(minted.plaintext + "\nx") is None
    assert tokens.parse(minted.plaintext + "x") is None
    assert tokens.validate_env("local") == "local"
    with pytest.raises(InvalidRequest) as caught:
        tokens.validate_env("local\n")  # a token minted with it could never authenticate
    assert caught.value.code == "INVALID_ENV"
