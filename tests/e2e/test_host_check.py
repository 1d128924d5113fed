"""What the HTTP front refuses before any route runs, seen from a raw client on 127.0.0.1.

1. DNS rebinding. With authentication off (``--insecure-localhost``) the daemon answers
   only requests addressed to a loopback name. A web page on ``rebind.attacker.example``
   whose DNS answer flips to 127.0.0.1 reaches the daemon from the browser with
   ``Host: rebind.attacker.example``; it must get 421 ``HOST_NOT_ALLOWED`` and change
   nothing. With authentication on, ``Host`` is not looked at (the token protects).
2. Identifiers are matched whole over HTTP too: a thread ``"th_x\\n"`` is 400
   ``INVALID_THREAD`` (``$`` in ``^…$`` used to match before the final newline).

Both daemons are module-scoped: every test here only reads, or checks that a refused
request wrote nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import assert_error, envelope, make_daemon

from spl.daemon.launcher import DaemonProcess

JSON = {"content-type": "application/json"}
REBOUND = "rebind.attacker.example"
THREAD = "th_host_check"


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("host-insecure") / "home")
    yield process
    process.kill()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("host-secure") / "home", insecure=False)
    yield process
    process.kill()


def send(process: DaemonProcess, method: str, path: str, host: str | None, **kwargs: Any) -> httpx.Response:
    """One request to ``process`` over 127.0.0.1 whose ``Host`` header says ``host`` (None: httpx's own)."""
    headers = {**kwargs.pop("headers", {})}
    if host is not None:
        headers["host"] = host
    return httpx.request(method, f"{process.url}{path}", headers=headers, timeout=10.0, **kwargs)


PAIR = {"peer_did": "did:key:z6MkhostcheckPeer", "peer_url": "http://127.0.0.1:9", "thread_id": THREAD}


# -- 1. DNS rebinding ------------------------------------------------------------------------


def test_a_rebound_page_cannot_create_a_pair(insecure: DaemonProcess) -> None:
    response = send(insecure, "POST", "/v1/sync/pairs", REBOUND, json=PAIR, headers=JSON)
    body = assert_error(response, 421, "HOST_NOT_ALLOWED")
    message = body["message"]
    assert REBOUND in message and "127.0.0.1" in message and "--insecure-localhost" in message, message
    assert "authentication" in message, message  # names the other fix: turn auth on
    pairs = send(insecure, "GET", "/v1/sync/pairs", None)
    assert pairs.status_code == 200 and pairs.json()["data"] == [], pairs.text


def test_a_rebound_page_can_neither_write_nor_read(insecure: DaemonProcess) -> None:
    written = send(insecure, "POST", "/v1/records", REBOUND, json=envelope(THREAD, 1), headers=JSON)
    assert_error(written, 421, "HOST_NOT_ALLOWED")
    for method, path in [
        ("GET", f"/v1/threads/{THREAD}/records"),
        ("GET", "/v1/threads"),
        ("GET", "/v1/status"),
        ("GET", "/v1/identity"),
        ("GET", "/health"),
        ("GET", "/.well-known/syncropel"),
        ("GET", "/no/such/route"),  # refused before routing: a rebound page learns nothing
        ("OPTIONS", "/v1/records"),
        ("DELETE", "/v1/sync/pairs/pair_0000000000000000"),
    ]:
        assert_error(send(insecure, method, path, REBOUND, headers=JSON), 421, "HOST_NOT_ALLOWED")
    stored = send(insecure, "GET", f"/v1/threads/{THREAD}/records", "127.0.0.1")
    assert stored.status_code == 200 and stored.json()["data"] == [], stored.text


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1.attacker.example",
        "localhost.attacker.example",
        "attacker.example",
        "127.0.0.2",
        "0.0.0.0",
        "[::2]",
        "::1",
        "localhost:",
        "localhost:port",
        "127.0.0.1:9100:9100",
        "127.0.0.1@attacker.example",
        "[::1].attacker.example",
        "localhost.",
        "",
    ],
)
def test_only_exact_loopback_names_pass(insecure: DaemonProcess, host: str) -> None:
    assert_error(send(insecure, "GET", "/v1/threads", host), 421, "HOST_NOT_ALLOWED")


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}", "LocalHost:{port}", "[::1]", "[::1]:9"]
)
def test_loopback_names_are_served(insecure: DaemonProcess, host: str) -> None:
    response = send(insecure, "GET", "/v1/threads", host.format(port=insecure.port))
    assert response.status_code == 200, response.text


def test_with_auth_on_the_host_header_is_left_alone(secure: DaemonProcess) -> None:
    token = {"x-api-key": secure.admin_token}
    assert send(secure, "GET", "/v1/threads", REBOUND, headers=token).status_code == 200
    assert send(secure, "GET", "/health", REBOUND).status_code == 200
    assert_error(send(secure, "GET", "/v1/threads", REBOUND), 401, "AUTH_REQUIRED")  # the token still decides


# -- 2. a trailing newline is not part of an identifier ------------------------------------------


def test_a_thread_with_a_trailing_newline_is_refused_over_http(insecure: DaemonProcess) -> None:
    for thread in ("th_x\n", "th_x\r\n"):
        response = send(insecure, "POST", "/v1/records", None, json=envelope(thread, 1), headers=JSON)
        assert_error(response, 400, "INVALID_THREAD")
        listed = send(insecure, "GET", "/v1/records", None, params={"thread": thread})
        assert_error(listed, 400, "INVALID_THREAD")
    parent = envelope(THREAD, 2, parents=["a" * 64 + "\n"])
    assert_error(send(insecure, "POST", "/v1/records", None, json=parent, headers=JSON), 400)
    missing = send(insecure, "GET", "/v1/records/" + "a" * 64 + "%0A", None)
    assert_error(missing, 404, "NOT_FOUND")
    assert "64 lowercase hex" in missing.json()["message"]
