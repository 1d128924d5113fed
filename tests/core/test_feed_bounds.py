"""The container bound on a peer's JSON: exact at its edge, and free for a body too short to reach it."""

from __future__ import annotations

import pytest

from spl.core.feed import PeerProtocolError, check_containers


@pytest.mark.parametrize("body", [b"{" * 100, "[" * 100, b"{}" * 50, b"x" * 10_000])
def test_a_body_of_at_most_budget_characters_passes_whatever_it_holds(body: bytes | str) -> None:
    check_containers(body, 100)


@pytest.mark.parametrize("body", [b"{" * 101, "[" * 101, b"[{" * 60, b" " * 1000 + b"{" * 101])
def test_more_containers_than_the_budget_are_refused(body: bytes | str) -> None:
    with pytest.raises(PeerProtocolError, match="objects/arrays"):
        check_containers(body, 100)


def test_a_long_body_with_few_containers_passes() -> None:
    check_containers(b'{"a":"' + b"x" * 10_000 + b'"}', 100)
