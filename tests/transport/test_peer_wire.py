"""Peer pages and record events decode through typed msgspec Structs, without letting one odd record block a pair."""

from __future__ import annotations

import json

import pytest

from spl.core.feed import PeerProtocolError, parse_changes_page, parse_record_event


def page(**fields: object) -> bytes:
    return json.dumps({"records": [{"id": "x", "record": {"id": "x", "thread": "t"}}], **fields}).encode()


def test_a_page_decodes_with_its_types() -> None:
    decoded = parse_changes_page(page(next_cursor="s1.9", has_more=True, pending=3), sent_cursor="s1.0", limit=10)
    assert (decoded.records, decoded.next_cursor, decoded.has_more, decoded.pending) == (
        [{"id": "x", "thread": "t"}],
        "s1.9",
        True,
        3,
    )


@pytest.mark.parametrize(
    ("fields", "where"),
    [({"has_more": 1}, "has_more"), ({"pending": True}, "pending"), ({"pending": -1}, "pending")],
)
def test_a_field_of_the_wrong_type_names_its_path(fields: dict[str, object], where: str) -> None:
    with pytest.raises(PeerProtocolError, match=rf"\$\.{where}"):
        parse_changes_page(page(**fields), sent_cursor="s1.0", limit=10)


def test_a_lone_surrogate_in_one_record_does_not_refuse_the_page() -> None:
    # msgspec will not read "\ud800"; the standard library will, and verification then refuses that record
    # alone. Refusing the page instead would stop the pair at this record for ever.
    body = b'{"records":[{"record":{"id":"a","body":{"t":"\\ud800"}}},{"record":{"id":"b"}}],"next_cursor":"s1.2"}'
    decoded = parse_changes_page(body, sent_cursor="s1.0", limit=10)
    assert [r["id"] for r in decoded.records] == ["a", "b"]
    cursor, record = parse_record_event("s1.3", '{"record":{"id":"c","body":{"t":"\\ud800"}}}')
    assert (cursor, record["id"]) == ("s1.3", "c")
