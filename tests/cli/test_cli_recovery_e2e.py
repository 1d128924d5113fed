"""Issue 11, acceptance 4: seed 001's "Whole-pair recovery procedure" as written, through ``spl`` only.

Two real daemons with auth on (alice pairs, bob answers at once). The planted difference is the seed's
first step itself: alice pauses the pair, bob's end still says active. Then, as the seed writes it::

    spl federation pause <pair_id>
    spl thread snapshot th_federation_pairs > /tmp/local-pairs.snap.jsonl
    ssh bob 'spl thread snapshot th_federation_pairs > /tmp/bob-pairs.snap.jsonl'
    spl debug thread-diff <local-pair-record-id> <bob-pair-record-id>
    spl federation revoke <pair_id>
    spl federation pair https://bob.example/

Snapshots go to the test's directory rather than /tmp (other tests run alongside), named with ``--snapshot``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cli_support import Cli, Result, cli_for

PAIRED = re.compile(r"recorded on th_federation_pairs \(pair_id: (pair_[0-9a-f]{16})\)")


def start(daemon_factory: Any, name: str) -> tuple[Cli, str]:
    """A daemon with auth on that answers pair requests at once; ``spl`` bound to it, and its URL."""
    process = daemon_factory(name, insecure=False)
    on = cli_for(process)
    on("config", "set", "federation.pair_approval", "auto").ok()
    process.start(port=0)
    return on, str(process.url)


def pair_with(alice: Cli, url: str) -> str:
    created = alice("federation", "pair", f"{url}/").ok()
    found = PAIRED.search(created.out)
    assert found is not None and created.out.endswith("Pair active.\n"), created.out
    return found[1]


def pair_record_id(snapshot: Path, pair_id: str) -> str:
    """The id of the last record of ``pair_id`` in a snapshot (what an operator copies from the file)."""
    lines = [json.loads(line) for line in snapshot.read_text(encoding="utf-8").splitlines()[:-1]]
    return str([record for record in lines if record["body"].get("pair_id") == pair_id][-1]["id"])


def diff_lines(result: Result) -> list[str]:
    return result.out.splitlines()


def test_seed_001_whole_pair_recovery(daemon_factory: Any, tmp_path: Path) -> None:
    alice, _ = start(daemon_factory, "alice")
    bob, bob_url = start(daemon_factory, "bob")
    pair = pair_with(alice, bob_url)

    # 1. Pause to stop further drift: on alice's side only, so bob's end still says active (the difference).
    assert alice("federation", "pause", pair).ok().out.startswith(f"paused {pair}")

    # 2. Snapshot both sides for forensics.
    local = tmp_path / "local-pairs.snap.jsonl"
    alice("thread", "snapshot", "th_federation_pairs", "--out", str(local)).ok()
    remote = tmp_path / "bob-pairs.snap.jsonl"
    remote.write_text(bob("thread", "snapshot", "th_federation_pairs").ok().out, encoding="utf-8")

    # 3. Compare the records: alice's side is read from her daemon, bob's record is found in his snapshot.
    local_id, bob_id = pair_record_id(local, pair), pair_record_id(remote, pair)
    compared = alice("debug", "thread-diff", local_id, bob_id, "--snapshot", str(remote))
    assert compared.code == 1, compared.out + compared.err
    lines = diff_lines(compared)
    assert lines[0].startswith("A: thread th_federation_pairs on http://") and local_id in lines[0]
    assert lines[1] == f"B: thread th_federation_pairs in snapshot {remote} (holds record {bob_id})"
    assert f"  {pair}: state paused (A) vs active (B)" in lines
    assert lines[-1] == "differ"
    as_json = alice("debug", "thread-diff", local_id, bob_id, "--snapshot", str(remote), "-o", "json")
    assert as_json.code == 1 and as_json.json()["differs"] is True
    pair_fields = [d for d in as_json.json()["fold_differences"] if d["scope"] == pair]
    assert pair_fields == [{"scope": pair, "field": "state", "a": "paused", "b": "active"}]

    # The local snapshot against the local daemon: the same records, the same fold; exit 0.
    same = alice("debug", "thread-diff", str(local), "th_federation_pairs")
    assert same.code == 0 and diff_lines(same)[-1] == "same", same.out + same.err
    unknown = alice("debug", "thread-diff", "f" * 64, str(local), "--snapshot", str(remote))
    assert unknown.code == 2 and f"record {'f' * 64} was found nowhere; tried the local daemon" in unknown.err
    assert f"{remote} (not in it)" in unknown.err

    # 4. The divergence is irreparable: revoke + re-pair gives a clean, active pair.
    assert alice("federation", "revoke", pair).ok().out.startswith(f"revoked {pair}")
    again = pair_with(alice, bob_url)
    assert again != pair
    states = {item["pair_id"]: item["state"] for item in alice("federation", "list", "-o", "json").ok().json()["data"]}
    assert states == {pair: "revoked", again: "active"}
