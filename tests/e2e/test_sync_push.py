"""``POST /v1/sync/records``: signed records pushed by a peer are verified, deduplicated and kept as signed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fed_support import all_records, signed

from spl.core.identity import Identity, verify_record_signature
from spl.daemon.launcher import DaemonProcess

ORIGIN = Identity.generate()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("push") / "home")
    process.start(port=0)
    yield process
    process.kill()


async def push(http: httpx.AsyncClient, url: str, records: list[Any], **headers: str) -> httpx.Response:
    return await http.post(f"{url}/v1/sync/records", json={"records": records}, headers=headers)


async def test_pushed_records_are_verified_deduplicated_and_keep_their_signature(daemon: DaemonProcess) -> None:
    thread = "th_push"
    good = [signed(ORIGIN, thread, n) for n in range(1, 6)]
    tampered = {**signed(ORIGIN, thread, 6), "body": {"n": "other"}}
    unsigned = {key: value for key, value in signed(ORIGIN, thread, 7).items() if key != "sig"}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await push(http, daemon.url, [*good[:3], tampered, unsigned])
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["object"] == "sync_ingest_result"
        assert result["accepted"] == [record["id"] for record in good[:3]] and result["duplicates"] == []
        assert sorted(refusal["code"] for refusal in result["refused"]) == ["ID_MISMATCH", "SIGNATURE_INVALID"]
        assert all(refusal["reason"] for refusal in result["refused"])

        again = (await push(http, daemon.url, good)).json()  # replay: a no-op for what is there
        assert again["duplicates"] == [record["id"] for record in good[:3]]
        assert again["accepted"] == [record["id"] for record in good[3:]] and again["refused"] == []

        stored = await all_records(http, daemon.url, thread)
        assert [record["id"] for record in stored] == [record["id"] for record in good]
        for record, original in zip(stored, good, strict=True):
            assert (record["signer"], record["sig"]) == (ORIGIN.did, original["sig"])
            assert verify_record_signature(record["id"], record["signer"], record["sig"])


async def test_a_federation_push_must_be_signed(daemon: DaemonProcess) -> None:
    thread = "th_push_signed"
    unsigned = {key: value for key, value in signed(ORIGIN, thread, 1).items() if key not in ("sig", "signer")}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await push(
            http, daemon.url, [signed(ORIGIN, thread, 2), unsigned], **{"x-syncropel-federation": "1"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "SIGNATURE_REQUIRED"
        assert await all_records(http, daemon.url, thread) == []
        for payload in ({"records": "x"}, {"ids": ["a"]}, [], {"records": [{}] * 10_001}):
            response = await http.post(f"{daemon.url}/v1/sync/records", json=payload)
            assert response.status_code in (400, 413), response.text


@pytest.mark.filterwarnings("ignore:Async generator 'http:ResourceWarning")  # httpx's request body, cut short
async def test_an_oversized_push_is_a_413_that_names_the_limit(daemon: DaemonProcess) -> None:
    oversized = b'{"records":["' + b"x" * 2_000_000 + b'"]}'
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{daemon.url}/v1/sync/records", content=oversized, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["code"] == "PAYLOAD_TOO_LARGE" and "max_body_bytes" in body["message"]
