"""An attacker's pass over federation pairs and consent (issue 10): what a stranger, a peer or a hostile
responder can make a steward do.

Each test pins a defence. Most began as a finding of the attacker's pass (a test marked ``xfail`` that
failed on the code of the day) and stayed, unmarked, with its fix, as the test that would have caught it.

Real daemons (``spl serve`` on loopback, auth on) unless a test needs to reach inside one (a bound lowered,
a clock), in which case it runs the same actors in process. The attacker is scripted
(``hostile_responder``): a :class:`Stranger` is a key pair that signs handshake documents, a
:class:`HostileResponder` an HTTP server that answers what the test tells it to. Every wait polls a
condition against a deadline; nothing sleeps to let something happen.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
from fed_support import wait_until
from hostile_responder import HostileResponder, Stranger, resign
from inprocess import InProcessDaemon, copy_home, run_in_process
from pair_nodes import JSON, Node, act, client, create_namespaces, start_node
from pair_nodes import emit as emit_as

from spl.core.handshake import NamespaceMap
from spl.core.identity import Identity
from spl.daemon.launcher import DaemonProcess


async def emit(http: httpx.AsyncClient, node: Node, thread: str, clock: int, **body: Any) -> str:
    return await emit_as(http, node, thread, clock, actor="did:test:attack", **body)


async def stranger_pair(http: httpx.AsyncClient, node: Node, stranger: Stranger, **request: Any) -> tuple[str, str]:
    """Pair ``stranger`` with an auto-approving ``node``: the token it was sealed and the pair id."""
    document = stranger.request(**request)
    answer = await http.post(f"{node.url}/v1/federation/pair", json=document, headers=JSON)
    assert answer.status_code == 200, answer.text
    token = stranger.accept(document, answer.json()).token
    assert token is not None
    return token, str(document["pair_id"])


@dataclass
class Stream:
    """What a continuous feed delivered so far, and whether the steward ended it."""

    records: list[dict[str, Any]]
    ended: bool = False

    def threads(self) -> list[str]:
        return [str(item["record"]["thread"]) for item in self.records]


async def follow(
    http: httpx.AsyncClient, url: str, token: str, stream: Stream, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Read a continuous feed into ``stream`` until the steward ends it (or the test cancels)."""
    async with http.stream("GET", url, headers={"x-api-key": token}, timeout=httpx.Timeout(10, read=None)) as answer:
        task_status.started(answer.status_code)
        try:
            async for line in answer.aiter_lines():
                if line.startswith("data: ") and '"record"' in line:
                    stream.records.append(json.loads(line[6:]))
        except httpx.HTTPError:
            pass
    stream.ended = True


# -- 1. an open continuous feed is authorised once, at its start ---------------------------------------------------


@pytest.mark.parametrize("change", ["revoke", "pause"])
async def test_revoking_or_pausing_a_pair_ends_its_open_continuous_feed(
    daemon_factory: type[DaemonProcess], change: str
) -> None:
    b = await start_node(daemon_factory, "b")
    stranger = Stranger(b.did)
    async with client() as http:
        token, pair_id = await stranger_pair(http, b, stranger)
        stream = Stream([])
        feed = f"{b.url}/v1/sync/changes?namespace=default&feed=continuous"
        async with trio.open_nursery() as nursery:
            assert await nursery.start(follow, http, feed, token, stream) == 200
            await emit(http, b, "th_before", 1)
            await wait_until(lambda: "th_before" in stream.threads(), 20, "the first record on the open feed")
            await act(http, b, pair_id, change)
            refused = await http.get(f"{b.url}/v1/sync/changes?namespace=default", headers={"x-api-key": token})
            assert refused.status_code in (401, 403), refused.text  # a new request is refused at once …
            await emit(http, b, "th_after", 1)
            # … and the open feed must end without delivering what was written after the change.
            await wait_until(
                lambda: stream.ended or "th_after" in stream.threads(), 20, "the feed to end or deliver th_after"
            )
            nursery.cancel_scope.cancel()
        assert "th_after" not in stream.threads(), f"{change}d pair still streamed a record written after the {change}"
        assert stream.ended


async def test_narrowing_the_thread_allow_list_applies_to_an_open_continuous_feed(
    daemon_factory: type[DaemonProcess],
) -> None:
    b = await start_node(daemon_factory, "b")
    stranger = Stranger(b.did)
    async with client() as http:
        token, pair_id = await stranger_pair(http, b, stranger)
        stream = Stream([])
        feed = f"{b.url}/v1/sync/changes?namespace=default&feed=continuous"
        async with trio.open_nursery() as nursery:
            assert await nursery.start(follow, http, feed, token, stream) == 200
            await emit(http, b, "th_secret_1", 1)
            await wait_until(lambda: "th_secret_1" in stream.threads(), 20, "the first record on the open feed")
            narrowed = await http.patch(
                f"{b.url}/v1/federation/pairs/{pair_id}", json={"thread_allow": ["th_open*"]}, headers=b.headers
            )
            assert narrowed.status_code == 200, narrowed.text
            await emit(http, b, "th_secret_2", 1)  # now outside the allow-list
            await emit(http, b, "th_open_1", 1)  # inside: once it arrives, th_secret_2 was served or skipped
            await wait_until(lambda: "th_open_1" in stream.threads(), 20, "the allowed record on the open feed")
            nursery.cancel_scope.cancel()
        assert "th_secret_2" not in stream.threads()


# -- 2. what a stranger's signature buys under federation.pair_approval = auto -------------------------------------


async def test_auto_approval_does_not_hand_a_stranger_a_namespace_it_names(
    daemon_factory: type[DaemonProcess],
) -> None:
    """Under auto approval only federation.auto_namespaces (default: default) can be mapped: a stranger naming
    another namespace is refused, or sees its answer narrowed to what is open, and reads nothing else."""
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        await create_namespaces(http, b, "private")
        await emit(http, b, "th_diary", 1, namespace="private", text="secret-diary")
        alone = Stranger(b.did).request(maps=[NamespaceMap("private", "private")])
        refused = await http.post(f"{b.url}/v1/federation/pair", json=alone, headers=JSON)
        assert refused.status_code == 403 and refused.json()["code"] == "PAIRING_CLOSED", refused.text
        maps = [NamespaceMap("private", "private"), NamespaceMap("default", "default")]
        token, pair_id = await stranger_pair(http, b, Stranger(b.did), maps=maps)
        pulled = await http.get(f"{b.url}/v1/sync/changes?namespace=private", headers={"x-api-key": token})
        assert pulled.status_code == 200, pulled.text
        assert "secret-diary" not in pulled.text, "a stranger read the private namespace by naming it in its request"
        shown = await http.get(f"{b.url}/v1/federation/pairs/{pair_id}", headers=b.headers)
        assert shown.json()["maps"] == [{"local": "default", "peer": "default"}], shown.text


async def test_a_pair_token_can_follow_the_continuous_namespace_feed(daemon_factory: type[DaemonProcess]) -> None:
    """The filtered stream runs outside the request context: it must carry the services it needs (it once called
    ``services()`` from the generator, and every stream died with RuntimeError at its first read)."""
    b = await start_node(daemon_factory, "b")
    stranger = Stranger(b.did)
    async with client() as http:
        token, _ = await stranger_pair(http, b, stranger)
        stream = Stream([])
        feed = f"{b.url}/v1/sync/changes?namespace=default&feed=continuous"
        async with trio.open_nursery() as nursery:
            assert await nursery.start(follow, http, feed, token, stream) == 200
            await emit(http, b, "th_live", 1)
            await wait_until(lambda: stream.ended or stream.records, 20, "the feed to deliver or end")
            nursery.cancel_scope.cancel()
        assert stream.threads() == ["th_live"] and not stream.ended
        assert "Not within an app context" not in b.process.log_path.read_text()


# -- 3. a hostile responder answering the initiator ------------------------------------------------------------------


async def initiate(http: httpx.AsyncClient, a: Node, peer: HostileResponder, **extra: Any) -> httpx.Response:
    return await http.post(
        f"{a.url}/v1/federation/pairs", json={"url": peer.url, "wait": 0, **extra}, headers=a.headers
    )


async def healthy(http: httpx.AsyncClient, node: Node) -> bool:
    return (await http.get(f"{node.url}/health")).status_code == 200


def _unrequested_map(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    maps = [NamespaceMap("default", "default"), NamespaceMap("secret", "secret")]
    return 200, json.dumps(peer.active_answer(request, maps=maps)).encode()


def _signed_by_another_key(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    return 200, json.dumps(resign(Identity.generate(), peer.active_answer(request))).encode()


def _oversized(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    answer = peer.active_answer(request)
    return 200, json.dumps({**answer, "padding": "x" * 200_000}).encode()


def _not_json(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    return 200, b"<html>pair accepted</html>"


def _deep(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    return 200, b"[" * 30_000 + b"]" * 30_000  # 60 KB: inside the 64 KiB bound, far past the parser's depth


def _error_with_escapes(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    return 500, b'{"object":"error","code":"\\u001b[31mBOOM","message":"\\u001b]0;pwned\\u0007 see evil.example"}'


LIES: dict[str, Callable[[HostileResponder, dict[str, Any]], tuple[int, bytes]]] = {
    "a map it was never offered": _unrequested_map,
    "an answer signed by another key": _signed_by_another_key,
    "an answer that is not JSON": _not_json,
    "JSON nested 30,000 deep": _deep,
    "an error with terminal escapes": _error_with_escapes,
}


async def test_the_initiator_refuses_every_lie_in_a_hostile_answer_and_revokes_what_it_minted(
    daemon_factory: type[DaemonProcess],
) -> None:
    """Each lie is a 502 naming the peer's fault, the pair is recorded revoked (its token with it), nothing
    unescaped reaches the message, and the daemon stays up."""
    a = await start_node(daemon_factory, "a")
    async with client() as http:
        for lie, answer in LIES.items():
            peer = HostileResponder(answer=answer)
            with peer.running():
                refused = await initiate(http, a, peer)
                assert refused.status_code == 502, (lie, refused.text)
                assert refused.json()["code"] == "PAIR_HANDSHAKE_REJECTED", (lie, refused.text)
                assert "\x1b" not in refused.text and "\x07" not in refused.text, lie
                assert await healthy(http, a), lie
                # the token it sealed to the liar is dead
                request = json.loads(peer.requests_to("/v1/federation/pair")[0].body)
                pull = await http.get(
                    f"{a.url}/v1/sync/changes?namespace=default", headers={"x-api-key": peer.token_of(request)}
                )
                assert pull.status_code == 401 and pull.json()["code"] == "TOKEN_REVOKED", (lie, pull.text)
        listing = (await http.get(f"{a.url}/v1/federation/pairs", headers=a.headers)).json()["data"]
        assert [p["state"] for p in listing] == ["revoked"] * len(LIES)
        assert "\x1b" not in json.dumps(listing, ensure_ascii=False)


async def test_a_garbage_answer_is_a_refusal_and_the_liar_cannot_pull(daemon_factory: type[DaemonProcess]) -> None:
    a = await start_node(daemon_factory, "a")
    peer = HostileResponder(answer=_oversized)
    with peer.running():
        async with client() as http:
            await emit(http, a, "th_mine", 1, text="initiator-private")
            refused = await initiate(http, a, peer)
            assert refused.status_code == 502, refused.text
            request = json.loads(peer.requests_to("/v1/federation/pair")[0].body)
            pull = await http.get(
                f"{a.url}/v1/sync/changes?namespace=default", headers={"x-api-key": peer.token_of(request)}
            )
            assert "initiator-private" not in pull.text, "the peer whose answer was refused pulls our feed"


def _unknown_keys(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    answer = peer.active_answer(request)
    return 200, json.dumps({**answer, **{f"k{n}" + "x" * 62: 1 for n in range(3)}}).encode()


async def _restart(node: Node) -> None:
    await trio.to_thread.run_sync(node.process.stop)
    await trio.to_thread.run_sync(node.process.start)


async def test_a_pair_refused_for_a_long_reason_is_still_revoked_after_a_restart(
    daemon_factory: type[DaemonProcess],
) -> None:
    a = await start_node(daemon_factory, "a")
    peer = HostileResponder(answer=_unknown_keys)
    with peer.running():
        async with client() as http:
            refused = await initiate(http, a, peer)
            assert refused.status_code == 502, refused.text
            pair_id = (await http.get(f"{a.url}/v1/federation/pairs", headers=a.headers)).json()["data"][0]["pair_id"]
            await _restart(a)
            shown = await http.get(f"{a.url}/v1/federation/pairs/{pair_id}", headers=a.headers)
            assert shown.status_code == 200 and shown.json()["state"] == "revoked", shown.text


def _pad_advertises(manifest: dict[str, Any]) -> None:
    manifest["advertises"]["kinds"] = [f"kind.{n}." + "x" * 100 for n in range(200)]  # ~22 KiB, under 256 KiB


async def test_a_peer_manifest_too_large_to_keep_is_refused_before_anything_is_minted(
    daemon_factory: type[DaemonProcess],
) -> None:
    """The pair keeps the peer's manifest in its record, and the fold refuses one over 16 KiB: such a manifest is
    refused at the handshake's first step (it once made the pair vanish at the next start while its token lived)."""
    a = await start_node(daemon_factory, "a")
    peer = HostileResponder(edit_manifest=_pad_advertises)
    with peer.running():
        async with client() as http:
            refused = await initiate(http, a, peer)
            assert refused.status_code in (400, 502) and refused.json()["code"] == "MANIFEST_INVALID", refused.text
            listed = await http.get(f"{a.url}/v1/federation/pairs", headers=a.headers)
            assert listed.json()["data"] == []
            minted = (await http.get(f"{a.url}/v1/tokens", headers=a.headers)).json()["data"]
            assert [token for token in minted if token.get("pair_id")] == []


async def test_an_expired_manifest_with_a_rewritten_expiry_is_refused(daemon_factory: type[DaemonProcess]) -> None:
    from hostile_responder import expired_block_made_fresh

    from spl.core.manifest import MANIFEST_LIFETIME

    a = await start_node(daemon_factory, "a")
    peer = HostileResponder(
        manifest_signed_at=time.time() - MANIFEST_LIFETIME - 3600, edit_signature_block=expired_block_made_fresh
    )
    with peer.running():
        async with client() as http:
            refused = await initiate(http, a, peer)
            assert refused.status_code == 502 and refused.json()["code"] == "MANIFEST_INVALID", refused.text


@pytest.mark.parametrize("endpoint", ["file:///etc/passwd", "ftp://127.0.0.1/pair", "http://user:pw@127.0.0.1:9/x"])
async def test_a_manifest_pair_endpoint_outside_http_is_refused_before_anything_is_sent(
    daemon_factory: type[DaemonProcess], endpoint: str
) -> None:
    a = await start_node(daemon_factory, "a")

    def point_elsewhere(manifest: dict[str, Any]) -> None:
        manifest["federation"]["pair_endpoint"] = endpoint

    peer = HostileResponder(edit_manifest=point_elsewhere)
    with peer.running():
        async with client() as http:
            refused = await initiate(http, a, peer)
            assert refused.status_code == 400 and refused.json()["code"] == "INVALID_PEER_URL", refused.text
            assert peer.requests_to("/v1/federation/pair") == []
            assert (await http.get(f"{a.url}/v1/federation/pairs", headers=a.headers)).json()["data"] == []
            tokens = (await http.get(f"{a.url}/v1/tokens", headers=a.headers)).json()["data"]
            assert [t for t in tokens if t.get("pair_id")] == []  # nothing minted for a pair that never started


# -- 4. the open handshake routes under hostile bytes ---------------------------------------------------------------


def _hostile_bodies(did: str) -> list[tuple[str, bytes]]:
    stranger = Stranger(did)
    genuine = stranger.request()
    deep = b'{"object":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        ("empty", b""),
        ("null", b"null"),
        ("a list", b"[1,2]"),
        ("truncated", b'{"object":'),
        ("not utf-8", b'{"object":"\xff\xfe"}'),
        ("NaN", b'{"object":NaN,"version":1}'),
        ("Infinity version", json.dumps({**genuine, "version": 1e999}).encode().replace(b"1e999", b"Infinity")),
        ("a 400-digit version", json.dumps(genuine).encode().replace(b'"version": 1', b'"version": ' + b"9" * 400)),
        ("nested 100,000 deep", deep),
        ("65 KiB", json.dumps({**genuine, "pad": "x" * 66_000}).encode()),
        ("10,000 keys", json.dumps({f"k{n}": n for n in range(10_000)}).encode()),
        ("unicode keys", json.dumps({"ob\u202eject": 1, "\u0000": 2, "\ud800": 3}).encode()),
        ("wrong types", json.dumps({**genuine, "pair_id": ["pair_0"], "namespaces": "default", "nonce": 7}).encode()),
        ("lone surrogate", json.dumps({**genuine, "initiator_url": "http://a\ud800.example"}).encode()),
        (
            "17 maps",
            json.dumps(
                {**genuine, "namespaces": [{"initiator": f"n{i}", "responder": "d"} for i in range(17)]}
            ).encode(),
        ),
        ("another responder", json.dumps({**genuine, "responder_did": Identity.generate().did}).encode()),
        ("re-signed nothing", json.dumps({**genuine, "signature": "A" * 86}).encode()),
    ]


async def test_the_open_handshake_routes_answer_hostile_bytes_with_a_4xx_and_stay_up(
    daemon_factory: type[DaemonProcess],
) -> None:
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        for route in ("/v1/federation/pair", "/v1/federation/pair/poll", "/v1/federation/pair/notify"):
            for name, body in _hostile_bodies(b.did):
                answer = await http.post(f"{b.url}{route}", content=body, headers=JSON)
                assert 400 <= answer.status_code < 500, (route, name, answer.status_code, answer.text[:300])
                error = answer.json()
                assert set(error) >= {"object", "type", "code", "message"}, (route, name, error)
                assert "\u202e" not in answer.text and "Traceback" not in answer.text, (route, name)
            assert await healthy(http, b)
        assert (await http.get(f"{b.url}/v1/aitl", headers=b.headers)).json()["data"] == []
        assert (await http.get(f"{b.url}/v1/federation/pairs", headers=b.headers)).json()["data"] == []
        log = b.process.log_path.read_text()
        assert "Traceback" not in log and "Error in ASGI" not in log


async def test_notices_and_polls_only_count_from_the_pairs_peer_and_only_once(
    daemon_factory: type[DaemonProcess],
) -> None:
    b = await start_node(daemon_factory, "b")
    stranger, impostor = Stranger(b.did), Stranger(b.did)
    async with client() as http:
        notify, poll = f"{b.url}/v1/federation/pair/notify", f"{b.url}/v1/federation/pair/poll"
        token, pair_id = await stranger_pair(http, b, stranger)
        # Someone else's signed revoke of this pair: unknown to them, the pair is untouched.
        forged = await http.post(notify, json=impostor.notice(pair_id, "revoke", reason="gone"), headers=JSON)
        assert forged.status_code == 404 and forged.json()["code"] == "PAIR_UNKNOWN", forged.text
        # The peer's own notice with the DIDs swapped (sent to the wrong receiver) is refused before the signature.
        wrong_receiver = {**stranger.notice(pair_id, "revoke"), "receiver_did": impostor.did}
        assert (await http.post(notify, json=wrong_receiver, headers=JSON)).status_code == 400
        # A poll is the initiator's; an impostor learns nothing, not even whether the pair exists.
        probing = await http.post(poll, json=impostor.poll(pair_id), headers=JSON)
        unknown = await http.post(poll, json=impostor.poll("pair_" + "0" * 16), headers=JSON)
        assert probing.status_code == unknown.status_code == 404 and probing.json() == unknown.json()
        answer = await http.post(poll, json=(genuine := stranger.poll(pair_id)), headers=JSON)
        assert answer.status_code == 200, answer.text
        replayed = await http.post(poll, json=genuine, headers=JSON)
        assert replayed.status_code == 410 and replayed.json()["code"] == "NONCE_REPLAYED", replayed.text
        shown = await http.get(f"{b.url}/v1/federation/pairs/{pair_id}", headers=b.headers)
        assert shown.json()["state"] == "active"
        assert (await http.get(f"{b.url}/v1/sync/changes?namespace=default", headers={"x-api-key": token})).is_success
        # The peer's revoke counts once; its replay is 410 and changes nothing.
        revoke = stranger.notice(pair_id, "revoke", reason="done")
        assert (await http.post(notify, json=revoke, headers=JSON)).status_code == 200
        again = await http.post(notify, json=revoke, headers=JSON)
        assert again.status_code == 410 and again.json()["code"] == "NONCE_REPLAYED", again.text
        refused = await http.get(f"{b.url}/v1/sync/changes?namespace=default", headers={"x-api-key": token})
        assert refused.status_code == 401 and refused.json()["code"] == "TOKEN_REVOKED", refused.text


# -- 5. what a pair's token reads ------------------------------------------------------------------------------------


async def test_a_pair_token_reads_only_its_mapped_namespaces_allowed_threads_and_never_reserved_ones(
    daemon_factory: type[DaemonProcess],
) -> None:
    b = await start_node(daemon_factory, "b")
    stranger = Stranger(b.did)
    async with client() as http:
        await create_namespaces(http, b, "private")
        await emit(http, b, "th_open_1", 1, text="shared-1")
        await emit(http, b, "th_hidden", 1, text="hidden-by-allow-list")
        await emit(http, b, "th_private", 1, namespace="private", text="private-1")
        grant = await http.post(
            f"{b.url}/v1/consent/grants",
            json={"source_namespace": "private", "target_namespace": "elsewhere", "hash_levels": ["L0"]},
            headers=b.headers,
        )
        assert grant.status_code == 201, grant.text  # an L0 grant to another namespace: not this pair's target
        token, pair_id = await stranger_pair(http, b, stranger)
        narrowed = await http.patch(
            f"{b.url}/v1/federation/pairs/{pair_id}", json={"thread_allow": ["th_open*"]}, headers=b.headers
        )
        assert narrowed.status_code == 200, narrowed.text
        key = {"x-api-key": token}
        feed = f"{b.url}/v1/sync/changes"
        served: list[str] = []
        for query in (
            "namespace=default",
            "namespace=default,private",
            "namespace=private",
            "namespace=private&target_namespace=private",
            "namespace=private&target_namespace=elsewhere",
            "namespace=default&since=f1.0.9223372036854775807",
            "namespace=default&since=f1.0.0",
            "namespace=default&since=s1.0",
            "namespace=default&since=0",
            "thread=th_hidden",
            "thread=th_private",
            "thread=th_private&target_namespace=private",
            "thread=th_open_1&feed=longpoll&timeout=0",
        ):
            answer = await http.get(f"{feed}?{query}", headers=key)
            assert answer.status_code == 200, (query, answer.text)
            served.append(answer.text)
        everything = "\n".join(served)
        assert "shared-1" in everything
        for secret in ("hidden-by-allow-list", "private-1", "th_consent", "th_federation_pairs", "cg_"):
            assert secret not in everything, secret
        for reserved in ("th_consent", "th_federation_pairs", "th_namespace_registry"):
            answer = await http.get(f"{feed}?thread={reserved}", headers=key)
            assert answer.status_code == 403 and answer.json()["code"] == "RESERVED_THREAD", answer.text
        for cursor in ("f1.1", "f1.-1.0", "f1.1.99999999999999999999", "s1.x", "\u0661", "1" * 40):
            answer = await http.get(f"{feed}", params={"namespace": "default", "since": cursor}, headers=key)
            assert answer.status_code == 400 and answer.json()["code"] == "INVALID_CURSOR", (cursor, answer.text)


# -- 6. manual approval under a flood of strangers -------------------------------------------------------------------


async def test_manual_approval_holds_at_most_64_strangers_and_lists_them_escaped(
    daemon_factory: type[DaemonProcess],
) -> None:
    """The bound holds (429 past 64), and what the operator is shown is escaped. (Requests nobody decides on give
    their place up after a day: see ``test_undecided_requests_expire_and_make_room``.)"""
    b = await start_node(daemon_factory, "b", approval="manual")
    async with client() as http:
        url = f"{b.url}/v1/federation/pair"

        async def ask(n: int) -> None:
            stranger = Stranger(b.did, url=f"http://evil-{n}.example:1/%1b[31m")
            answer = await http.post(url, json=stranger.request(), headers=JSON)
            assert answer.status_code == 202, answer.text

        async with trio.open_nursery() as nursery:
            for n in range(64):
                nursery.start_soon(ask, n)
        genuine = await http.post(url, json=Stranger(b.did).request(), headers=JSON)
        assert genuine.status_code == 429 and genuine.json()["code"] == "TOO_MANY_PENDING", genuine.text
        pending = (await http.get(f"{b.url}/v1/aitl", headers=b.headers)).json()["data"]
        assert len(pending) == 64
        assert all(item["initiator_url"].startswith("http://evil-") for item in pending)
        assert "\x1b" not in json.dumps(pending, ensure_ascii=False)
        assert await healthy(http, b)


# -- 7. the responder's cost, set by a stranger ------------------------------------------------------------------------


async def test_a_stranger_cannot_set_the_responders_pull_rate(daemon_factory: type[DaemonProcess]) -> None:
    b = await start_node(daemon_factory, "b")
    server = HostileResponder()  # the stranger's own server: its manifest, an empty feed
    with server.running():
        stranger = Stranger(b.did, identity=server.identity, url=server.url)
        async with client() as http:
            await stranger_pair(http, b, stranger, poll_interval=0.05)
            with trio.move_on_after(3):  # an observation window (not a wait for something): how often does b pull?
                await wait_until(lambda: len(server.requests_to("/v1/sync/changes")) >= 1000, 60, "b's pulls")
        pulls = server.requests_to("/v1/sync/changes")
        assert len(pulls) <= 3, f"b pulled the stranger's feed {len(pulls)} times in 3 s"


# -- 8. in process: bounds and books that a real daemon would take minutes to fill -----------------------------------


@pytest.fixture
async def auto_daemon(home_template: Any, tmp_path: Any) -> AsyncIterator[InProcessDaemon]:
    """An in-process daemon with auth on that approves pair requests itself (federation.pair_approval = auto).

    ``run_in_process`` builds the federation with a fresh ``Config`` and a token book of its own; the pairs
    are pointed at the daemon's setting and book here, as ``spl serve`` wires them.
    """
    async with run_in_process(copy_home(home_template, tmp_path / "responder"), insecure=False) as daemon:
        fed = daemon.services.federation.fed  # type: ignore[union-attr]
        fed.approval = lambda: "auto"
        fed.auto_namespaces = frozenset({"default", "music"})  # the projection tests map music
        fed.remember_token = daemon.services.tokens.remember
        fed.forget_token = daemon.services.tokens.mark_revoked
        yield daemon


async def _in_process_pair(daemon: InProcessDaemon, stranger: Stranger, **request: Any) -> tuple[str, str]:
    document = stranger.request(**request)
    answer = await daemon.post("/v1/federation/pair", json=document)
    assert answer.status_code == 200, answer.text
    token = stranger.accept(document, answer.json()).token
    assert token is not None
    return token, str(document["pair_id"])


async def test_strangers_polls_cannot_stop_a_peers_revoke_notice(auto_daemon: InProcessDaemon) -> None:
    """A nonce is spent only once the signature and the sender (the pair's own peer) are checked, in that pair's
    own book: strangers' polls spend nothing, and no other pair's traffic can fill this pair's book."""
    did = auto_daemon.services.identity.did
    peer = Stranger(did)
    _, pair_id = await _in_process_pair(auto_daemon, peer)
    fed = auto_daemon.services.federation.fed  # type: ignore[union-attr]
    for _ in range(3):  # strangers asking about a pair that is not theirs: 404, and nothing spent
        unknown = await auto_daemon.post("/v1/federation/pair/poll", json=Stranger(did).poll(pair_id))
        assert unknown.status_code == 404
    assert pair_id not in fed._seen_nonces
    now = time.time()
    fed._seen_nonces["pair_ffffffffffffffff"] = {f"{n:032x}": now for n in range(65_536)}  # another pair, full
    revoked = await auto_daemon.post("/v1/federation/pair/notify", json=peer.notice(pair_id, "revoke", reason="bye"))
    assert revoked.status_code == 200, revoked.text
    replayed = await auto_daemon.post("/v1/federation/pair/notify", json=peer.notice(pair_id, "revoke"))
    assert replayed.status_code == 200  # a fresh nonce: fine; the same one again is 410 (below)
    document = peer.notice(pair_id, "sync")
    assert (await auto_daemon.post("/v1/federation/pair/notify", json=document)).status_code in (200, 409)
    again = await auto_daemon.post("/v1/federation/pair/notify", json=document)
    assert again.status_code == 410 and again.json()["code"] == "NONCE_REPLAYED", again.text


async def test_revoked_pairs_do_not_count_toward_the_pair_cap(
    auto_daemon: InProcessDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Throwaway keys that pair and revoke themselves leave audit records, not a full steward."""
    import spl.actors.federation_pairs as federation_pairs

    monkeypatch.setattr(federation_pairs, "MAX_PAIRS", 2)
    did = auto_daemon.services.identity.did
    for _ in range(3):
        stranger = Stranger(did)
        _, pair_id = await _in_process_pair(auto_daemon, stranger)
        gone = await auto_daemon.post("/v1/federation/pair/notify", json=stranger.notice(pair_id, "revoke"))
        assert gone.status_code == 200, gone.text
    for _ in range(2):
        await _in_process_pair(auto_daemon, Stranger(did))
    full = await auto_daemon.post("/v1/federation/pair", json=Stranger(did).request())
    assert full.status_code == 429 and full.json()["code"] == "TOO_MANY_PENDING", full.text


async def _admin(daemon: InProcessDaemon) -> dict[str, str]:
    return {"x-api-key": daemon.admin_token, **JSON}


async def _emit_in_process(daemon: InProcessDaemon, thread: str, clock: int, **body: Any) -> dict[str, Any]:
    record = {"act": "PUT", "actor": "did:test:attack", "thread": thread, "clock": clock, "body": body}
    answer = await daemon.post("/v1/records", json=record, headers=await _admin(daemon))
    assert answer.status_code == 201, answer.text
    return {**record, "id": answer.json()["id"]}


async def _projections(daemon: InProcessDaemon, levels: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A stranger paired on maps projects:music pulls music under a grant of ``levels``: what it receives."""
    admin = await _admin(daemon)
    assert (await daemon.post("/v1/namespaces", json={"id": "music"}, headers=admin)).status_code in (200, 201)
    original = await _emit_in_process(
        daemon, "th_song", 1, namespace="music", domain="oncology", operation="diagnose", lyrics="verse-7"
    )
    grant = {"source_namespace": "music", "target_namespace": "projects", "hash_levels": levels}
    assert (await daemon.post("/v1/consent/grants", json=grant, headers=admin)).status_code == 201
    stranger = Stranger(daemon.services.identity.did)
    token, _ = await _in_process_pair(daemon, stranger, maps=[NamespaceMap("projects", "music")])
    pulled = await daemon.get("/v1/sync/changes", params={"namespace": "music"}, headers={"x-api-key": token})
    assert pulled.status_code == 200, pulled.text
    return [item["record"] for item in pulled.json()["records"]], original


async def test_a_projection_carries_no_value_of_the_redacted_body(auto_daemon: InProcessDaemon) -> None:
    """L1 hashes the domain (§15.17) but never sends it: nothing of the body's values, nor its actor, leaves."""
    records, original = await _projections(auto_daemon, ["L1", "L2", "L3"])
    assert len(records) == 1 and records[0]["body"]["kind"] == "core.projection.v1"
    text = json.dumps(records)
    for value in ("oncology", "diagnose", "verse-7", "lyrics", "did:test:attack"):
        assert value not in text, value
    assert records[0]["namespace"] == "projects" and records[0]["body"]["original_id"] == original["id"]


async def test_a_namespace_bound_token_cannot_read_around_the_consent_filter(auto_daemon: InProcessDaemon) -> None:
    admin = await _admin(auto_daemon)
    assert (await auto_daemon.post("/v1/namespaces", json={"id": "music"}, headers=admin)).status_code in (200, 201)
    await _emit_in_process(auto_daemon, "th_song", 1, namespace="music", lyrics="verse-9")
    minted = await auto_daemon.post(
        "/v1/tokens",
        json={"scopes": ["records:read", "federation:sync"], "label": "teammate", "target_namespace": "projects"},
        headers=admin,
    )
    if minted.status_code == 400:
        return  # refusing the combination is one fix
    token = {"x-api-key": minted.json()["token"]}
    feed = await auto_daemon.get("/v1/sync/changes", params={"thread": "th_song"}, headers=token)
    assert feed.status_code == 200 and "verse-9" not in feed.text  # the feed honours the binding …
    raw = await auto_daemon.get("/v1/records", params={"thread": "th_song"}, headers=token)
    assert "verse-9" not in raw.text, "the bound token read the record raw through /v1/records"


# -- 9. token secrecy -----------------------------------------------------------------------------------------------


async def test_no_pair_token_reaches_the_store_a_log_a_listing_or_an_error_body(
    daemon_factory: type[DaemonProcess],
) -> None:
    a = await start_node(daemon_factory, "a")
    b = await start_node(daemon_factory, "b")
    async with client() as http:
        created = await http.post(
            f"{a.url}/v1/federation/pairs", json={"url": b.url, "poll_interval": 0.2}, headers=a.headers
        )
        assert created.status_code == 201, created.text
        pair_id = created.json()["pair_id"]
        held_by_a = a.process.home.root / "secrets" / "pairs" / f"{pair_id}.token"
        held_by_b = b.process.home.root / "secrets" / "pairs" / f"{pair_id}.token"
        assert held_by_a.stat().st_mode & 0o077 == 0 and held_by_b.stat().st_mode & 0o077 == 0
        tokens = [held_by_a.read_text().strip(), held_by_b.read_text().strip()]
        secrets = [token.rpartition("_")[2] for token in tokens]
        seen: list[str] = [created.text]
        for node, token in ((b, tokens[0]), (a, tokens[1])):
            other = a if node is b else b
            for url, headers in (
                (f"{node.url}/v1/records?thread=th_x", {"x-api-key": token}),  # 403: the wrong scope
                (f"{node.url}/v1/sync/changes?namespace=default&since=bogus", {"x-api-key": token}),  # 400
                (f"{other.url}/v1/sync/changes?namespace=default", {"x-api-key": token}),  # 401: not its issuer
                (f"{node.url}/v1/sync/changes?namespace=default", {"x-api-key": token + "0"}),  # 401: altered
                (f"{node.url}/v1/sync/changes?namespace=default", {"authorization": f"Basic {token}"}),  # 401
            ):
                answer = await http.get(url, headers=headers)
                assert answer.status_code in (400, 401, 403), (url, answer.text)
                seen.append(answer.text)
            for path in ("/v1/federation/pairs", f"/v1/federation/pairs/{pair_id}", "/v1/tokens", "/v1/aitl"):
                seen.append((await http.get(f"{node.url}{path}", headers=node.headers)).text)
            seen.append((await http.post(f"{node.url}/v1/federation/pairs/{pair_id}/sync", headers=node.headers)).text)
        revoked = await http.post(f"{a.url}/v1/federation/pairs/{pair_id}/revoke", headers=a.headers)
        seen.append(revoked.text)
        for node in (a, b):
            await trio.to_thread.run_sync(node.process.stop)  # the WAL checkpointed into the database file
            store = b"".join(path.read_bytes() for path in node.process.home.root.glob("hub.db*"))
            logs = "".join(path.read_text(errors="replace") for path in node.process.home.root.rglob("*.log"))
            for secret in secrets:
                assert secret.encode() not in store and secret not in logs
        for secret in secrets:
            assert not any(secret in text for text in seen)


# -- 10. resource exhaustion through the feed ------------------------------------------------------------------------


async def test_one_pair_token_cannot_hold_many_continuous_feeds(daemon_factory: type[DaemonProcess]) -> None:
    b = await start_node(daemon_factory, "b")
    stranger = Stranger(b.did)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None), limits=httpx.Limits(max_connections=32)) as http:
        token, _ = await stranger_pair(http, b, stranger)
        statuses: list[int] = []
        feed = f"{b.url}/v1/sync/changes?namespace=default&feed=continuous"
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                statuses.append(await nursery.start(follow, http, feed, token, Stream([])))
            nursery.cancel_scope.cancel()
        assert 429 in statuses, f"eight concurrent continuous feeds for one pair were all accepted: {statuses}"


async def test_undecided_requests_expire_and_make_room(
    auto_daemon: InProcessDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Throw-away keys filling the manual-approval queue hold it for a day at most, then are rejected as expired."""
    import dataclasses

    import spl.actors.federation_pairs as federation_pairs

    monkeypatch.setattr(federation_pairs, "MAX_PENDING", 2)
    fed = auto_daemon.services.federation.fed  # type: ignore[union-attr]
    fed.approval = lambda: "manual"
    did = auto_daemon.services.identity.did
    waiting = []
    for _ in range(2):
        document = Stranger(did).request()
        answer = await auto_daemon.post("/v1/federation/pair", json=document)
        assert answer.status_code == 202, answer.text
        waiting.append(document["pair_id"])
    full = await auto_daemon.post("/v1/federation/pair", json=Stranger(did).request())
    assert full.status_code == 429, full.text
    for pair_id in waiting:  # a day and a bit later
        view = fed.pairs[pair_id]
        view.pair = dataclasses.replace(view.pair, created_at=view.pair.created_at - 90_000)
    room = await auto_daemon.post("/v1/federation/pair", json=Stranger(did).request())
    assert room.status_code == 202, room.text
    for pair_id in waiting:
        assert fed.pairs[pair_id].pair.state == "revoked" and "expired" in fed.pairs[pair_id].pair.state_reason
