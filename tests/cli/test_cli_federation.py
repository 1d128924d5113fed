"""``spl federation …``, ``spl sync``, ``spl aitl …``, ``spl consent …`` and the federation pairs of ``spl status``.

These commands are presenters over the daemon's ``/v1/federation/pairs``, ``/v1/aitl`` and
``/v1/consent/grants`` routes (docs/federation-pairs.md, "Routes"). Here a ``FakeDaemon`` plays the
daemon with canned answers of the contract's shapes, to pin what each command sends (method, path,
body), what it prints (the seed's lines, exactly), how it resolves a pair prefix, and that whatever
a peer put in a pair (URL, DID, state_reason, manifest) reaches the terminal inert. The end-to-end
walk between two real daemons lives with the routes (the lead's test).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
from cli_support import Cli, FakeDaemon, Result, base_env, one_error_line, run_spl

from spl.cli.answers import FederationPair, FederationSync
from spl.cli.federation import _peer_line, federation_pair_lines
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home

FORGED = "2026-01-01T00:00:00Z CRITICAL forged line"
# OSC (retitle the terminal), a newline forging a line, CSI (clear the screen), a bidi override, a C1 CSI, DEL.
HOSTILE = f"bob\x1b]0;pwned\x07\n{FORGED}\r\x1b[2J\u202etxt\u202c\x9b31m\x7f"

BOB_DID = "did:key:z6MkBobBobBobBobBobBobBobBobBobBobBobBobBobBob1"
PAIR_A = "pair_a1b2c3d4e5f60718"
PAIR_B = "pair_a1b29999e5f60718"  # shares "a1b2" with PAIR_A
PAIR_EVIL = "pair_00000000000000aa"
PAIR_OLD = "pair_0f0f0f0f0f0f0f0f"  # revoked, with bob: no map is added to it
GRANT_ID = "cg_0123456789abcdef"


def federation_pair(pair_id: str, **changes: Any) -> dict[str, Any]:
    """A ``federation_pair`` of the contract's shape."""
    pair: dict[str, Any] = {
        "object": "federation_pair",
        "pair_id": pair_id,
        "role": "initiator",
        "peer_did": BOB_DID,
        "peer_url": "http://bob.example:9100",
        "state": "active",
        "state_reason": "",
        "mode": "polling",
        "poll_interval": 300.0,
        "maps": [{"local": "default", "peer": "default"}],
        "thread_allow": ["*"],
        "created_at": "2026-11-30T14:00:00Z",
        "last_refresh_at": "2026-11-30T14:00:00Z",
        "last_sync_at": "2026-11-30T14:05:00Z",
        "peer_manifest": {
            "daemon": {"did": BOB_DID},
            "federation": {
                "endpoint": "http://bob.example:9100",
                "pair_endpoint": "http://bob.example:9100/v1/federation/pair",
            },
            "consent_policy": {"default_posture": "pair-then-ask"},
            "signed_at": "2026-11-30T13:59:00Z",
            "expires_at": "2026-12-07T13:59:00Z",
        },
        "cursors": {"pull": "clock=42", "serve": "s1.7"},
        "lag": {"in_records": 138, "in_seconds": 12.0, "out_records": 3},
        "grants": [],
        "tokens": {
            "ours": {
                "token_id": "tok_5f3a",
                "scopes": ["federation:subscribe", "federation:sync"],
                "expires_at": "2027-02-28T14:00:00Z",
            },
            "theirs": {"present": True, "scopes": ["federation:subscribe", "federation:sync"], "expires_at": None},
        },
        "pull": {
            "state": "running",
            "state_reason": "caught up",
            "cursor": "clock=42",
            "last_error": None,
            "consecutive_failures": 0,
            "retries": 0,
            "last_success_at": "2026-11-30T00:53:20Z",  # RFC 3339, as daemons now send every time
            "next_retry_at": None,
            "lag_records": 138,
            "lag_seconds": 12.0,
            "stalled": False,
            "records_pulled": 12,
            "records_duplicate": 0,
            "records_refused": {},
            "errors_total": 0,
            "history": [],
        },
    }
    pair.update(changes)
    return pair


GRANT: dict[str, Any] = {
    "object": "consent_grant",
    "grant_id": GRANT_ID,
    "source_namespace": "music",
    "target_namespace": "projects/music",
    "hash_levels": ["L1"],
    "threads": ["*"],
    "purpose": "",
    "peer_did": BOB_DID,
    "created_at": "2026-11-30T14:00:00Z",
    "expires_at": None,
    "revoked_at": None,
    "status": "active",
}
HOSTILE_PAIR = federation_pair(
    PAIR_EVIL,
    peer_did=f"did:key:{HOSTILE}",
    peer_url=f"http://evil.example:9200/{HOSTILE}",
    state=HOSTILE,
    state_reason=HOSTILE,
    mode=HOSTILE,
    maps=[{"local": HOSTILE, "peer": HOSTILE}],
    thread_allow=[HOSTILE],
    last_sync_at=HOSTILE,
    peer_manifest={"daemon": {"did": HOSTILE}, "federation": {"endpoint": HOSTILE}, "expires_at": HOSTILE},
    cursors={"pull": HOSTILE, "serve": HOSTILE},
    grants=[{**GRANT, "purpose": HOSTILE, "peer_did": HOSTILE, "status": HOSTILE}],
    tokens={"ours": {"token_id": HOSTILE, "scopes": [HOSTILE]}, "theirs": {"present": True, "scopes": [HOSTILE]}},
    pull={
        "state": HOSTILE,
        "state_reason": HOSTILE,
        "last_error": {"code": HOSTILE, "message": HOSTILE, "at": "2026-11-30T00:53:20Z"},
        "records_refused": {HOSTILE: 2},
    },
    transitions=[HOSTILE],
)
PAIRS = {
    PAIR_A: federation_pair(PAIR_A),
    PAIR_B: federation_pair(  # as the daemon reports a pair it has not pulled on yet
        PAIR_B,
        peer_did="did:key:z6MkCarol",
        peer_url="http://carol.example:9300",
        mode="continuous",
        cursors={"pull": "", "serve": "s1.9"},
        lag={"in_records": 0, "in_seconds": 0.0, "served_at": "2026-11-30T14:06:00Z"},
        pull=None,
    ),
    PAIR_EVIL: HOSTILE_PAIR,
    PAIR_OLD: federation_pair(PAIR_OLD, state="revoked"),
}
DECISION = {
    "object": "aitl_decision",
    "pair_id": PAIR_A,
    "kind": "federation.pair_pending.v1",
    "initiator_did": f"did:key:{HOSTILE}",
    "initiator_url": HOSTILE,
    "maps": [{"initiator": "default", "responder": "default"}],
    "mode": "polling",
    "requested_at": "2026-11-30T14:00:00Z",
}
SEED_STEPS = [
    {"ok": True, "line": "manifest fetched + signature verified"},
    {"ok": True, "line": "POST /v1/federation/pair → 200 OK"},
    {"ok": True, "line": "peer token persisted (federation:subscribe, federation:sync)"},
    {"ok": True, "line": f"recorded on th_federation_pairs (pair_id: {PAIR_A})"},
    {"ok": True, "line": "initial sync cursor advanced (12 records)"},
]

Answer = Callable[[str, str], tuple[int, Any]]


def routes(method: str, path: str) -> tuple[int, Any]:
    """The canned daemon: every route of the contract the commands call, answering the pairs above."""
    parts = path.strip("/").split("/")
    if path == "/v1/federation/pairs" and method == "GET":
        return 200, {"object": "list", "data": list(PAIRS.values())}
    if parts[:3] == ["v1", "federation", "pairs"] and len(parts) >= 4 and parts[3] in PAIRS:
        pair = PAIRS[parts[3]]
        if len(parts) == 5 and parts[4] == "sync":
            return 200, {
                "object": "federation_sync",
                "pair_id": parts[3],
                "pulled": 12,
                "refused": {"SIGNATURE_INVALID": 1},
                "peer": {"asked": True, "pulled": 3, "error": None},
            }
        if len(parts) == 5:  # pause, resume, refresh, revoke
            state = {"pause": "paused", "resume": "active", "refresh": "active", "revoke": "revoked"}[parts[4]]
            return 200, {**pair, "state": state}
        return 200, pair
    if path == "/v1/aitl":
        return 200, {"object": "list", "data": [DECISION]}
    if parts[:2] == ["v1", "aitl"] and len(parts) == 4:
        return 200, {"pair_id": parts[2], "state": "active" if parts[3] == "approve" else "revoked"}
    if path == "/v1/consent/grants":
        return (200, {"object": "list", "data": [GRANT]}) if method == "GET" else (201, GRANT)
    if path == f"/v1/consent/grants/{GRANT_ID}":
        return 200, {**GRANT, "status": "revoked", "revoked_at": "2026-11-30T15:00:00Z"}
    return 404, {"object": "error", "type": "not_found", "code": "NOT_FOUND", "message": f"no route {path}"}


class Canned:
    """A ``FakeDaemon`` answering through ``answer`` (default :func:`routes`), and ``spl`` pointed at it."""

    def __init__(self, env: dict[str, str], answer: Answer = routes) -> None:
        self.answer = answer
        self.fake = FakeDaemon(answer=self._reply)
        self.env = env

    def _reply(self, method: str, path: str) -> tuple[int, bytes]:
        status, payload = self.answer(method, urlsplit(path).path)
        return status, json.dumps(payload).encode()

    def __call__(self, *args: str) -> Result:
        return run_spl(*args, "--url", self.fake.url, env=self.env)

    def requests(self) -> list[tuple[str, str, Any]]:
        """(method, path, JSON body or None) of every request so far."""
        return [
            (seen.method, urlsplit(seen.path).path, json.loads(seen.body) if seen.body else None)
            for seen in self.fake.seen
        ]


@pytest.fixture(scope="module")
def home_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("federation-cli") / "home"
    initialise(Home.resolve(home))
    return base_env(home)


@pytest.fixture
def canned(home_env: dict[str, str]) -> Iterator[Callable[..., Canned]]:
    opened: list[Canned] = []

    def make(answer: Answer = routes) -> Canned:
        daemon = Canned(home_env, answer)
        daemon.fake.__enter__()
        opened.append(daemon)
        return daemon

    yield make
    for daemon in opened:
        daemon.fake.__exit__()


def assert_inert(text: str) -> list[str]:
    """``text`` holds no character a terminal acts on but the line ends, and no forged line."""
    rows = text.split("\n")
    assert rows[-1] == "", repr(text[-80:])
    for row in rows[:-1]:
        assert row.isprintable(), repr(row)
        assert not row.startswith(FORGED), text
    return rows[:-1]


# -- spl federation pair ---------------------------------------------------------------------------------------


def test_pair_prints_the_seed_lines_and_sends_the_contract_body(canned: Callable[..., Canned]) -> None:
    created = {**federation_pair(PAIR_A), "steps": SEED_STEPS, "initial_sync": {"records": 12}}
    daemon = canned(lambda method, path: (201, created) if path == "/v1/federation/pairs" else routes(method, path))
    result = daemon(
        "federation",
        "pair",
        "http://bob.example:9100/",
        "--map",
        "music:projects/music",
        "--map",
        "default:default",
        "--mode",
        "polling",
        "--poll-interval",
        "5m",
        "--auto-generate-identity",
    ).ok()
    assert result.out == (
        f"Pairing with {BOB_DID} (http://bob.example:9100) ...\n"
        "  ✓ manifest fetched + signature verified\n"
        "  ✓ POST /v1/federation/pair → 200 OK\n"
        "  ✓ peer token persisted (federation:subscribe, federation:sync)\n"
        f"  ✓ recorded on th_federation_pairs (pair_id: {PAIR_A})\n"
        "  ✓ initial sync cursor advanced (12 records)\n"
        "\n"
        "Pair active.\n"
    )
    assert daemon.requests() == [
        (
            "POST",
            "/v1/federation/pairs",
            {
                "url": "http://bob.example:9100/",
                "strict": True,
                "maps": ["music:projects/music", "default:default"],
                "mode": "polling",
                "poll_interval": 300.0,
            },
        )
    ]
    as_json = daemon("federation", "pair", "http://bob.example:9100/", "--no-strict", "-o", "json").ok().json()
    assert as_json == created
    assert daemon.requests()[-1][2] == {"url": "http://bob.example:9100/", "strict": False}


def test_pair_held_for_approval_says_how_to_finish(canned: Callable[..., Canned]) -> None:
    held = {**federation_pair(PAIR_A, state="establishing"), "steps": SEED_STEPS[:2]}
    daemon = canned(lambda method, path: (202, held))
    lines = daemon("federation", "pair", "http://bob.example:9100").ok().out.splitlines()
    assert lines[-2:] == [
        "",
        f"Pair establishing: waiting for the peer's operator to approve (spl aitl approve {PAIR_A} on the peer); "
        f"finish with: spl federation refresh {PAIR_A}",
    ]


def test_a_refused_pairing_is_one_error_line(canned: Callable[..., Canned]) -> None:
    refused = {
        "object": "error",
        "type": "peer_error",
        "code": "MANIFEST_INVALID",
        "message": "manifest signature does not verify against advertised DID",
    }
    daemon = canned(lambda method, path: (502, refused))
    result = daemon("federation", "pair", "https://bob.example/")
    assert (
        one_error_line(result) == "error: MANIFEST_INVALID: manifest signature does not verify against advertised DID"
    )
    assert result.out == ""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--map", "music"), "is not local_ns:peer_ns"),
        (("--map", "a:b:c"), "is not local_ns:peer_ns"),
        (("--mode", "sometimes"), "is not a mode"),
        (("--mode", "continuous", "--poll-interval", "30s"), "applies to polling mode only"),
        (("--poll-interval", "soon"), "--poll-interval"),
    ],
)
def test_pair_refuses_bad_flags_before_any_request(
    canned: Callable[..., Canned], args: tuple[str, ...], needle: str
) -> None:
    daemon = canned()
    assert needle in one_error_line(daemon("federation", "pair", "https://bob.example/", *args))
    assert daemon.requests() == []


# -- listing, showing, prefixes ---------------------------------------------------------------------------------


def test_list_and_show_escape_what_the_peer_put_in_a_pair(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    rows = assert_inert(daemon("federation", "list").ok().out)
    assert rows[0].split() == ["PAIR", "PEER", "STATE", "MODE", "LAST", "SYNC"]
    assert len(rows) == 2 + len(PAIRS)
    assert any(row.startswith(f"{PAIR_A}  bob.example:9100") and "polling every 5m" in row for row in rows), rows
    assert any("carol.example:9300" in row and "continuous" in row for row in rows), rows

    shown = assert_inert(daemon("federation", "show", PAIR_EVIL).ok().out)
    text = "\n".join(shown)
    assert "bob\\x1b]0;pwned\\x07\\x0a2026" in text and "\\u202e" in text and "\\x9b" in text, text
    assert any(row.startswith("  peer_url:") and "evil.example" in row for row in shown), shown
    assert any(row.startswith("  pull_error:") and "bob\\x1b]0;pwned" in row for row in shown), shown
    refreshed = assert_inert(daemon("federation", "refresh", PAIR_EVIL).ok().out)
    assert refreshed[1].startswith("  bob\\x1b]0;pwned"), refreshed  # a transition the daemon reported


def test_show_gives_cursors_lag_manifest_and_token_ids_only(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    rows = daemon("federation", "show", PAIR_A[5:13]).ok().out.splitlines()
    assert rows[0] == f"pair {PAIR_A}"
    fields = {row.split(":", 1)[0].strip(): row.split(":", 1)[1].strip() for row in rows[1:] if row.startswith("  ")}
    assert fields["last_sync_cursor"] == "clock=42, lagging by 138 records (12s behind)"
    assert fields["serve_cursor"] == "s1.7, peer lagging by 3 records"
    assert fields["mode"] == "polling every 5m"
    assert fields["maps"] == "default ↔ default"
    assert fields["token_ours"].startswith(
        "tok_5f3a (federation:subscribe, federation:sync; expires 2027-02-28T14:00:00Z"
    )
    assert fields["token_theirs"].startswith("stored, never shown (")
    assert "pair_endpoint http://bob.example:9100/v1/federation/pair" in fields["peer_manifest"]
    assert fields["pull"] == "running (caught up): 12 pulled, 0 duplicate(s), refused none, 0 error(s)"
    assert "pull_error" not in fields
    assert rows[-1] == "Grants (0)"

    fresh = daemon("federation", "show", PAIR_B).ok().out.splitlines()
    fields = {row.split(":", 1)[0].strip(): row.split(":", 1)[1].strip() for row in fresh[1:] if row.startswith("  ")}
    assert fields["last_sync_cursor"] == "- (nothing pulled yet), lagging by 0 records (0s behind)"
    assert fields["serve_cursor"].startswith("s1.9, last pull by the peer 2026-11-30T14:06:00Z (")
    assert fields["pull"] == "- (not pulling)"


def test_a_pair_is_named_by_its_id_or_a_unique_prefix(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    daemon("federation", "pause", PAIR_A).ok()
    assert daemon.requests() == [("POST", f"/v1/federation/pairs/{PAIR_A}/pause", {})]  # a full id: no listing

    for prefix in ("a1b2c3", "pair_a1b2c3d4"):
        daemon.fake.seen.clear()
        assert daemon("federation", "resume", prefix).ok().out.startswith(f"resumed {PAIR_A} (state active)")
        assert daemon.requests() == [
            ("GET", "/v1/federation/pairs", None),
            ("POST", f"/v1/federation/pairs/{PAIR_A}/resume", {}),
        ]

    daemon.fake.seen.clear()
    ambiguous = one_error_line(daemon("federation", "pause", "a1b2"))
    assert ambiguous == f"error: 'a1b2' matches 2 federation pairs ({PAIR_A}, {PAIR_B}); give more of the id"
    missing = one_error_line(daemon("federation", "pause", "ffff"))
    assert "no federation pair matches 'ffff'; list them with `spl federation list`" in missing
    too_long = one_error_line(daemon("federation", "pause", "pair_a1b2c3d4e5f60718/../../x"))
    assert "is not a pair id" in too_long
    assert all(method == "GET" for method, _, _ in daemon.requests())  # nothing acted on


def test_json_output_is_the_daemons_answer(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    assert daemon("federation", "list", "-o", "json").ok().json()["data"] == list(PAIRS.values())
    shown = daemon("federation", "show", PAIR_EVIL, "-o", "json").ok()
    assert_inert(shown.out)  # exact JSON, with what a terminal would act on spelt as \\u escapes
    assert shown.json() == HOSTILE_PAIR
    assert daemon("federation", "revoke", PAIR_A, "-o", "json").ok().json()["state"] == "revoked"


# -- lifecycle and settings --------------------------------------------------------------------------------------


def test_lifecycle_commands_post_to_their_routes(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    assert daemon("federation", "pause", PAIR_A).ok().out == f"paused {PAIR_A} (state paused)\n"
    assert daemon("federation", "refresh", PAIR_A).ok().out == f"refreshed {PAIR_A}: active\n"
    revoked = daemon("federation", "revoke", PAIR_A, "--reason", "laptop retired").ok().out
    assert revoked.startswith(f"revoked {PAIR_A} (state revoked)")
    assert daemon.requests() == [
        ("POST", f"/v1/federation/pairs/{PAIR_A}/pause", {}),
        ("POST", f"/v1/federation/pairs/{PAIR_A}/refresh", {}),
        ("POST", f"/v1/federation/pairs/{PAIR_A}/revoke", {"reason": "laptop retired"}),
    ]


def test_modes_intervals_and_thread_allow_patch_the_pair(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    daemon("federation", "set-mode", PAIR_A, "continuous").ok()
    daemon("federation", "set-poll-interval", PAIR_A, "30s").ok()
    daemon("federation", "thread-allow", PAIR_A, "th_tasks", "th_dispatch_*").ok()
    daemon("federation", "thread-allow", PAIR_A, "--reset").ok()
    patches = [(path, body) for method, path, body in daemon.requests() if method == "PATCH"]
    assert patches == [
        (f"/v1/federation/pairs/{PAIR_A}", {"mode": "continuous"}),
        (f"/v1/federation/pairs/{PAIR_A}", {"poll_interval": 30.0}),
        (f"/v1/federation/pairs/{PAIR_A}", {"thread_allow": ["th_tasks", "th_dispatch_*"]}),
        (f"/v1/federation/pairs/{PAIR_A}", {"thread_allow": ["*"]}),
    ]

    daemon.fake.seen.clear()
    refused = one_error_line(daemon("federation", "set-poll-interval", PAIR_B, "30s"))  # PAIR_B is continuous
    assert refused == (
        f"error: {PAIR_B} is in continuous mode and a poll interval applies to polling only; "
        f"run `spl federation set-mode {PAIR_B} polling` first"
    )
    assert "is not a mode" in one_error_line(daemon("federation", "set-mode", PAIR_A, "fast"))
    assert "not both" in one_error_line(daemon("federation", "thread-allow", PAIR_A, "th_x", "--reset"))
    assert "--reset" in one_error_line(daemon("federation", "thread-allow", PAIR_A))
    assert all(method == "GET" for method, _, _ in daemon.requests())


# -- consent -------------------------------------------------------------------------------------------------------


def test_federation_grant_records_the_grant_then_maps_the_live_pairs_with_that_peer(
    canned: Callable[..., Canned],
) -> None:
    daemon = canned()
    result = daemon(
        "federation", "grant", BOB_DID, "--namespace", "music", "--maps", "music,projects/music", "--hash-level", "L1"
    ).ok()
    writes = [(method, path, body) for method, path, body in daemon.requests() if method != "GET"]
    assert writes == [
        (
            "POST",
            "/v1/consent/grants",
            {
                "source_namespace": "music",
                "target_namespace": "projects/music",
                "hash_levels": ["L1"],
                "peer_did": BOB_DID,
            },
        ),
        # PAIR_A only: PAIR_B is another peer's, PAIR_OLD is revoked.
        ("PATCH", f"/v1/federation/pairs/{PAIR_A}", {"maps": ["default:default", "music:projects/music"]}),
    ]
    lines = result.out.splitlines()
    assert lines[0] == f"granted {GRANT_ID} music → projects/music L1 threads * peer {BOB_DID} (active)"
    assert lines[1].startswith(f"{PAIR_A}: maps ")

    daemon.fake.seen.clear()
    mismatch = one_error_line(daemon("federation", "grant", BOB_DID, "--namespace", "art", "--maps", "music,x"))
    assert "name different namespaces of ours" in mismatch
    assert "is not a hash level" in one_error_line(
        daemon("federation", "grant", BOB_DID, "--maps", "music,x", "--hash-level", "L9")
    )
    assert "is not a DID" in one_error_line(daemon("federation", "grant", "bob", "--maps", "music,x"))
    assert daemon.requests() == []


def test_consent_grant_list_and_revoke(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    granted = daemon(
        "consent",
        "grant",
        "--to-namespace",
        "projects/music",
        "--namespace",
        "music",
        "--hash-levels",
        "l1,L2",
        "--threads",
        "th_a,th_b*",
        "--purpose",
        "review",
        "--expires",
        "30d",
        "--peer-did",
        BOB_DID,
    ).ok()
    assert granted.out.startswith(f"granted {GRANT_ID} music → projects/music L1")
    assert daemon.requests()[-1] == (
        "POST",
        "/v1/consent/grants",
        {
            "source_namespace": "music",
            "target_namespace": "projects/music",
            "hash_levels": ["L1", "L2"],
            "threads": ["th_a", "th_b*"],
            "purpose": "review",
            "expires": "30d",
            "peer_did": BOB_DID,
        },
    )
    daemon("consent", "grant", "--to-namespace", "team", "--expires", "3600").ok()
    assert daemon.requests()[-1][2] == {
        "source_namespace": "default",
        "target_namespace": "team",
        "hash_levels": ["L1"],
        "expires": 3600.0,
    }
    rows = daemon("consent", "list").ok().out.splitlines()
    assert rows[0].split() == ["GRANT", "FROM", "TO", "LEVELS", "THREADS", "PEER", "STATUS", "EXPIRES", "PURPOSE"]
    assert rows[2].split()[:7] == [GRANT_ID, "music", "projects/music", "L1", "*", BOB_DID, "active"]
    assert daemon("consent", "list", "-o", "json").ok().json()["data"] == [GRANT]
    assert daemon("consent", "revoke", GRANT_ID).ok().out.startswith(f"revoked {GRANT_ID} music → projects/music")
    assert daemon("federation", "revoke-grant", GRANT_ID).ok()
    assert [request[:2] for request in daemon.requests()[-2:]] == [("DELETE", f"/v1/consent/grants/{GRANT_ID}")] * 2

    daemon.fake.seen.clear()
    assert "is not a grant id" in one_error_line(daemon("consent", "revoke", "../tokens"))
    assert "is not a DID" in one_error_line(daemon("consent", "grant", "--to-namespace", "x", "--peer-did", "bob"))
    assert daemon.requests() == []


# -- spl sync ------------------------------------------------------------------------------------------------------


def test_sync_prints_what_moved_each_way(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    assert daemon("sync", PAIR_A[5:11]).ok().out == (
        "← pulled 12 record(s) from bob.example:9100\n"
        f"  refused 1 (SIGNATURE_INVALID 1); see `spl federation show {PAIR_A}`\n"
        "→ peer pulled 3 record(s)\n"
    )
    assert daemon.requests()[-1] == ("POST", f"/v1/federation/pairs/{PAIR_A}/sync", {})
    assert daemon("sync", PAIR_A, "-o", "json").ok().json()["pulled"] == 12


@pytest.mark.parametrize(
    ("peer", "line"),
    [
        ({"asked": True, "pulled": 0, "error": None}, "→ peer pulled 0 record(s)"),
        (
            {"asked": True, "pulled": None, "error": f"HTTP_5XX {HOSTILE}"},
            "→ peer did not pull: HTTP_5XX bob\\x1b]0;pwned",
        ),
        (
            {"asked": True, "error": {"code": "TIMEOUT", "message": "no answer"}},
            "→ peer did not pull: TIMEOUT: no answer",
        ),
        ({"asked": False}, "→ peer not asked"),
        ({"asked": False, "error": "on-demand peer"}, "→ peer not asked (on-demand peer)"),
    ],
)
def test_sync_peer_line(peer: dict[str, Any], line: str) -> None:
    answer = msgspec.convert({"pair_id": PAIR_A, "pulled": 1, "peer": peer}, FederationSync)
    shown = _peer_line(answer)
    assert shown.startswith(line) and shown.isprintable(), shown


# -- spl aitl -------------------------------------------------------------------------------------------------------


def test_aitl_list_approve_and_reject(canned: Callable[..., Canned]) -> None:
    daemon = canned()
    rows = assert_inert(daemon("aitl", "list").ok().out)
    assert rows[0].split() == ["PAIR", "FROM", "URL", "MAPS", "MODE", "REQUESTED"]
    assert rows[2].startswith(f"{PAIR_A}  did:key:bob\\x1b]0;pwned"), rows
    assert "default ↔ default" in rows[2]
    approved = daemon("aitl", "approve", "a1b2").ok().out  # one pending request starts so: unambiguous here
    assert approved.splitlines()[0] == f"approved {PAIR_A} (state active)"
    daemon("aitl", "reject", PAIR_A, "--reason", "unknown instance").ok()
    assert daemon.requests()[-3:] == [
        ("GET", "/v1/aitl", None),  # the prefix, resolved among the requests waiting here
        ("POST", f"/v1/aitl/{PAIR_A}/approve", {}),
        ("POST", f"/v1/aitl/{PAIR_A}/reject", {"reason": "unknown instance"}),  # a full id: no listing
    ]
    assert daemon("aitl", "list", "-o", "json").ok().json()["data"] == [DECISION]


# -- spl status, help ----------------------------------------------------------------------------------------------


def test_status_lists_federation_pairs_after_the_sync_pairs(canned: Callable[..., Canned]) -> None:
    status = {
        "endpoint_url": "http://127.0.0.1:9100",
        "instance_did": "did:key:z6MkAlice",
        "home": "/home/alice/.syncro",
        "sequence": 3,
        "uptime_secs": 5,
        "auth_required": True,
        "federation": {"pairs": []},
    }
    daemon = canned(lambda method, path: (200, status) if path == "/v1/status" else routes(method, path))
    rows = assert_inert(daemon("status").ok().out)
    start = rows.index("Sync pairs (none)")
    assert rows[start + 1].startswith(f"Federation pairs ({len(PAIRS)}: 2 active, 1 revoked, 1 bob\\x1b]0;pwned")
    assert rows[start + 2].startswith("  a1b2c3d4 ⇄ bob.example:9100") and "polling every 5m" in rows[start + 2]
    assert "lag in 138 rec (12s), out 3 rec" in rows[start + 2]
    as_json = daemon("status", "-o", "json").ok().json()
    assert as_json["federation_pairs"] == list(PAIRS.values()) and as_json["instance_did"] == "did:key:z6MkAlice"

    older = canned(lambda method, path: (200, status) if path == "/v1/status" else routes("GET", "/nowhere"))
    assert older("status").ok().out.endswith("Sync pairs (none)\n")  # a daemon without the route: no block
    assert "federation_pairs" not in older("status", "-o", "json").ok().json()


def test_federation_pair_lines_escape_every_peer_field() -> None:
    pairs = [msgspec.convert(pair, FederationPair) for pair in PAIRS.values()]
    lines = federation_pair_lines(pairs)
    assert_inert("\n".join(lines) + "\n")
    assert len(lines) == 1 + len(PAIRS)
    assert federation_pair_lines([]) == []


def test_every_command_has_help_with_an_example(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    commands = [
        ("federation", name)
        for name in (
            "pair",
            "list",
            "show",
            "pause",
            "resume",
            "refresh",
            "revoke",
            "set-mode",
            "set-poll-interval",
            "thread-allow",
            "grant",
            "revoke-grant",
            "soak",
        )
    ]
    commands += [("aitl", "list"), ("aitl", "approve"), ("aitl", "reject"), ("sync",)]
    commands += [("consent", "grant"), ("consent", "list"), ("consent", "revoke")]
    for command in commands:
        shown = run_spl(*command, "--help", env=env).ok().out
        assert "Example" in shown, (command, shown)
    group = run_spl("federation", "--help", env=env).ok().out
    assert "soak" in group and "pair" in group and "thread-allow" in group


def test_a_real_daemon_with_auth_on(secure_cli: Cli) -> None:
    """The same commands against a real daemon (admin credential): empty listings, a grant's round trip."""
    listed = secure_cli("federation", "list")
    if listed.code != 0 and "NOT_FOUND" in listed.err:
        pytest.skip("this daemon has no /v1/federation/pairs yet")
    assert listed.ok().out == "no federation pairs; pair with `spl federation pair URL`\n"
    assert secure_cli("federation", "list", "-o", "json").ok().json()["data"] == []
    assert secure_cli("aitl", "list").ok().out == "no decisions waiting\n"
    assert secure_cli("consent", "list").ok().out.startswith("no consent grants")
    granted = secure_cli("consent", "grant", "--to-namespace", "music", "-o", "json").ok().json()
    assert granted["status"] == "active" and granted["source_namespace"] == "default"
    assert granted["hash_levels"] == ["L1"]
    secure_cli("consent", "revoke", granted["grant_id"]).ok()
    assert [grant["status"] for grant in secure_cli("consent", "list", "-o", "json").ok().json()["data"]] == ["revoked"]
    assert "no federation pair matches 'abcd'" in one_error_line(secure_cli("federation", "show", "abcd"))
    assert "no federation pair matches" in one_error_line(secure_cli("sync", "abcd"))
