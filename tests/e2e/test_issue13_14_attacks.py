"""An attacker's pass over the mesh-health page (issue 13) and device pairing (issue 14): each test is an attack that
worked before its fix, or one whose defence lives on the wire and had no test.

One real daemon with authentication on serves the wire tests (the stream's places freed when clients hang up, what a
scraper's token reads, the redeem limit keyed by the socket's address); each of those talks from its own loopback
address (127.0.0.x), so their rate-limit buckets stay apart. The rest runs in-process (milliseconds each).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import trio
from e2e_support import assert_error, make_daemon, mint_token
from inprocess import InProcessDaemon
from quart import request

from spl.core.pairing import PER_SOURCE_BURST
from spl.daemon.launcher import DaemonProcess
from spl.transport import routes_pairing
from spl.transport.routes_pairing import REDEEM_PATH
from spl.transport.routes_ui import EVENTS_ROUTE, MAX_STREAMS

WAIT = 15.0


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("attacks") / "home", insecure=False)
    try:
        yield process
    finally:
        process.stop()


def client_from(address: str) -> httpx.Client:
    """A client whose requests leave from ``address`` (any 127.0.0.0/8 address reaches a loopback daemon)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=WAIT)


def first_frame(instance: DaemonProcess, token: str) -> dict[str, object]:
    """The first snapshot the mesh-health stream sends to ``token``'s holder (then the stream is dropped)."""
    headers = {"authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{instance.url}{EVENTS_ROUTE}", headers=headers, timeout=WAIT) as response:
        assert response.status_code == 200, response.read()
        buffer = ""
        for chunk in response.iter_text():
            buffer += chunk
            if "\n\n" in buffer:
                break
    event, data = buffer.split("\n\n", 1)[0].split("\n")
    assert event == "event: mesh"
    return dict(json.loads(data.removeprefix("data: ")))


# -- the mesh-health page ------------------------------------------------------------------------------------------


def test_a_scrapers_token_reads_figures_not_who_the_peers_are(instance: DaemonProcess) -> None:
    """Finding: a ``metrics:read`` token (a Prometheus scraper's) read every pair's peer URL and DID, the thread it
    syncs and the peers' error messages from the stream, which ``/v1/sync/pairs`` keeps behind ``federation:manage``."""
    admin = {"x-api-key": instance.admin_token, "content-type": "application/json"}
    created = httpx.post(
        f"{instance.url}/v1/sync/pairs",
        json={
            "peer_did": "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH",
            "peer_url": "http://127.0.0.1:9/secret-path",
            "thread_id": "th_private_plans",
            "mode": "on-demand",
        },
        headers=admin,
        timeout=WAIT,
    )
    assert created.status_code == 201, created.text
    scraper = mint_token(instance, ["metrics:read"], "prometheus")
    seen = first_frame(instance, scraper)
    assert seen["detail"] is False and seen["pairs_total"] == {"sync": 1, "federation": 0}
    assert "secret-path" not in json.dumps(seen) and "th_private_plans" not in json.dumps(seen)
    operator = mint_token(instance, ["metrics:read", "federation:manage"], "operator")
    assert "th_private_plans" in json.dumps(first_frame(instance, operator))


def test_the_stream_places_come_back_when_clients_hang_up(instance: DaemonProcess) -> None:
    """Holds: :data:`MAX_STREAMS` clients that connect and vanish leave every place free again (a body whose
    generator never ran its ``finally`` is released when freed)."""
    token = mint_token(instance, ["metrics:read"], "many tabs")
    host, port = httpx.URL(instance.url).host, httpx.URL(instance.url).port
    request = f"GET {EVENTS_ROUTE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

    def open_stream() -> tuple[socket.socket, bytes]:
        connection = socket.create_connection((host, port), timeout=WAIT)
        connection.sendall(request)
        return connection, connection.recv(64)[:12]

    held = [open_stream() for _ in range(MAX_STREAMS)]
    try:
        assert {status for _, status in held} == {b"HTTP/1.1 200"}
        extra, status = open_stream()
        extra.close()
        assert status == b"HTTP/1.1 503"
    finally:
        for connection, _ in held:
            connection.close()
    statuses = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:  # the daemon notices each hang-up on its next write, within a tick
        connection, status = open_stream()
        connection.close()
        statuses.append(status)
        if status == b"HTTP/1.1 200":
            break
        time.sleep(0.05)  # polling the daemon's own answer, with a deadline
    assert statuses[-1] == b"HTTP/1.1 200", statuses[-5:]


def test_the_redeem_limit_keys_on_the_socket_not_on_forwarded_headers(instance: DaemonProcess) -> None:
    """Holds: X-Forwarded-For, Forwarded and X-Real-IP change nothing; a sixth guess from one address is 429."""
    with client_from("127.0.0.21") as guesser:
        answers = [
            guesser.post(
                f"{instance.url}{REDEEM_PATH}",
                json={"code": "0" * 16},
                headers={"x-forwarded-for": f"10.0.0.{n}", "forwarded": f"for=10.0.0.{n}", "x-real-ip": f"10.1.0.{n}"},
            ).status_code
            for n in range(int(PER_SOURCE_BURST) + 1)
        ]
    assert answers == [404] * int(PER_SOURCE_BURST) + [429]
    with client_from("127.0.0.22") as neighbour:  # another address still has its own bucket
        assert neighbour.post(f"{instance.url}{REDEEM_PATH}", json={"code": "0" * 16}).status_code == 404


# -- in-process ----------------------------------------------------------------------------------------------------


async def test_a_page_of_another_site_cannot_hold_the_stream_places(in_process_daemon: InProcessDaemon) -> None:
    """Finding: with authentication off, any web page a user visits could open the stream (``Host: 127.0.0.1``
    passes the Host gate; it cannot read the answer, but it holds a place) and take all 16 places."""
    for site in ("cross-site", "same-site"):
        headers = {"sec-fetch-site": site, "origin": "https://evil.example"}
        with trio.fail_after(WAIT):  # before the fix, an endless stream answered
            answer = await in_process_daemon.get(EVENTS_ROUTE, headers=headers)
        assert_error(answer, 403, "CROSS_SITE_REFUSED")
    assert in_process_daemon.app.config.get("SPL_UI_STREAMS") is None  # refused before a place was taken


async def test_a_fifo_planted_as_the_pairings_file_answers_503_at_once(
    secure_in_process_daemon: InProcessDaemon,
) -> None:
    """Finding: a FIFO at ``<home>/pairings.json`` blocked a worker thread forever on open, with the pairing lock
    held: every pairing route hung and the daemon could not stop. Now: 503 naming the file and the fix."""
    daemon = secure_in_process_daemon
    os.mkfifo(daemon.home.root / "pairings.json")
    with trio.fail_after(WAIT):
        listing = await daemon.get("/v1/pairings", headers={"x-api-key": daemon.admin_token})
    refused = listing.json()
    assert (listing.status_code, refused["code"]) == (503, "PAIRINGS_UNAVAILABLE")
    assert "not a regular file" in refused["message"] and "move it aside" in refused["message"]


async def test_an_unknown_device_name_is_echoed_bounded(secure_in_process_daemon: InProcessDaemon) -> None:
    """Finding (minor): a revoke of an unknown device echoed the whole name from the URL into the error."""
    daemon = secure_in_process_daemon
    headers = {"x-api-key": daemon.admin_token, "content-type": "application/json"}
    answer = await daemon.delete("/v1/pairings/" + "a" * 5000, headers=headers)
    assert len(assert_error(answer, 404, "PAIRING_NOT_FOUND")["message"]) < 200


@pytest.mark.parametrize(
    ("address", "source"),
    [
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),  # one host's /64: its addresses share a bucket
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 caller on a dual-stack socket is the IPv4 address
        ("fe80::1%eth0", "fe80::/64"),
        ("192.0.2.7", "192.0.2.7"),
        ("not an address" * 20, ("not an address" * 20)[:64]),
    ],
)
async def test_the_redeem_limit_counts_an_ipv6_host_once(
    in_process_daemon: InProcessDaemon, address: str, source: str
) -> None:
    """Holds: a host that owns a /64 cannot spread its guesses over 2**64 addresses; nothing odd crashes the key."""
    async with in_process_daemon.app.test_request_context(REDEEM_PATH, method="POST"):
        request.remote_addr = address  # what Quart takes from the socket's peer address
        assert routes_pairing._source() == source
