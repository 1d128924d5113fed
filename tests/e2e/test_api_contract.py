"""The API contract, checked against a live daemon: schemathesis drives every operation of ``/openapi.json``.

One real daemon (auth on, the admin token: every scope) for the module. For each operation schemathesis generates a
few requests from the document (positive: what the contract allows; negative: what it forbids; and, where every
path parameter can name something the daemon holds, allowed requests on those ids) and checks every answer: never
a 5xx (``not_a_server_error``), a status the document lists (``status_code_conformance``), a body matching the
schema the document gives for that status (``response_schema_conformance``).

Bounded: :data:`EXAMPLES` examples per operation and pass, derandomized (the same requests on every run), no
shrinking (a failure is reported as generated), a request timeout. Operations left out, and why:

* the Server-Sent Events streams ``GET /v1/threads/{thread}/watch`` and ``GET /v1/ui/events``: they never end (the
  SSE and UI suites test them);
* ``POST /v1/fleet/kill``: a valid body freezes the instance, and the rest of the run would test the freeze
  (``tests/e2e/test_kill_switch.py`` does);
* ``POST /v1/sync/pairs`` and ``POST /v1/federation/pairs``: a valid body makes the daemon call the peer URL it
  names, i.e. random hosts (the pair suites run real peers);
* identity rotation (``/rotat`` in the path): a valid body replaces the instance's key.

``GET /v1/sync/changes`` keeps its generated parameters but never waits: a long poll is sent with ``timeout=0`` and
the continuous feed (an endless stream) as a plain page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from e2e_support import envelope, make_daemon
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from spl.daemon.launcher import DaemonProcess

EXAMPLES = {"positive": 5, "negative": 3, "known ids": 3}  # requests per operation and pass
REQUEST_TIMEOUT = 10.0
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXCLUDED = {
    ("GET", "/v1/threads/{thread}/watch"),  # SSE: never ends
    ("GET", "/v1/ui/events"),  # SSE: never ends
    ("POST", "/v1/fleet/kill"),  # freezes the daemon under test
    ("POST", "/v1/sync/pairs"),  # calls the peer URL in its body
    ("POST", "/v1/federation/pairs"),  # calls the peer URL in its body
}
ROTATION = re.compile(r"rotat")  # identity rotation: a valid body replaces the instance's key
THREAD = "th_contract"

# A snapshot upload is JSON lines; the document gives it as text, which schemathesis sends as it is.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@dataclass
class Node:
    process: DaemonProcess
    known: dict[str, str]  # path parameter -> an id that exists on this daemon


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One daemon, auth on, holding a record, a task and a throwaway token for the "known ids" pass to find."""
    root: Path = tmp_path_factory.mktemp("contract")
    process = make_daemon(root / "a", insecure=False)
    try:
        with httpx.Client(base_url=process.url, timeout=10, headers=admin_headers(process)) as http:
            emitted = http.post("/v1/records", json=envelope(THREAD, 1))
            assert emitted.status_code == 201, emitted.text
            task = http.post("/v1/tasks", json={"title": "contract"})
            assert task.status_code == 201, task.text
            token = http.post("/v1/tokens", json={"scopes": ["records:read"], "label": "throwaway"})
            assert token.status_code == 201, token.text
            known = {
                "thread": THREAD,
                "record_id": emitted.json()["id"],
                "key": task.json()["alias"],
                "namespace": "default",
                "did": http.get("/v1/identity").json()["did"],
                "token_id": token.json()["token_id"],
            }
        yield Node(process, known)
    finally:
        process.kill()


def admin_headers(process: DaemonProcess) -> dict[str, str]:
    return {"authorization": f"Bearer {process.admin_token}", "content-type": "application/json"}


@pytest.fixture(scope="module")
def document(node: Node) -> dict[str, Any]:
    answer = httpx.get(f"{node.process.url}/openapi.json", timeout=10)  # no token: the contract is public
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    payload: dict[str, Any] = answer.json()
    return payload


def test_document_is_openapi_31(document: dict[str, Any]) -> None:
    errors = [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert errors == []
    assert document["openapi"].startswith("3.1")


def _bounded(case: Any) -> None:
    """The change feed never waits here: a long poll asks for timeout=0, the endless SSE feed becomes a page."""
    if case.path == "/v1/sync/changes" and isinstance(case.query, dict):
        if case.query.get("feed") == "longpoll":
            case.query["timeout"] = "0"
        elif case.query.get("feed") == "continuous":
            case.query["feed"] = "normal"


def test_api_conforms_to_its_contract(node: Node, document: dict[str, Any]) -> None:
    """Per operation: generated requests the contract allows, requests it forbids, and (where every path parameter
    names something this daemon holds) allowed requests on those ids, so success answers are checked too."""
    schema = schemathesis.openapi.from_dict(document)
    headers = admin_headers(node.process)
    session = requests.Session()  # one keep-alive connection for the whole run
    failures: list[str] = []
    runs: list[tuple[float, str]] = []
    started = time.monotonic()
    for result in schema.get_all_operations():
        if type(result).__name__ == "Err":  # an operation schemathesis cannot load is a broken contract
            failures.append(f"unloadable operation: {result.err()}")
            continue
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if (operation.method.upper(), operation.path) in EXCLUDED or ROTATION.search(operation.path):
            continue
        names = [parameter.name for parameter in operation.path_parameters]
        passes: list[tuple[str, Any]] = [
            ("positive", operation.as_strategy(generation_mode=GenerationMode.POSITIVE)),
            ("negative", operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)),
        ]
        if names and all(name in node.known for name in names):
            fixed = {name: node.known[name] for name in names}
            passes.append(("known ids", operation.as_strategy(path_parameters=fixed)))
        for kind, strategy in passes:

            @settings(
                max_examples=EXAMPLES[kind],
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: a finding is reported as generated
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def exercise(case: Any) -> None:
                _bounded(case)
                sent = {**headers, **(case.headers or {})}
                response = case.call(base_url=node.process.url, session=session, headers=sent, timeout=REQUEST_TIMEOUT)
                case.validate_response(response, checks=CHECKS, headers=sent)

            began = time.monotonic()
            try:
                exercise()
            except Unsatisfiable:
                assert kind == "negative"  # nothing to get wrong: no parameter, no body
            except (Exception, BaseExceptionGroup) as exc:  # every failure is collected: one run reports them all
                failures.append(f"{label} ({kind}): {exc}")
            runs.append((time.monotonic() - began, f"{label} ({kind})"))
    elapsed = time.monotonic() - started
    slowest = ", ".join(f"{label} {spent:.1f} s" for spent, label in sorted(runs)[-3:])
    print(f"\ncontract: {len(runs)} runs in {elapsed:.1f} s; slowest: {slowest}")
    assert len(runs) >= 150, f"only {len(runs)} runs: operations went missing from the document"
    assert not failures, f"{len(failures)} run(s) broke the contract:\n\n" + "\n\n".join(failures)
