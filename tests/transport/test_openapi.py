"""``GET /openapi.json`` (transport/openapi.py) and RFC 3339 times in the HTTP views (issue 13).

The document is checked against the app it describes: every route of ``app.url_map`` with every method is in it,
open routes need no token, every error answer is the §15.9 envelope, and it is a valid OpenAPI 3.1 document. The
live conformance run (schemathesis) is ``tests/e2e/test_api_contract.py``.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from inprocess import InProcessDaemon
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from spl.transport.app import is_open_route
from spl.transport.openapi import DOCUMENTED_METHODS, build_document, openapi_path
from spl.transport.responses import with_rfc3339_times
from spl.transport.routes_admin import _wall_clock_retries
from spl.transport.routes_openapi import is_open_path

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
JSON = {"content-type": "application/json"}


async def _document(daemon: InProcessDaemon) -> dict[str, Any]:
    answer = await daemon.get("/openapi.json")  # no token: the contract is public
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


async def test_document_covers_every_route_and_method(secure_in_process_daemon: InProcessDaemon) -> None:
    document = await _document(secure_in_process_daemon)
    assert OPENAPI_31_VALIDATOR.is_valid(document), [str(e) for e in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert document["openapi"] == "3.1.0"
    expected = {
        (method.lower(), openapi_path(rule.rule))
        for rule in secure_in_process_daemon.app.url_map.iter_rules()
        for method in rule.methods or ()
        if method in DOCUMENTED_METHODS
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert expected == documented
    assert ("post", "/v1/records") in documented and ("get", "/v1/namespaces/{namespace}") in documented
    # Every operation loads, every $ref resolves (a route citing an error status with no component did not).
    unloadable = [
        str(result.err())
        for result in schemathesis.openapi.from_dict(document).get_all_operations()
        if type(result).__name__ == "Err"
    ]
    assert unloadable == []


async def test_open_routes_need_no_token_and_the_rest_do(secure_in_process_daemon: InProcessDaemon) -> None:
    document = await _document(secure_in_process_daemon)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer spl_<env>_…",
    }
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if is_open_route(path):
                assert operation["security"] == [], (method, path)
                assert "401" not in operation["responses"], (method, path)
            else:
                assert "security" not in operation, (method, path)  # the document-wide bearer/apiKey applies
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
    assert document["paths"]["/openapi.json"]["get"]["security"] == []
    assert document["paths"]["/health"]["get"]["security"] == []
    for rule in secure_in_process_daemon.app.url_map.iter_rules():  # the contract's list is the gate's list
        assert is_open_path(rule.rule) == is_open_route(rule.rule), rule.rule


async def test_errors_are_the_envelope_and_writes_list_the_gates(secure_in_process_daemon: InProcessDaemon) -> None:
    document = await _document(secure_in_process_daemon)
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert set(envelope["required"]) == {"object", "type", "code", "message"}
    for name, answer in document["components"]["responses"].items():
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorEnvelope"}, name
    emit = document["paths"]["/v1/records"]["post"]
    assert {"201", "200", "400", "413", "415", "503"} <= set(emit["responses"])
    body = emit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RecordSubmission"}  # from the msgspec wire type
    submission = document["components"]["schemas"]["RecordSubmission"]
    assert {"act", "actor", "thread", "clock"} <= set(submission["required"])
    assert emit["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Record"}


def test_an_undescribed_route_still_appears_with_a_generic_entry() -> None:
    routes = [
        ("/v1/new/<thing>", frozenset({"GET", "HEAD", "OPTIONS", "POST"}), "newbp.thing"),
        ("/v1/files/<path:name>", frozenset({"DELETE"}), "newbp.files"),
    ]
    document = build_document(routes, lambda path: False)
    get = document["paths"]["/v1/new/{thing}"]["get"]
    post = document["paths"]["/v1/new/{thing}"]["post"]
    assert set(document["paths"]["/v1/new/{thing}"]) == {"get", "post"}  # HEAD/OPTIONS come from the route table
    assert get["parameters"] == [
        {"name": "thing", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    ]
    assert "2XX" in get["responses"] and "requestBody" not in get
    assert post["requestBody"] == {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    assert {"400", "401", "403", "404", "413", "415"} <= set(post["responses"])
    delete = document["paths"]["/v1/files/{name}"]["delete"]
    assert delete["requestBody"]["required"] is False  # a DELETE sends the media type, body or not
    assert OPENAPI_31_VALIDATOR.is_valid(document)


async def test_document_is_built_once_per_app(secure_in_process_daemon: InProcessDaemon) -> None:
    first = await secure_in_process_daemon.get("/openapi.json")
    second = await secure_in_process_daemon.get("/openapi.json")
    assert first.content == second.content
    assert secure_in_process_daemon.app.config["SPL_OPENAPI_JSON"] == first.text


# -- RFC 3339 times in the views ---------------------------------------------------------------------------


def test_view_times_become_rfc3339_and_the_rest_stays() -> None:
    view = {
        "created_at": 1796081744.4351742,
        "revoked_at": None,
        "uptime_secs": 12.5,
        "lag_seconds": 3.0,
        "history": [{"at": 0, "from": "a", "to": "b"}],
        "last_error": {"code": "TIMEOUT", "at": 1796081745.0},
        "flag_at": True,
        "expires_at": "2026-11-30T23:35:45Z",
        "peer_manifest": {"signed_at": 5.0},  # a signed document passes through as it is
    }
    shown = with_rfc3339_times(view)
    assert shown["created_at"] == "2026-11-30T23:35:44Z"
    assert shown["history"][0]["at"] == "1970-01-01T00:00:00Z"
    assert shown["last_error"]["at"] == "2026-11-30T23:35:45Z"
    assert shown["revoked_at"] is None and shown["flag_at"] is True and shown["expires_at"] == view["expires_at"]
    assert shown["uptime_secs"] == 12.5 and shown["lag_seconds"] == 3.0
    assert shown["peer_manifest"] == {"signed_at": 5.0}
    assert view["created_at"] == 1796081744.4351742  # the view itself is not changed
    assert with_rfc3339_times({"created_at": 1e300})["created_at"] == 1e300  # no calendar holds it: kept


def test_supervision_retry_times_move_to_the_wall_clock() -> None:
    tree = {"children": [{"id": "a", "next_retry_at": 10.0, "children": {"children": [{"next_retry_at": None}]}}]}
    moved = _wall_clock_retries(tree, 1_000.0)
    assert moved["children"][0]["next_retry_at"] == 1_010.0
    assert moved["children"][0]["children"]["children"][0]["next_retry_at"] is None


async def test_tokens_and_threads_show_rfc3339_times(secure_in_process_daemon: InProcessDaemon) -> None:
    daemon = secure_in_process_daemon
    admin = {"authorization": f"Bearer {daemon.admin_token}"}
    minted = await daemon.post("/v1/tokens", json={"scopes": ["records:read"], "label": "times"}, headers=admin)
    assert minted.status_code == 201, minted.text
    assert RFC3339.match(minted.json()["created_at"]), minted.text
    listing = (await daemon.get("/v1/tokens", headers=admin)).json()["data"]
    assert listing and all(RFC3339.match(token["created_at"]) for token in listing)
    revoked = await daemon.delete(f"/v1/tokens/{minted.json()['token_id']}", headers={**admin, **JSON})
    assert revoked.status_code == 200, revoked.text
    listing = (await daemon.get("/v1/tokens", headers=admin)).json()["data"]
    assert any(token["revoked_at"] is not None and RFC3339.match(token["revoked_at"]) for token in listing)

    record = {"act": "LEARN", "actor": "did:test:times", "thread": "th_times", "clock": 1, "body": {}}
    assert (await daemon.post("/v1/records", json=record, headers=admin)).status_code == 201
    threads = (await daemon.get("/v1/threads", headers=admin)).json()["data"]
    assert threads and all(RFC3339.match(thread["updated_at"]) for thread in threads)
    shown = (await daemon.get("/v1/threads/th_times", headers=admin)).json()
    assert RFC3339.match(shown["updated_at"]), shown
    status = (await daemon.get("/v1/status", headers=admin)).json()
    assert isinstance(status["uptime_secs"], float | int)  # a duration stays a number


async def test_sync_pair_views_show_rfc3339_times(secure_in_process_daemon: InProcessDaemon) -> None:
    """A pair whose peer cannot be reached: its error, history and pair times are RFC 3339 in every view."""
    daemon = secure_in_process_daemon
    admin = {"authorization": f"Bearer {daemon.admin_token}", **JSON}
    peer = {"peer_did": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "peer_url": "http://peer.example"}
    created = await daemon.post("/v1/sync/pairs", json={**peer, "thread_id": "th_pair_times"}, headers=admin)
    assert created.status_code == 201, created.text
    pair_id = created.json()["pair_id"]
    kicked = await daemon.post(f"/v1/sync/pairs/{pair_id}/kick?wait=1", headers=admin)
    assert kicked.status_code == 200, kicked.text
    views = [
        kicked.json(),
        (await daemon.get(f"/v1/sync/pairs/{pair_id}", headers=admin)).json(),
        (await daemon.get("/v1/sync/pairs", headers=admin)).json()["data"][0],
        (await daemon.get("/v1/status", headers=admin)).json()["federation"]["pairs"][0],
    ]
    for view in views:
        assert RFC3339.match(view["last_error"]["at"]), view
        assert view["history"] and all(RFC3339.match(step["at"]) for step in view["history"]), view
        assert view["next_retry_at"] is None or RFC3339.match(view["next_retry_at"]), view
        assert view["last_success_at"] is None
    stats = (await daemon.get(f"/v1/sync/pairs/{pair_id}/stats", headers=admin)).json()
    assert stats["poll"]["next_retry_at"] is None or RFC3339.match(stats["poll"]["next_retry_at"]), stats
