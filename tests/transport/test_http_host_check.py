"""What the HTTP front refuses before any route runs, in-process (the real app and actors, no socket).

1. DNS rebinding. With authentication off (``--insecure-localhost``) the daemon answers
   only requests addressed to a loopback name. A web page on ``rebind.attacker.example``
   whose DNS answer flips to 127.0.0.1 reaches the daemon from the browser with
   ``Host: rebind.attacker.example``; it must get 421 ``HOST_NOT_ALLOWED`` and change
   nothing. With authentication on, ``Host`` is not looked at (the token protects).
2. Identifiers are matched whole over HTTP too: a thread ``"th_x\\n"`` is 400
   ``INVALID_THREAD`` (``$`` in ``^…$`` used to match before the final newline).

Each test gets fresh in-process daemons (``tests/support/inprocess.py``); that a real server hands the ``Host``
header through unchanged is checked once over the wire in ``tests/e2e/test_http_hardening.py``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from e2e_support import assert_error, envelope
from inprocess import InProcessDaemon

JSON = {"content-type": "application/json"}
REBOUND = "rebind.attacker.example"
THREAD = "th_host_check"


PORT = 9100  # any port: the gate looks at the name, and a daemon may sit behind a port mapping


@pytest.fixture
def insecure(in_process_daemon: InProcessDaemon) -> InProcessDaemon:
    return in_process_daemon


@pytest.fixture
def secure(secure_in_process_daemon: InProcessDaemon) -> InProcessDaemon:
    return secure_in_process_daemon


async def send(daemon: InProcessDaemon, method: str, path: str, host: str | None, **kwargs: Any) -> httpx.Response:
    """One request whose ``Host`` header says ``host`` (None: the client's own, ``localhost``)."""
    headers = {**kwargs.pop("headers", {})}
    if host is not None:
        headers["host"] = host
    return await daemon.request(method, path, headers=headers, **kwargs)


PAIR = {"peer_did": "did:key:z6MkhostcheckPeer", "peer_url": "http://127.0.0.1:9", "thread_id": THREAD}


# -- 1. DNS rebinding ------------------------------------------------------------------------


async def test_a_rebound_page_cannot_create_a_pair(insecure: InProcessDaemon) -> None:
    response = await send(insecure, "POST", "/v1/sync/pairs", REBOUND, json=PAIR, headers=JSON)
    body = assert_error(response, 421, "HOST_NOT_ALLOWED")
    message = body["message"]
    assert REBOUND in message and "127.0.0.1" in message and "--insecure-localhost" in message, message
    assert "authentication" in message, message  # names the other fix: turn auth on
    pairs = await send(insecure, "GET", "/v1/sync/pairs", None)
    assert pairs.status_code == 200 and pairs.json()["data"] == [], pairs.text


async def test_a_rebound_page_can_neither_write_nor_read(insecure: InProcessDaemon) -> None:
    written = await send(insecure, "POST", "/v1/records", REBOUND, json=envelope(THREAD, 1), headers=JSON)
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
        assert_error(await send(insecure, method, path, REBOUND, headers=JSON), 421, "HOST_NOT_ALLOWED")
    stored = await send(insecure, "GET", f"/v1/threads/{THREAD}/records", "127.0.0.1")
    assert stored.status_code == 200 and stored.json()["data"] == [], stored.text


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1.attacker.example",
        "localhost.attacker.example",
        "attacker.example",
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
async def test_only_exact_loopback_names_pass(insecure: InProcessDaemon, host: str) -> None:
    assert_error(await send(insecure, "GET", "/v1/threads", host), 421, "HOST_NOT_ALLOWED")


@pytest.mark.parametrize(
    "host",
    # Any 127/8 literal names this machine (transport/app.py: is_loopback_host).
    [
        "127.0.0.1",
        "127.0.0.1:{port}",
        "127.0.0.2",
        "localhost",
        "localhost:{port}",
        "LocalHost:{port}",
        "[::1]",
        "[::1]:9",
    ],
)
async def test_loopback_names_are_served(insecure: InProcessDaemon, host: str) -> None:
    response = await send(insecure, "GET", "/v1/threads", host.format(port=PORT))
    assert response.status_code == 200, response.text


async def test_with_auth_on_the_host_header_is_left_alone(secure: InProcessDaemon) -> None:
    token = {"x-api-key": secure.admin_token}
    assert (await send(secure, "GET", "/v1/threads", REBOUND, headers=token)).status_code == 200
    assert (await send(secure, "GET", "/health", REBOUND)).status_code == 200
    assert_error(await send(secure, "GET", "/v1/threads", REBOUND), 401, "AUTH_REQUIRED")  # the token still decides


# -- 2. a trailing newline is not part of an identifier ------------------------------------------


async def test_a_thread_with_a_trailing_newline_is_refused(insecure: InProcessDaemon) -> None:
    for thread in ("th_x\n", "th_x\r\n"):
        response = await send(insecure, "POST", "/v1/records", None, json=envelope(thread, 1), headers=JSON)
        assert_error(response, 400, "INVALID_THREAD")
        listed = await send(insecure, "GET", "/v1/records", None, params={"thread": thread})
        assert_error(listed, 400, "INVALID_THREAD")
    parent = envelope(THREAD, 2, parents=["a" * 64 + "\n"])
    assert_error(await send(insecure, "POST", "/v1/records", None, json=parent, headers=JSON), 400)
    missing = await send(insecure, "GET", "/v1/records/" + "a" * 64 + "%0A", None)
    assert_error(missing, 404, "NOT_FOUND")
    assert "64 lowercase hex" in missing.json()["message"]
