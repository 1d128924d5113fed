"""What counts as "this machine": names are never resolved, only literals and ``localhost`` are loopback.

Before, any host starting with ``127.`` counted, so ``127.0.0.1.attacker.example`` (a name an attacker's DNS can
point anywhere) passed as loopback. The Host gate of an auth-off daemon (DNS rebinding) uses the same check.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spl.core.pairs import is_loopback_host
from spl.transport.app import is_loopback_host as is_loopback_host_header


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "::1", "[::1]"])
def test_loopback_literals_and_localhost(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize(
    "host", ["127.0.0.1.attacker.example", "127.evil", "localhost.evil", "10.0.0.1", "::2", "", "0.0.0.0", "127.1"]
)
def test_names_that_merely_look_local_are_not(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize("header", ["127.0.0.1:9100", "localhost", "[::1]:80", "Localhost:1"])
def test_host_headers_for_this_machine(header: str) -> None:
    assert is_loopback_host_header(header)


@pytest.mark.parametrize("header", ["127.0.0.1.nip.io:9100", "::1", "[::1", "127.0.0.1:", "127.0.0.1:123456", "a:1:2"])
def test_host_headers_that_are_not(header: str) -> None:
    assert not is_loopback_host_header(header)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-", min_size=1, max_size=30))
def test_no_dns_name_is_loopback_except_localhost(label: str) -> None:
    name = "127.0.0.1." + label
    assert not is_loopback_host(name)
    assert not is_loopback_host_header(name + ":9100")
