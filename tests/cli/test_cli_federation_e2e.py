"""Issue 10, acceptance 1: seed 001's "Create a pair" and every lifecycle command, through ``spl`` only.

Three real daemons with auth on (``daemon_factory``, loopback, port 0): alice pairs; bob answers pair
requests at once (``federation.pair_approval = auto``, set with ``spl config set`` before he starts);
carol holds them for her operator (``manual``, the default). Every step is an ``spl`` command run as a
user runs it, in text and in ``-o json``; what it prints is checked against the seed and the contract
(docs/federation-pairs.md). No token a pair holds ever shows: every output of every command is checked
against the plaintexts in ``secrets/pairs/``. No sleeps: a wait polls a command until its answer holds.
"""

from __future__ import annotations

import json
import re
import stat
import time
from collections.abc import Callable
from typing import Any

from cli_support import Cli, Result, cli_for, one_error_line

PAIR_ID = r"pair_[0-9a-f]{16}"
DEADLINE = 20.0
SHARED = "th_shared"


class Recorded:
    """``spl`` against one daemon, keeping every output so the test can prove no token ever showed."""

    def __init__(self, daemon: Any, outputs: list[str]) -> None:
        self.daemon = daemon
        self._cli: Cli = cli_for(daemon)
        self._outputs = outputs

    def __call__(self, *args: str) -> Result:
        result = self._cli(*args)
        self._outputs.append(result.out + result.err)
        return result

    def json(self, *args: str) -> Any:
        return self(*args, "-o", "json").ok().json()


def start(daemon_factory: Any, name: str, approval: str, outputs: list[str]) -> Recorded:
    """A daemon with auth on and ``federation.pair_approval`` set the seed's way (before it starts)."""
    process = daemon_factory(name, insecure=False)
    on = Recorded(process, outputs)
    changed = on("config", "set", "federation.pair_approval", approval).ok()
    assert f"federation.pair_approval = {approval}" in changed.out
    process.start(port=0)
    return on


def until(run: Callable[[], Result], done: Callable[[Result], bool], what: str) -> Result:
    """Run ``run`` until ``done`` holds for its result (each run is a subprocess with its own timeout)."""
    deadline = time.monotonic() + DEADLINE
    result = run()
    while not done(result):
        assert time.monotonic() < deadline, f"{what} not reached in {DEADLINE:.0f}s\n{result.out}\n{result.err}"
        result = run()
    return result


def seed_lines(did: str, url: str) -> str:
    """Seed 001, "Create a pair", as a regex: only the pair id and the record count vary."""
    lines = [
        f"Pairing with {did} ({url}) ...",
        "  ✓ manifest fetched + signature verified",
        "  ✓ POST /v1/federation/pair → 200 OK",
        "  ✓ peer token persisted (federation:subscribe, federation:sync)",
        "  ✓ recorded on th_federation_pairs (pair_id: PAIR)",
        "  ✓ initial sync cursor advanced (COUNT records)",
        "",
        "Pair active.",
        "",
    ]
    pattern = re.escape("\n".join(lines))
    return pattern.replace("PAIR", f"(?P<pair>{PAIR_ID})").replace("COUNT", r"(?P<count>\d+)")


def pair_token(on: Recorded, pair_id: str) -> str:
    """The peer's token for a pair, as this side stores it: 0600, outside the record log."""
    path = on.daemon.home.root / "secrets" / "pairs" / f"{pair_id}.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text(encoding="utf-8").strip()


def record_ids(result: Result) -> set[str]:
    return {line.split()[0] for line in result.ok().out.splitlines()}


def intend(on: Recorded, thread: str, goal: str) -> str:
    return str(on.json("intend", "--thread", thread, goal)["id"])


def test_seed_001_pair_and_every_lifecycle_command(daemon_factory: Any) -> None:
    outputs: list[str] = []
    alice = start(daemon_factory, "alice", "auto", outputs)
    bob = start(daemon_factory, "bob", "auto", outputs)
    bob_did = bob.json("status")["instance_did"]
    bob_url = bob.daemon.url
    before = {intend(bob, SHARED, f"bob {n}") for n in range(3)}

    # Create a pair: the seed's lines exactly, then the pair on both sides, its tokens 0600 outside the log.
    created = alice("federation", "pair", f"{bob_url}/").ok()
    seeded = re.fullmatch(seed_lines(bob_did, bob_url), created.out)
    assert seeded is not None, created.out
    pair, short = seeded["pair"], seeded["pair"][5:13]
    assert int(seeded["count"]) == 3
    assert record_ids(alice("thread", "records", SHARED)) == before
    tokens = [pair_token(on, pair) for on in (alice, bob)]
    assert all(len(token) >= 20 for token in tokens) and tokens[0] != tokens[1]

    # list / show, text and JSON, on both sides: the same pair id, each side's role; token ids only.
    listed = alice("federation", "list").ok().out.splitlines()
    assert listed[0].split() == ["PAIR", "PEER", "STATE", "MODE", "LAST", "SYNC"]
    assert re.match(rf"^{pair}  +127\.0\.0\.1:{bob.daemon.port}  +active  +polling every 5m  +\S+Z \(", listed[2])
    (on_alice,) = alice.json("federation", "list")["data"]
    (on_bob,) = bob.json("federation", "list")["data"]
    assert (on_alice["pair_id"], on_alice["role"], on_alice["state"]) == (pair, "initiator", "active")
    assert (on_bob["pair_id"], on_bob["role"], on_bob["state"]) == (pair, "responder", "active")
    assert on_alice["peer_did"] == bob_did and on_bob["peer_did"] == alice.json("status")["instance_did"]
    shown = alice.json("federation", "show", short)
    assert shown["tokens"]["ours"]["scopes"] == ["federation:subscribe", "federation:sync"]
    assert shown["tokens"]["theirs"]["present"] is True and shown["peer_manifest"]["daemon"]["did"] == bob_did
    text = alice("federation", "show", pair).ok().out
    assert text.startswith(f"pair {pair}\n")
    for row in (
        f"peer_did:         {bob_did}",
        "role:             initiator",
        "mode:             polling every 5m",
        "maps:             default ↔ default",
        f"token_ours:       {shown['tokens']['ours']['token_id']} (federation:subscribe, federation:sync; expires ",
        "token_theirs:     stored, never shown (federation:subscribe, federation:sync; expires ",
        "Grants (0)",
    ):
        assert row in text, text
    assert "role:             responder" in bob("federation", "show", short).ok().out

    # pause / resume, each way of printing: tokens stay, the cursor is kept.
    assert alice("federation", "pause", short).ok().out.startswith(f"paused {pair} (state paused")
    resumed = alice.json("federation", "resume", pair)
    assert resumed["state"] == "active" and resumed["cursors"]["pull"] == shown["cursors"]["pull"]
    assert alice.json("federation", "pause", pair)["state"] == "paused"
    assert alice("federation", "resume", short).ok().out.startswith(f"resumed {pair} (state active")

    # set-poll-interval on the polling pair; set-mode; the interval refused once the pair no longer polls.
    assert alice("federation", "set-poll-interval", short, "30s").ok().out == f"{pair}: polling every 30s\n"
    assert alice.json("federation", "set-poll-interval", short, "2m")["poll_interval"] == 120.0
    assert alice("federation", "set-mode", short, "continuous").ok().out == f"{pair}: continuous\n"
    assert alice.json("federation", "show", pair)["mode"] == "continuous"
    refused = one_error_line(alice("federation", "set-poll-interval", short, "30s"))
    assert f"run `spl federation set-mode {pair} polling` first" in refused
    assert alice.json("federation", "set-mode", short, "on-demand")["mode"] == "on-demand"

    # thread-allow narrows what alice serves; refresh re-verifies bob's manifest.
    assert alice("federation", "thread-allow", short, f"{SHARED}*").ok().out == f"{pair}: threads {SHARED}*\n"
    assert alice.json("federation", "show", short)["thread_allow"] == [f"{SHARED}*"]
    assert alice("federation", "refresh", short).ok().out.startswith(f"refreshed {pair}: active")
    refreshed = alice.json("federation", "refresh", pair)
    assert refreshed["state"] == "active" and refreshed["peer_manifest"]["daemon"]["did"] == bob_did

    # spl sync: records emitted on both sides move both ways, and the thread outside the allow-list stays home.
    from_alice = intend(alice, SHARED, "from alice")
    private = intend(alice, "th_private", "alice only")
    from_bob = intend(bob, SHARED, "from bob")
    synced = alice("sync", short).ok().out
    assert synced == f"← pulled 1 record(s) from 127.0.0.1:{bob.daemon.port}\n→ peer pulled 1 record(s)\n"
    assert record_ids(alice("thread", "records", SHARED)) == before | {from_alice, from_bob}
    assert alice("thread", "records", SHARED).out == bob("thread", "records", SHARED).out
    assert private not in bob("thread", "records", "th_private").ok().out
    again = alice.json("sync", pair)
    assert again == {
        "object": "federation_sync",
        "pair_id": pair,
        "pulled": 0,
        "refused": {},
        "peer": {"asked": True, "pulled": 0, "error": None},
    }
    assert alice.json("federation", "thread-allow", short, "--reset")["thread_allow"] == ["*"]

    # grant / revoke-grant: a consent grant for bob only, and the map added to the pair with him.
    granted = alice("federation", "grant", bob_did, "--namespace", "default", "--maps", "default,music").ok()
    grant_id, pair_line = granted.out.splitlines()
    assert re.fullmatch(rf"granted cg_[0-9a-f]{{16}} default → music L1 threads \* peer {bob_did} \(active\)", grant_id)
    assert pair_line == f"{pair}: maps default ↔ default, default ↔ music"
    grant = grant_id.split()[1]
    show_text = alice("federation", "show", short).ok().out
    assert "Grants (1)" in show_text and f"  {grant} default → music L1" in show_text
    revoked_grant = alice.json("federation", "revoke-grant", grant)
    assert revoked_grant["grant_id"] == grant and revoked_grant["status"] == "revoked"
    as_json = alice.json("federation", "grant", bob_did, "--maps", "default,music", "--hash-level", "L2")
    assert as_json["grant"]["hash_levels"] == ["L2"] and as_json["pairs"] == []  # the map is there already

    # spl consent grant / list / revoke.
    consent = alice("consent", "grant", "--to-namespace", "team", "--hash-levels", "L0,L1", "--expires", "30d").ok()
    assert re.fullmatch(
        r"granted (cg_[0-9a-f]{16}) default → team L0,L1 threads \* \(active, expires \S+Z\)\n", consent.out
    )
    team = consent.out.split()[1]
    made = alice.json("consent", "grant", "--to-namespace", "archive", "--purpose", "backup", "--threads", "th_a*")
    assert made["threads"] == ["th_a*"] and made["purpose"] == "backup" and made["hash_levels"] == ["L1"]
    table = alice("consent", "list").ok().out.splitlines()
    assert table[0].split()[:3] == ["GRANT", "FROM", "TO"] and len(table) == 2 + 4
    assert alice("consent", "revoke", team).ok().out.startswith(f"revoked {team} default → team L0,L1")
    statuses = {item["grant_id"]: item["status"] for item in alice.json("consent", "list")["data"]}
    assert statuses == {
        grant: "revoked",
        as_json["grant"]["grant_id"]: "active",
        team: "revoked",
        made["grant_id"]: "active",
    }

    # spl status lists the pair, in text and JSON.
    status = alice("status").ok().out
    assert "\nFederation pairs (1: 1 active)\n" in status
    assert re.search(rf"^  {short} ⇄ 127\.0\.0\.1:{bob.daemon.port} active on-demand, lag in \d+ rec", status, re.M)
    assert [item["pair_id"] for item in alice.json("status")["federation_pairs"]] == [pair]

    # revoke: terminal here, and bob (notified) shows it revoked too; neither side syncs any more.
    gone = alice("federation", "revoke", short, "--reason", "laptop retired").ok().out
    assert gone.startswith(f"revoked {pair} (state revoked (revoked by operator: laptop retired))")
    peer_side = until(
        lambda: bob("federation", "show", pair, "-o", "json"),
        lambda r: r.code == 0 and r.json()["state"] == "revoked",
        "bob seeing the revocation",
    ).json()
    assert "laptop retired" in peer_side["state_reason"]
    bob_show = bob("federation", "show", short).ok().out
    assert "state:            revoked (revoked by the peer" in bob_show and "revoked with the pair" in bob_show
    assert "pull:             - (revoked: nothing is pulled)" in bob_show
    assert "PAIR_NOT_ACTIVE" in one_error_line(alice("sync", short))
    assert "PAIR_NOT_ACTIVE" in one_error_line(bob("sync", short))
    assert re.search(rf"^  {short} ⇄ \S+ revoked ", bob("status").ok().out, re.M)
    assert alice.json("federation", "show", pair)["state"] == "revoked"

    # Acceptance 3: no token plaintext in anything any command printed.
    printed = "\n".join(outputs)
    assert [token for token in tokens if token in printed] == []


def test_manual_approval_through_aitl_approve_and_reject(daemon_factory: Any) -> None:
    outputs: list[str] = []
    alice = start(daemon_factory, "alice", "auto", outputs)
    bob = start(daemon_factory, "bob", "auto", outputs)
    carol = start(daemon_factory, "carol", "manual", outputs)
    carol_did = carol.json("status")["instance_did"]
    alice_did = alice.json("status")["instance_did"]
    carol_url = carol.daemon.url
    held = intend(carol, SHARED, "carol's")

    # --wait 0: the request is held for carol's operator; the pair is establishing on both sides.
    asked = alice("federation", "pair", carol_url, "--wait", "0").ok()
    found = re.search(rf"spl aitl approve ({PAIR_ID}) on the peer", asked.out)
    assert found is not None, asked.out
    approved_id = found[1]
    assert asked.out == (
        f"Pairing with {carol_did} ({carol_url}) ...\n"
        "  ✓ manifest fetched + signature verified\n"
        "  ✓ POST /v1/federation/pair → 202 Accepted\n"
        "  … waiting for the peer's operator to approve (spl aitl approve)\n"
        "\n"
        f"Pair establishing: waiting for the peer's operator to approve (spl aitl approve {approved_id} on the "
        f"peer); finish with: spl federation refresh {approved_id}\n"
    )
    from_bob = bob.json("federation", "pair", carol_url, "--wait", "0")
    assert from_bob["state"] == "establishing" and from_bob["role"] == "initiator"
    rejected_id = from_bob["pair_id"]
    assert "--wait '61s' is out of range" in one_error_line(alice("federation", "pair", carol_url, "--wait", "61s"))

    # spl aitl list: both requests, in text and JSON.
    pending = carol.json("aitl", "list")["data"]
    assert {(item["pair_id"], item["initiator_url"]) for item in pending} == {
        (approved_id, alice.daemon.url),
        (rejected_id, bob.daemon.url),
    }
    assert {item["initiator_did"] for item in pending} == {alice_did, bob.json("status")["instance_did"]}
    listed = carol("aitl", "list").ok()
    assert listed.out.splitlines()[0].split() == ["PAIR", "FROM", "URL", "MAPS", "MODE", "REQUESTED"]
    assert re.search(
        rf"^{approved_id}  +{alice_did}  +{alice.daemon.url}  +default ↔ default  +polling ", listed.out, re.M
    )
    assert "spl aitl approve PAIR" in listed.err

    # approve (by a prefix) → alice's refresh completes the pair, and carol's record arrives.
    approved = carol("aitl", "approve", approved_id[5:13]).ok().out
    assert approved.startswith(f"approved {approved_id} (state active)\n")
    assert alice("federation", "refresh", approved_id).ok().out == (
        f"refreshed {approved_id}: active (handshake complete)\n  establishing → active\n"
    )
    until(
        lambda: alice("thread", "records", SHARED), lambda r: r.code == 0 and held in r.out, "carol's record on alice"
    )
    assert alice.json("federation", "show", approved_id)["tokens"]["theirs"]["present"] is True
    tokens = [pair_token(on, approved_id) for on in (alice, carol)]

    # reject (JSON) → bob's refresh is told, and his side ends revoked.
    rejection = carol.json("aitl", "reject", rejected_id, "--reason", "unknown instance")
    assert rejection["state"] == "revoked" and "unknown instance" in rejection["state_reason"]
    assert carol("aitl", "list").ok().out == "no decisions waiting\n"
    assert carol.json("aitl", "list")["data"] == []
    assert "PAIR_REJECTED" in one_error_line(bob("federation", "refresh", rejected_id))
    assert bob.json("federation", "show", rejected_id)["state"] == "revoked"

    # revoke -o json on the approved pair: carol sees it revoked.
    assert alice.json("federation", "revoke", approved_id)["state"] == "revoked"
    until(
        lambda: carol("federation", "show", approved_id, "-o", "json"),
        lambda r: r.code == 0 and r.json()["state"] == "revoked",
        "carol seeing the revocation",
    )
    printed = "\n".join(outputs)
    assert [token for token in tokens if token in printed] == []


def test_a_continuous_pair_streams_without_protocol_errors(daemon_factory: Any) -> None:
    """Regression: the namespace feed's SSE body once called services() outside the app context, so every
    continuous pull ended at once (PARSE_ERROR) and records arrived only through the puller's retries."""
    outputs: list[str] = []
    alice = start(daemon_factory, "alice", "auto", outputs)
    bob = start(daemon_factory, "bob", "auto", outputs)
    pair = alice.json("federation", "pair", bob.daemon.url, "--mode", "continuous")["pair_id"]
    record = intend(bob, SHARED, "streamed")
    until(lambda: alice("thread", "records", SHARED), lambda r: r.code == 0 and record in r.out, "the record streamed")
    pull = alice.json("federation", "show", pair)["pull"]
    assert pull["errors_total"] == 0, json.dumps(pull["last_error"])
