"""Hostile and broken input, in-process: every answer is a 4xx JSON error envelope, never a 500.

Spec §3.0/§15.9: errors are ``{"object":"error","type","code","message"}``; §7 for the namespace message; §6 for
auth codes. No error message (and no log line) may echo a presented token, and after every test the daemon still
answers ``/health`` and logged no unhandled error.

These run against the real app and actors through the test client (``tests/support/inprocess.py``); what needs a
socket (early answers on a kept-alive connection, chunked bodies, SSE, the SDK, the daemon's log file) stays in
``tests/e2e/test_bad_input.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from e2e_support import assert_error, envelope
from hypothesis import given, settings
from hypothesis import strategies as st
from inprocess import InProcessDaemon

LIMIT = 1024 * 1024  # serve.max_body_bytes by default


@pytest.fixture
async def node(in_process_daemon: InProcessDaemon, caplog: pytest.LogCaptureFixture) -> AsyncIterator[InProcessDaemon]:
    """The auth-off daemon; after the test it must still be healthy, and nothing may have crashed a route."""
    caplog.set_level(logging.DEBUG)
    yield in_process_daemon
    await assert_still_healthy(in_process_daemon, {}, caplog)


@pytest.fixture
async def secure_node(
    secure_in_process_daemon: InProcessDaemon, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[InProcessDaemon]:
    """The auth-on daemon, checked like ``node``; no token it ever saw may be in the captured log."""
    caplog.set_level(logging.DEBUG)
    yield secure_in_process_daemon
    admin = {"x-api-key": secure_in_process_daemon.admin_token}
    await assert_still_healthy(secure_in_process_daemon, admin, caplog)
    assert secure_in_process_daemon.admin_token not in caplog.text


async def assert_still_healthy(daemon: InProcessDaemon, headers: dict[str, str], caplog: Any) -> None:
    health = await daemon.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    response = await daemon.post("/v1/records", json=envelope("b.after", 1, body={"ok": True}), headers=headers)
    assert response.status_code in (200, 201), response.text
    stored = await daemon.get(f"/v1/records/{response.json()['id']}", headers=headers)
    assert stored.status_code == 200 and stored.json()["body"] == {"ok": True}
    assert "unhandled error" not in caplog.text and "Traceback" not in caplog.text, caplog.text[-3000:]


@pytest.fixture
async def tokens(secure_node: InProcessDaemon) -> dict[str, str]:
    minted = {
        "rw": await secure_node.mint_token(["records:read", "records:write"], "bad-input rw"),
        "ro": await secure_node.mint_token(["records:read"], "bad-input ro"),
        "wo": await secure_node.mint_token(["records:write"], "bad-input wo"),
        "revoked": await secure_node.mint_token(["records:read", "records:write"], "bad-input revoked"),
    }
    await secure_node.revoke_token("bad-input revoked")
    return minted


async def post_raw(daemon: InProcessDaemon, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return await daemon.post(
        "/v1/records", content=content, headers={"content-type": "application/json", **(headers or {})}
    )


async def post_json(daemon: InProcessDaemon, payload: Any) -> httpx.Response:
    return await post_raw(daemon, json.dumps(payload).encode())


def record_text(body: str = "{}", clock: str = "1", thread: str = '"b.raw"', actor: str = '"did:test:bad"') -> bytes:
    return (
        f'{{"act":"PUT","actor":{actor},"body":{body},"clock":{clock},'
        f'"data_type":"SCALAR","parents":[],"thread":{thread}}}'
    ).encode()


# -- request bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b'{"act":',
        b"not json at all",
        b"{'act': 'PUT'}",
        b'{"act":"PUT",}',
        b"[1, 2",
        b'{"a":1}{"b":2}',
        b"\x00",
        b"",
        b"   \n  ",
        b"\xef\xbb\xbf" + record_text(),  # UTF-8 BOM
        record_text().decode().encode("utf-16"),
        record_text(body='{"x":1' + "0" * 5000 + "}"),  # integer beyond Python's str->int limit
    ],
    ids=[
        "open-brace",
        "truncated",
        "prose",
        "single-quotes",
        "trailing-comma",
        "unclosed-array",
        "two-documents",
        "nul",
        "empty",
        "whitespace",
        "bom",
        "utf16",
        "5000-digit-int",
    ],
)
async def test_malformed_json(node: InProcessDaemon, content: bytes) -> None:
    assert_error(await post_raw(node, content), 400, "INVALID_JSON")


@pytest.mark.parametrize(
    "content",
    [b"[" * 200_000, b'{"body":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}"],
    ids=["deep-array", "deep-object"],
)
async def test_nesting_deeper_than_any_parser_can_follow_is_refused_before_parsing(
    node: InProcessDaemon, content: bytes
) -> None:
    # Counted before the parser recurses (core.wire.parse_json), so the answer cannot depend on the stack left.
    body = assert_error(await post_raw(node, content), 400, "BODY_TOO_DEEP")
    assert "flatten" in body["message"], body


@pytest.mark.parametrize("payload", [[], [envelope("b.t", 1)], "record", 42, None, True])
async def test_non_object_body(node: InProcessDaemon, payload: Any) -> None:
    body = assert_error(await post_json(node, payload), 400)
    assert body["code"] in ("INVALID_RECORD", "INVALID_JSON"), body


@pytest.mark.parametrize(
    "content",
    [
        record_text(body='{"x":NaN}'),
        record_text(body='{"x":Infinity}'),
        record_text(body='{"x":-Infinity}'),
        record_text(clock="NaN"),
        record_text(clock="Infinity"),
        record_text(body='{"x":1e400}'),  # parses to inf
        record_text(clock="1e400"),
    ],
    ids=["nan", "inf", "-inf", "clock-nan", "clock-inf", "overflow-float", "clock-overflow-float"],
)
async def test_nan_and_infinity(node: InProcessDaemon, content: bytes) -> None:
    assert_error(await post_raw(node, content), 400)


@pytest.mark.parametrize(
    "content",
    [
        record_text(actor='"A"').replace(b'"A"', b'"\xff\xfe"'),
        record_text(body='{"x":"A"}').replace(b'"A"', b'"\xc0\xaf"'),  # overlong encoding of '/'
        record_text(body='{"x":"A"}').replace(b'"A"', b'"\xed\xa0\x80"'),  # UTF-8-encoded surrogate
        record_text(body='{"x":"A"}').replace(b'"A"', b'"\xe2\x82"'),  # truncated sequence
    ],
    ids=["ff-fe", "overlong", "encoded-surrogate", "truncated-sequence"],
)
async def test_invalid_utf8(node: InProcessDaemon, content: bytes) -> None:
    body = assert_error(await post_raw(node, content), 400, "INVALID_JSON")
    assert "UTF-8" in body["message"]


@pytest.mark.parametrize(
    "content",
    [
        record_text(body='{"x":"\\ud800"}'),
        record_text(body='{"\\udfff":1}'),
        record_text(actor='"did:test:\\ud83d"'),
    ],
    ids=["value", "key", "actor"],
)
async def test_escaped_lone_surrogates(node: InProcessDaemon, content: bytes) -> None:
    # Valid JSON syntax, but no UTF-8 (hence no canonical form, no id) exists for it.
    assert_error(await post_raw(node, content), 400)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("act", 1),
        ("act", None),
        ("act", ""),
        ("act", ["PUT"]),
        ("act", "FLY"),
        ("actor", 7),
        ("actor", None),
        ("actor", ""),
        ("actor", {"did": "x"}),
        ("actor", "did:" + "x" * 600),
        ("thread", 3),
        ("thread", None),
        ("thread", ["b.t"]),
        ("body", [1, 2]),
        ("body", "text"),
        ("body", 5),
        ("body", True),
        ("clock", "1"),
        ("clock", None),
        ("clock", True),
        ("clock", 1.5),
        ("clock", -1),
        ("clock", [1]),
        ("clock", {"n": 1}),
        ("data_type", "INTEGER"),
        ("data_type", 1),
        ("data_type", ["SCALAR"]),
        ("parents", "a" * 64),
        ("parents", {"a": 1}),
        ("parents", [1]),
        ("parents", ["not-a-record-id"]),
        ("parents", ["A" * 64]),
        ("parents", [None]),
        ("judged_by", 5),
        ("judged_by", "short"),
        ("body", {"namespace": 5}),
        ("body", {"namespace": ["a"]}),
    ],
)
async def test_wrong_types(node: InProcessDaemon, field: str, value: Any) -> None:
    payload = envelope("b.types", 1)
    payload[field] = value
    body = assert_error(await post_json(node, payload), 400)
    assert body["code"] in ("INVALID_RECORD", "INVALID_THREAD"), body
    assert field.split(".")[0] in body["message"], body


@pytest.mark.parametrize("field", ["act", "actor", "thread", "clock"])
async def test_required_fields(node: InProcessDaemon, field: str) -> None:
    payload = envelope("b.required", 1)
    del payload[field]
    body = assert_error(await post_json(node, payload), 400)
    assert field in body["message"]


@pytest.mark.parametrize("clock", [2**63, 2**64, 10**30, -(2**63), 1e20, 9.3e18])
async def test_huge_clocks(node: InProcessDaemon, clock: int | float) -> None:
    body = assert_error(await post_json(node, envelope("b.clock", clock)), 400, "INVALID_RECORD")
    assert "clock" in body["message"]


async def test_clock_boundaries_are_accepted(node: InProcessDaemon) -> None:
    for clock in (0, 2**63 - 1):
        response = await post_json(node, envelope("b.clock-ok", clock))
        assert response.status_code == 201, response.text
        assert response.json()["clock"] == clock


@pytest.mark.parametrize(
    "thread",
    ["a b", "a/b", "/", "x" * 257, "tab\there", "new\nline", "ü-umlaut", "a%2Fb", "a?b", "a#b", "th\u2028x"],
    ids=["space", "slash", "only-slash", "257-chars", "tab", "newline", "non-ascii", "percent", "query", "hash", "ls"],
)
async def test_bad_thread_in_body(node: InProcessDaemon, thread: str) -> None:
    assert_error(await post_json(node, envelope(thread, 1)), 400, "INVALID_THREAD")


async def test_longest_thread_is_accepted(node: InProcessDaemon) -> None:
    thread = "t" * 256
    assert (await post_json(node, envelope(thread, 1))).status_code == 201
    response = await node.get(f"/v1/threads/{thread}/records")
    assert response.status_code == 200 and len(response.json()["data"]) == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/threads/a%20b/records", 400),
        ("/v1/threads/" + "x" * 257 + "/records", 400),
        ("/v1/threads/%C3%BC/records", 400),
        ("/v1/threads/a%0Ab/records", 400),
        ("/v1/threads/a%20b/watch", 400),
        ("/v1/threads/a%20b", 400),
        ("/v1/threads/a/b/records", 404),
        ("/v1/threads/a%2Fb/records", 404),
        ("/v1/records?thread=a%20b", 400),
        ("/v1/threads/a//records", None),  # the SDK does not URL-encode threads: query_thread("a/")
    ],
)
async def test_bad_thread_in_url(node: InProcessDaemon, path: str, status: int | None) -> None:
    assert_error(await node.get(path), status)


@pytest.mark.parametrize("namespace", ["ghost", "ghost/team", "ghost/team/env/job"])
async def test_unknown_namespace(node: InProcessDaemon, namespace: str) -> None:
    payload = envelope("b.ns", 1, body={"namespace": namespace})
    body = assert_error(await post_json(node, payload), 403, "NAMESPACE_REJECTED")
    assert body["type"] == "invalid_request_error"
    message = body["message"]
    assert repr(namespace) in message  # names the namespace ...
    assert "ancestor 'ghost' is not Active" in message  # ... the first failing ancestor ...
    assert message.rstrip(".").endswith("spl namespace create ghost")  # ... and the recovery command


async def test_unknown_child_of_a_registered_namespace(node: InProcessDaemon) -> None:
    created = await node.post("/v1/namespaces", json={"id": "known"})
    assert created.status_code == 201, created.text
    assert (await post_json(node, envelope("b.ns", 2, body={"namespace": "known"}))).status_code == 201
    child = await post_json(node, envelope("b.ns", 3, body={"namespace": "known/sub"}))
    body = assert_error(child, 403, "NAMESPACE_REJECTED")
    assert "ancestor 'known/sub'" in body["message"] and "spl namespace create known/sub" in body["message"]


@pytest.mark.parametrize("namespace", ["Bad NS", "UPPER", "a//b", "/lead", "a/b/c/d/e", "x" * 64, "ümlaut"])
async def test_invalid_namespace_id(node: InProcessDaemon, namespace: str) -> None:
    payload = envelope("b.ns-invalid", 1, body={"namespace": namespace})
    assert_error(await post_json(node, payload), 403, "NAMESPACE_REJECTED")


# -- size limits --------------------------------------------------------------------------


async def test_oversized_body_with_content_length(node: InProcessDaemon) -> None:
    payload = envelope("b.big", 1, body={"blob": "x" * (LIMIT + 10)})
    body = assert_error(await post_json(node, payload), 413, "PAYLOAD_TOO_LARGE")
    assert str(LIMIT) in body["message"]


async def test_body_just_under_the_limit_is_accepted(node: InProcessDaemon) -> None:
    payload = envelope("b.almost", 1, body={"blob": "x" * (LIMIT - 4096)})
    response = await post_json(node, payload)
    assert response.status_code == 201, response.text[:300]


# -- query parameters, routes, methods ----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/records?limit=abc",
        "/v1/records?limit=0",
        "/v1/records?limit=-1",
        "/v1/records?limit=10001",
        "/v1/records?limit=1.5",
        "/v1/records?limit=1e3",
        "/v1/records?limit=%00",
        "/v1/records?since=-1",
        "/v1/records?since=abc",
        "/v1/records?since=" + "9" * 30,
        "/v1/records?after_sequence=-5",
        "/v1/records?after_sequence=" + "9" * 30,
        "/v1/threads/b.q/records?limit=abc",
        "/v1/threads/b.q/records?limit=0",
        "/v1/threads/b.q/records?since=-1",
        "/v1/threads/b.q/records?since=" + "9" * 20,
        "/v1/threads?limit=0",
        "/v1/threads/b.q/watch?since_clock=abc",
        "/v1/threads/b.q/watch?since_clock=-1",
        "/v1/threads/b.q/watch?since_clock=" + "9" * 20,
    ],
)
async def test_bad_query_params(node: InProcessDaemon, path: str) -> None:
    body = assert_error(await node.get(path), 400, "INVALID_PARAMETER")
    name = path.split("?", 1)[1].split("=", 1)[0]
    assert repr(name) in body["message"]


@pytest.mark.parametrize(
    "path", ["/", "/v1", "/v1/", "/v0/records", "/v1/recordz", "/v1/records/" + "g" * 64, "/v1/threads/x/y/z", "/.env"]
)
async def test_unknown_routes(node: InProcessDaemon, path: str) -> None:
    assert_error(await node.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/records"),
        ("PUT", "/v1/records"),
        ("PUT", "/health"),
        ("POST", "/health"),
        ("PATCH", "/v1/threads/b.m/records"),
        ("POST", "/v1/threads/b.m/watch"),
        ("DELETE", "/.well-known/syncropel"),
        ("POST", "/v1/records/" + "a" * 64),
        ("TRACE", "/health"),
    ],
)
async def test_wrong_methods(node: InProcessDaemon, method: str, path: str) -> None:
    body = assert_error(await node.request(method, path), 405)
    assert method in body["message"]


# -- authentication -------------------------------------------------------------------------


def token_variants(tokens: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    rw = tokens["rw"]
    prefix, _, secret = rw.rpartition("_")
    other_sa = "spl_local_sa_ffffffffffffffff_" + secret
    return [
        ("none", {}),
        ("empty-key", {"x-api-key": ""}),
        ("garbage", {"x-api-key": "garbage"}),
        ("well-formed-unknown", {"x-api-key": "spl_local_sa_0123456789abcdef_" + "0" * 64}),
        ("truncated", {"x-api-key": rw[:-1]}),
        ("extended", {"x-api-key": rw + "0"}),
        ("wrong-sa", {"x-api-key": other_sa}),
        ("upper-secret", {"x-api-key": prefix + "_" + secret.upper()}),
        ("basic-scheme", {"authorization": "Basic " + rw}),
        ("bearer-empty", {"authorization": "Bearer"}),
        ("bearer-garbage", {"authorization": "Bearer nope"}),
        ("token-as-scheme", {"authorization": rw}),
    ]


ROUTES = [
    ("POST", "/v1/records"),
    ("GET", "/v1/records"),
    ("GET", "/v1/threads/b.auth/records"),
    ("GET", "/v1/threads/b.auth/watch"),
    ("GET", "/v1/threads"),
    ("POST", "/v1/tokens"),
]


async def test_invalid_tokens_are_401(
    secure_node: InProcessDaemon, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    for name, headers in token_variants(tokens):
        for method, path in ROUTES:
            body_json = envelope("b.auth", 1) if method == "POST" else None
            response = await secure_node.request(method, path, headers=headers, json=body_json)
            body = assert_error(response, 401, "AUTH_REQUIRED")
            assert body["type"] == "authentication_error", (name, path, body)
            for value in headers.values():
                if len(value) > 20:  # a token-like secret, not a scheme name
                    assert value.split()[-1] not in body["message"], (name, path)
                    assert value.split()[-1] not in caplog.text, (name, path)
            assert tokens["rw"] not in json.dumps(body)


async def test_revoked_token_is_401(secure_node: InProcessDaemon, tokens: dict[str, str]) -> None:
    for method, path in ROUTES:
        body_json = envelope("b.auth", 1) if method == "POST" else None
        response = await secure_node.request(method, path, headers={"x-api-key": tokens["revoked"]}, json=body_json)
        body = assert_error(response, 401)
        assert body["code"] in ("AUTH_REQUIRED", "TOKEN_REVOKED"), body
        assert tokens["revoked"] not in body["message"]


async def test_missing_scopes_are_403(
    secure_node: InProcessDaemon, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    cases = [
        (tokens["ro"], "POST", "/v1/records", "records:write"),
        (tokens["wo"], "GET", "/v1/records", "records:read"),
        (tokens["wo"], "GET", "/v1/threads/b.auth/records", "records:read"),
        (tokens["wo"], "GET", "/v1/threads/b.auth/watch", "records:read"),
        (tokens["rw"], "POST", "/v1/tokens", "admin"),
        (tokens["rw"], "GET", "/v1/tokens", "admin"),
    ]
    for token, method, path, scope in cases:
        for headers in ({"x-api-key": token}, {"authorization": f"Bearer {token}"}):
            body_json: Any = None
            if method == "POST":
                body_json = envelope("b.auth", 1) if path == "/v1/records" else {"scopes": ["admin"]}
            response = await secure_node.request(method, path, headers=headers, json=body_json)
            body = assert_error(response, 403, "SCOPE_FORBIDDEN")
            assert scope in body["message"]
            assert token not in json.dumps(body)
            assert token not in caplog.text
    assert (await secure_node.get("/v1/threads/b.auth/records")).status_code == 401


# -- nesting, token labels, fuzz (each was a 500 before issue 7) -------------------------------


def nested_body(depth: int) -> str:
    """A body whose ``x`` holds ``depth`` nested lists: the body nests ``depth + 1`` levels."""
    return '{"x":' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [64, 100])
async def test_deeply_nested_body_is_refused_with_the_limit(node: InProcessDaemon, depth: int) -> None:
    # The documented limit is 64 levels, the body being level 1. Depths of 490-950 are checked on a real daemon
    # (tests/e2e/test_bad_input.py): today the answer to those depends on how deep the caller's stack already is,
    # and under pytest, xdist and trio it is deeper than in ``spl serve``.
    response = await post_raw(node, record_text(body=nested_body(depth), clock=str(depth)))
    body = assert_error(response, 400, "BODY_TOO_DEEP")
    assert "64 levels" in body["message"] and "flatten" in body["message"], body


async def test_body_at_the_nesting_limit_is_accepted(node: InProcessDaemon) -> None:
    response = await post_raw(node, record_text(body=nested_body(63), thread='"b.deep"'))
    assert response.status_code == 201, response.text[:300]


async def mint_raw(daemon: InProcessDaemon, content: bytes) -> httpx.Response:
    headers = {"content-type": "application/json", "x-api-key": daemon.admin_token}
    return await daemon.post("/v1/tokens", content=content, headers=headers)


@pytest.mark.parametrize(
    "label",
    ['"\\ud800"', '"ok \\udfff"', '"bell \\u0007"', '"ansi \\u001b[31m red"', '"nl\\nx"', '"' + "x" * 129 + '"', "5"],
    ids=["lone-high-surrogate", "lone-low-surrogate", "bell", "ansi-escape", "newline", "129-chars", "number"],
)
async def test_bad_token_label(secure_node: InProcessDaemon, label: str) -> None:
    content = ('{"scopes":["records:read"],"label":' + label + "}").encode()
    body = assert_error(await mint_raw(secure_node, content), 400, "INVALID_LABEL")
    assert "label" in body["message"]


@pytest.mark.parametrize("env", ['"\u00f6"', '"\u00b2"', '"a b"', '""', '"' + "e" * 17 + '"', "7"])
async def test_bad_token_env(secure_node: InProcessDaemon, env: str) -> None:
    # "ö" and "²" pass str.isalnum(): a token minted with one could never authenticate.
    content = ('{"scopes":["records:read"],"env":' + env + "}").encode()
    body = assert_error(await mint_raw(secure_node, content), 400, "INVALID_ENV")
    assert "ASCII" in body["message"]


async def test_unicode_token_label_is_kept_and_the_token_works(
    secure_node: InProcessDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    payload = {"scopes": ["records:read"], "label": "Zoë 🎵", "env": "CI"}
    response = await mint_raw(secure_node, json.dumps(payload).encode())
    assert response.status_code == 201, response.text
    minted = response.json()
    assert minted["label"] == "Zoë 🎵" and minted["token"].startswith("spl_ci_")
    listed = await secure_node.get("/v1/threads", headers={"x-api-key": minted["token"]})
    assert listed.status_code == 200, listed.text
    assert minted["token"] not in caplog.text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
FIELDS = ["act", "actor", "thread", "clock", "body", "parents", "data_type", "judged_by"]
FIELDS += ["label", "scopes", "env", "id", "description"]


async def test_no_json_payload_is_a_500(node: InProcessDaemon) -> None:
    """Hypothesis drives the examples from a worker thread (its engine is synchronous) and sends each one through
    the daemon on the test's trio loop; every example shares the one daemon, as they did a module's daemon."""

    @settings(max_examples=60, deadline=None)
    @given(
        route=st.sampled_from(["/v1/records", "/v1/tokens", "/v1/namespaces"]),
        payload=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=8) | JSON_VALUES,
    )
    def no_500(route: str, payload: Any) -> None:
        headers = {"content-type": "application/json"}
        response = trio.from_thread.run(partial(node.post, route, content=json.dumps(payload), headers=headers))
        if response.status_code >= 400:
            assert_error(response)

    await trio.to_thread.run_sync(no_500)
