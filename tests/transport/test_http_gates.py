"""A daemon anyone can reach, in-process: trust, browsers, health (issue 7).

Spec §15.19: loopback is not an identity; every route but ``/health``, ``/v1/identity`` and ``/.well-known/*``
needs a token; no CORS unless the operator lists origins; write routes require ``content-type: application/json``;
``/health`` answers 503 while something is degraded. All of it is decided by the app before or inside a route, so
it runs against the real app and actors through the test client. What many or careless clients cost on the wire
(early 413s on pooled connections, half-open connections, descriptors) and the official SDK stay in
``tests/e2e/test_http_hardening.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import assert_error, envelope
from inprocess import InProcessDaemon, copy_home, run_in_process

ORIGIN = "https://app.example"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def secure(home_template: Path, tmp_path: Path) -> AsyncIterator[InProcessDaemon]:
    """Auth on, with one origin listed in ``serve.cors_origins``."""
    home = copy_home(home_template, tmp_path / "secure")
    async with run_in_process(home, insecure=False, cors_origins=[ORIGIN]) as daemon:
        yield daemon


@pytest.fixture
def insecure(in_process_daemon: InProcessDaemon) -> InProcessDaemon:
    return in_process_daemon


@pytest.fixture
async def rw_token(secure: InProcessDaemon) -> str:
    return await secure.mint_token(["records:read", "records:write"], "hardening rw")


async def thread_records(daemon: InProcessDaemon, thread: str, headers: dict[str, str] | None = None) -> list[Any]:
    response = await daemon.get(f"/v1/threads/{thread}/records", headers=headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert isinstance(data, list)
    return data


# -- 1. loopback is not an identity ------------------------------------------------------------

PROTECTED = [
    ("GET", "/v1/records"),
    ("POST", "/v1/records"),
    ("GET", "/v1/threads"),
    ("GET", "/v1/threads/h.auth/records"),
    ("GET", "/v1/threads/h.auth/watch"),
    ("GET", "/v1/status"),
    ("GET", "/v1/capabilities"),
    ("GET", "/v1/namespaces"),
    ("POST", "/v1/namespaces"),
    ("GET", "/v1/tokens"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/sync/changes?thread=h.auth"),
    ("POST", "/v1/sync/records"),
    ("GET", "/v1/sync/pairs"),
    ("POST", "/v1/sync/pairs"),
    ("GET", "/v1/sync/health"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_loopback_callers_need_a_token(secure: InProcessDaemon, method: str, path: str) -> None:
    # The test client calls as a local process would: before issue 7 the /v1/sync/* routes
    # served loopback callers as the local operator (change feeds read, records pushed, pairs created).
    response = await secure.request(method, path, json={} if method == "POST" else None)
    assert_error(response, 401, "AUTH_REQUIRED")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "garbage"},
        {"x-api-key": "spl_local_sa_0123456789abcdef_" + "0" * 64},
        {"authorization": "Bearer nope"},
        {"authorization": "Basic Zm9vOmJhcg=="},
    ],
    ids=["none", "garbage", "unknown", "bearer-garbage", "basic"],
)
async def test_open_routes_answer_any_token_alike(secure: InProcessDaemon, headers: dict[str, str]) -> None:
    for path in ("/health", "/v1/identity", "/.well-known/syncropel"):
        response = await secure.get(path, headers=headers)
        assert response.status_code == 200, (path, response.text)
    identity = (await secure.get("/v1/identity", headers=headers)).json()
    assert identity["is_authenticated"] is False and identity["scopes"] == []


async def test_open_routes_accept_a_revoked_token_as_anonymous(secure: InProcessDaemon) -> None:
    token = await secure.mint_token(["records:read"], "hardening revoked")
    await secure.revoke_token("hardening revoked")
    assert (await secure.get("/health", headers={"x-api-key": token})).status_code == 200
    assert_error(await secure.get("/v1/threads", headers={"x-api-key": token}), 401)


async def test_a_valid_token_is_still_seen_on_open_routes(secure: InProcessDaemon, rw_token: str) -> None:
    identity = (await secure.get("/v1/identity", headers={"x-api-key": rw_token})).json()
    assert identity["is_authenticated"] is True
    assert identity["scopes"] == ["records:read", "records:write"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/v1/recordz"), ("POST", "/v1/nope"), ("GET", "/.well-known/other"), ("GET", "/v1/")],
)
async def test_unknown_routes_are_404_before_authentication(secure: InProcessDaemon, method: str, path: str) -> None:
    body = assert_error(await secure.request(method, path, headers=JSON), 404, "ROUTE_NOT_FOUND")
    assert "docs/api.md" in body["message"]


async def test_a_wrong_method_is_405_before_authentication(secure: InProcessDaemon) -> None:
    assert_error(await secure.request("PUT", "/v1/records", headers=JSON), 405, "METHOD_NOT_ALLOWED")


# -- 2. no web page can drive the daemon ----------------------------------------------------


async def preflight(daemon: InProcessDaemon, origin: str, path: str = "/v1/records") -> httpx.Response:
    return await daemon.request(
        "OPTIONS",
        path,
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key",
        },
    )


async def test_no_cors_for_an_origin_nobody_listed(secure: InProcessDaemon, insecure: InProcessDaemon) -> None:
    for daemon in (secure, insecure):
        for response in (
            await daemon.get("/health", headers={"origin": "https://evil.example"}),
            await daemon.get("/v1/threads", headers={"origin": "https://evil.example"}),
            await preflight(daemon, "https://evil.example"),
        ):
            assert "access-control-allow-origin" not in response.headers, response.headers
            assert "access-control-allow-methods" not in response.headers


async def test_a_listed_origin_gets_cors(secure: InProcessDaemon, rw_token: str) -> None:
    answer = await preflight(secure, ORIGIN)
    assert answer.status_code in (200, 204), answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "origin" in answer.headers["vary"].lower()
    methods = {method.strip() for method in answer.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST"} <= methods
    allowed = {name.strip().lower() for name in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "content-type", "last-event-id"} <= allowed
    # The page's real request, and an error answer the page must be able to read.
    headers = {"origin": ORIGIN, "x-api-key": rw_token}
    created = await secure.post("/v1/records", json=envelope("h.cors", 1), headers=headers)
    assert created.status_code == 201 and created.headers["access-control-allow-origin"] == ORIGIN
    refused = await secure.get("/v1/threads", headers={"origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    upper = await secure.get("/health", headers={"origin": ORIGIN.upper()})
    assert upper.headers["access-control-allow-origin"] == ORIGIN.upper()


SIMPLE_REQUEST_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    None,
    "application/jsonx",
    "text/json",
]


@pytest.mark.parametrize("content_type", SIMPLE_REQUEST_TYPES)
async def test_a_browser_simple_request_cannot_write(insecure: InProcessDaemon, content_type: str | None) -> None:
    # Auth off (--insecure-localhost): the media type is all that stands between any web
    # page the operator visits and the store (a cross-origin "simple request" needs no preflight).
    thread = f"h.csrf.{SIMPLE_REQUEST_TYPES.index(content_type)}"
    headers = {"content-type": content_type} if content_type else {}
    response = await insecure.post("/v1/records", content=json.dumps(envelope(thread, 1)), headers=headers)
    body = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "content-type: application/json" in body["message"]
    assert await thread_records(insecure, thread) == []


@pytest.mark.parametrize(
    ("method", "path", "content", "content_type"),
    [
        ("DELETE", "/v1/tokens/tok_x", None, None),
        ("POST", "/v1/tokens", b'{"scopes":["admin"]}', "text/plain"),
        ("POST", "/v1/namespaces", b"id=acme", "application/x-www-form-urlencoded"),
        ("POST", "/v1/sync/records", b'{"records":[]}', "text/plain"),
        ("POST", "/v1/sync/pairs", b"{}", None),
        ("POST", "/v1/sync/pairs/pair_0123456789abcdef/pause", None, None),
    ],
)
async def test_every_write_needs_the_json_media_type_before_anything_else(
    secure: InProcessDaemon,
    insecure: InProcessDaemon,
    method: str,
    path: str,
    content: bytes | None,
    content_type: str | None,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for daemon, extra in ((insecure, {}), (secure, {}), (secure, {"x-api-key": secure.admin_token})):
        # Even with no token at all the answer is 415, not 401: the media type is checked first.
        response = await daemon.request(method, path, content=content, headers={**headers, **extra})
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


JSON_TYPES = ["application/json", "application/json; charset=utf-8", "Application/JSON"]


@pytest.mark.parametrize("content_type", JSON_TYPES)
async def test_the_json_media_type_with_parameters_is_accepted(insecure: InProcessDaemon, content_type: str) -> None:
    thread = f"h.json.{JSON_TYPES.index(content_type)}"
    response = await insecure.post(
        "/v1/records", content=json.dumps(envelope(thread, 1)), headers={"content-type": content_type}
    )
    assert response.status_code == 201, response.text


# -- 3. /health tells the truth ----------------------------------------------------------------


async def test_health_answers_503_while_degraded_or_stopping(secure: InProcessDaemon) -> None:
    ok = await secure.get("/health")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok" and ok.json()["problems"] == []

    problems = ["federation: stopped after 5 restarts in 30 s (last error: boom)"]
    secure.services.problems = lambda: problems
    degraded = await secure.get("/health")
    body = degraded.json()
    assert degraded.status_code == 503
    assert body["status"] == "degraded" and body["problems"] == problems
    assert body["instance_did"] == secure.services.identity.did  # still the usual fields

    problems.clear()
    secure.services.stopping.set()
    stopping = await secure.get("/health")
    assert stopping.status_code == 503 and stopping.json()["status"] == "stopping"


async def test_health_survives_a_failing_problems_callback(
    secure: InProcessDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[str]:
        raise RuntimeError("boom")

    secure.services.problems = broken
    with caplog.at_level(logging.ERROR):
        response = await secure.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert "boom" in caplog.text  # the reason is in the log, for the operator
