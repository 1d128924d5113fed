"""Issue 11, acceptance 1: seed 004 ("From dogfood to ops") steps 1-6, through ``spl`` only, between two daemons.

A is the operator's local instance; B plays the fresh hosted one. Both run with auth on. The operator reaches A
as its own home's CLI (its admin credential) and B the way the seed connects to a hosted instance: a CLI home of
its own, ``SPL_SERVE_URL`` and ``spl token save``. Every step is the seed's command, and what it prints is
checked against the seed's lines; the round trip is the seed's release gate: for every thread,
``spl thread records T | sha256sum`` is equal on both sides, with the same DID, thread ids and grant ids.

One A/B pair serves the module (its tests run in file order, each building on the last): the round trip, a
re-import (a no-op), a passphrase-sealed bundle (a wrong passphrase writes nothing) and, last since it stops A,
``spl export --offline``. No sleeps: nothing here waits on anything but a command's answer.
"""

from __future__ import annotations

import hashlib
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cli_support import Cli, Result, cli_for, one_error_line, run_spl

from spl.core.genesis import GENESIS_THREADS
from spl.daemon.launcher import DaemonProcess
from spl.store.portability import read_bundle_manifest

THREADS = ("th_migrate_plans", "th_migrate_notes", "th_migrate_music")
PASSPHRASE = "a long and private pässwörd"


@dataclass
class Instances:
    """The two daemons and a CLI for each, as the operator runs it."""

    a: DaemonProcess
    b: DaemonProcess
    local: Cli  # A, from A's own home
    hosted: Cli  # B, from a CLI home of its own: SPL_SERVE_URL + a saved token
    folder: Path  # where the bundles go


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instances]:
    root = tmp_path_factory.mktemp("portability-e2e")
    a, b = DaemonProcess(root / "a", insecure=False), DaemonProcess(root / "b", insecure=False)
    try:
        a.start(port=0)
        b.start(port=0)
        laptop = root / "laptop"  # the operator's CLI home for B: no daemon of its own
        environment = {**b.env(), "SYNCROPEL_HOME": str(laptop), "SPL_SERVE_URL": b.url, "COLUMNS": "200"}

        def hosted(*args: str) -> Result:
            return run_spl(*args, env=environment)

        # Seed step 4: connect the CLI to the hosted instance.
        saved = hosted("token", "save", b.admin_token).ok()
        assert saved.out.startswith(f"saved the token to {laptop / 'token'} (mode 0600)")
        yield Instances(a, b, cli_for(a), hosted, root / "bundles")
    finally:
        a.kill()
        b.kill()


@pytest.fixture(scope="module")
def populated(pair: Instances) -> dict[str, Any]:
    """A with some real-feeling state: four threads, a namespace, a consent grant. What step 1 notes."""
    local = pair.local
    for number, thread in enumerate(THREADS):
        local("intend", "--thread", thread, f"goal {number}").ok()
    local("know", "--thread", THREADS[0], "a finding").ok()
    local("namespace", "create", "team", "--description", "the team's records").ok()
    local("know", "--thread", "th_migrate_team", "in team", "--namespace", "team").ok()
    local("consent", "grant", "--to-namespace", "team", "--hash-levels", "L0,L1", "--purpose", "backup").ok()
    status = local("status", "-o", "json").ok().json()
    threads = [item["id"] for item in local("thread", "list", "-o", "json").ok().json()["data"]]
    assert set(THREADS) <= set(threads)
    pair.folder.mkdir()
    return {"did": status["instance_did"], "threads": threads}


def members(path: Path) -> list[str]:
    """``tar -tzf``, in python: the member names of a tar.zst bundle, in archive order."""
    with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain:
        with tarfile.open(fileobj=plain, mode="r|") as archive:
            return [member.name for member in archive]


def digest(result: Result) -> str:
    """``| sha256sum`` of a command's output."""
    return hashlib.sha256(result.ok().out.encode("utf-8")).hexdigest()


def export_lines(path: str, counts: dict[str, int], identity: str) -> str:
    """Seed 004, step 2, exactly (its spacing included)."""
    return (
        f"✓ Bundle written to {path}\n"
        f"  records:       {counts['records']}\n"
        f"  threads:       {counts['threads']}\n"
        f"  federation pairs: {counts['federation_pairs']}\n"
        f"  consent grants:   {counts['consent_grants']}\n"
        f"  identity:      {identity}\n"
        "  signed:        yes\n"
    )


def import_lines(did: str, inserted: int, deduplicated: int, threads: int, identity: str) -> str:
    """Seed 004, step 5, exactly."""
    return (
        "✓ Bundle verified\n"
        "  signature:     valid\n"
        f"  source DID:    {did}\n"
        "\n"
        "→ Importing...\n"
        f"  records inserted:    {inserted}\n"
        f"  records deduplicated: {deduplicated}\n"
        f"  threads:             {threads}\n"
        "  federation pairs:    0\n"
        f"  identity:            {identity}\n"
        "\n"
        "✓ Import complete\n"
    )


def same_threads(pair: Instances, threads: list[str], *, hosted_genesis_of: str | None = None) -> None:
    """Seed step 6's strict check: every thread's records hash the same on both sides.

    ``hosted_genesis_of``: the hosted side's DID before the import. Its ``spl init`` wrote genesis records on the
    reserved threads, which stay beside the imported log (one line each, naming that DID): they are left out.
    """
    for thread in threads:
        hosted = pair.hosted("thread", "records", thread).ok()
        if hosted_genesis_of is not None and thread in GENESIS_THREADS:
            kept = [line for line in hosted.out.splitlines(keepends=True) if hosted_genesis_of not in line]
            assert len(kept) == len(hosted.out.splitlines()) - 1, thread  # exactly its one genesis record
            hosted = Result(hosted.code, "".join(kept), hosted.err)
        assert digest(pair.local("thread", "records", thread)) == digest(hosted), thread


def test_seed_004_steps_1_to_6(pair: Instances, populated: dict[str, Any]) -> None:
    did = populated["did"]
    fresh = pair.hosted("status", "-o", "json").ok().json()
    assert fresh["instance_did"] != did  # B starts as a different instance

    # Step 2: export (text), the seed's lines; the key is plain, so the file is 0600 and a warning says so.
    bundle = pair.folder / "migration.tar.zst"
    written = pair.local("export", "--out", str(bundle)).ok()
    manifest = read_bundle_manifest(bundle)
    counts = manifest["counts"]
    assert counts["records"] >= len(THREADS) + 2 and counts["consent_grants"] == 1
    assert counts["threads"] == len(populated["threads"]) and counts["federation_pairs"] == 0
    assert written.out == export_lines(str(bundle), counts, f"included ({did})")
    assert "private key unencrypted" in written.err and "--passphrase-file" in written.err
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert sorted(path.name for path in pair.folder.iterdir()) == ["migration.tar.zst"]
    exported = pair.local("export", "--out", str(pair.folder / "again.tar.zst"), "-o", "json").ok().json()
    assert exported["object"] == "export_summary" and exported["source_did"] == did
    assert exported["counts"] == counts and exported["signed"] is True and exported["identity_included"] is True

    # Step 2, "tar -tzf ~/migration.tar.zst": the bundle's members; the signed manifest comes last.
    names = members(bundle)
    assert names[-2:] == ["manifest.json", "manifest.sig"]
    assert {"identity/did_document.json", "identity/private_key.bin", "consent/grants.jsonl"} <= set(names)
    assert "tokens.jsonl" not in names  # no bearer tokens without --carry-tokens
    assert sum(name.startswith("records/") for name in names) == counts["records"]

    # Step 5: import into the fresh hosted instance, the seed's lines; a dry run first writes nothing.
    dry = pair.hosted("import", str(bundle), "--dry-run", "-o", "json").ok().json()
    assert dry["dry_run"] is True and dry["records_inserted"] == counts["records"]
    assert dry["instance_did"] == fresh["instance_did"]  # nothing adopted either
    imported = pair.hosted("import", str(bundle)).ok()
    identity = "adopted (private key matches incoming bundle)"
    assert imported.out == import_lines(did, counts["records"], 0, counts["threads"], identity), imported.out

    # Step 6: the same DID, threads, grants and namespaces; every thread's records hash the same.
    assert re.search(rf"^  did:       {re.escape(did)}$", pair.hosted("status").ok().out, re.M)
    hosted_threads = [item["id"] for item in pair.hosted("thread", "list", "-o", "json").ok().json()["data"]]
    assert sorted(hosted_threads) == sorted(populated["threads"])
    same_threads(pair, populated["threads"], hosted_genesis_of=fresh["instance_did"])
    for listing in (("federation", "list"), ("actor", "list"), ("consent", "list"), ("namespace", "list")):
        assert pair.local(*listing, "-o", "json").ok().json() == pair.hosted(*listing, "-o", "json").ok().json()
    populated["bundle"], populated["counts"] = bundle, counts


def test_re_import_is_a_no_op(pair: Instances, populated: dict[str, Any]) -> None:
    bundle, counts = populated["bundle"], populated["counts"]
    # Records an import brought are not the store's own: running the migration again needs no flag.
    text = pair.hosted("import", str(bundle)).ok().out
    assert "  records inserted:    0\n" in text and f"  records deduplicated: {counts['records']}\n" in text

    # Once the hosted instance holds a record of its own, an import must be forced (seed, "Troubleshooting").
    pair.hosted("know", "--thread", "th_hosted_own", "written on the hosted side").ok()
    refused = one_error_line(pair.hosted("import", str(bundle)))
    assert refused.startswith("error: IMPORT_REFUSED: import refused: local store has 1 records")
    assert "pass --force-overwrite to import anyway" in refused
    again = pair.hosted("import", str(bundle), "--force-overwrite", "-o", "json").ok().json()
    assert (again["records_inserted"], again["records_deduplicated"]) == (0, counts["records"])


def test_a_sealed_bundle_needs_its_passphrase(pair: Instances, populated: dict[str, Any]) -> None:
    secret, wrong = pair.folder / "passphrase", pair.folder / "wrong"
    secret.write_text(PASSPHRASE + "\n")
    wrong.write_text("not the passphrase\n")
    late = pair.local("know", "--thread", THREADS[0], "written after the migration", "-o", "json").ok().json()["id"]
    sealed = pair.folder / "sealed.tar.zst"
    written = pair.local("export", "--out", str(sealed), "--passphrase-file", str(secret)).ok()
    assert "  identity:      included, sealed with your passphrase\n" in written.out and written.err == ""

    for given in ((), ("--passphrase-file", str(wrong))):
        refused = one_error_line(pair.hosted("import", str(sealed), "--force-overwrite", *given))
        assert "signature verification failed" in refused and PASSPHRASE not in refused
    assert late not in pair.hosted("thread", "records", THREADS[0]).ok().out  # nothing written

    opened = pair.hosted("import", str(sealed), "--force-overwrite", "--passphrase-file", str(secret), "-o", "json")
    summary = opened.ok().json()
    assert summary["records_inserted"] == 1 and summary["instance_did"] == populated["did"]
    same_threads(pair, [THREADS[0]])
    assert PASSPHRASE not in opened.out + opened.err + written.out + written.err


def test_offline_export(pair: Instances, populated: dict[str, Any]) -> None:
    bundle = pair.folder / "offline.tar"
    refused = one_error_line(pair.local("export", "--offline", "--out", str(bundle)))
    assert "an spl daemon already runs for" in refused and "without --offline" in refused
    online = read_bundle_manifest(pair.folder / "sealed.tar.zst")
    pair.a.stop()
    offline = run_spl("export", "--offline", "--uncompressed", "--out", str(bundle), "-o", "json", env=pair.a.env())
    summary = offline.ok().json()
    assert summary["source_did"] == populated["did"] and summary["counts"] == online["counts"]
    carried = read_bundle_manifest(bundle)["files"]
    for name in ("config.json", "identity/did_document.json", "namespaces.jsonl"):
        assert carried[name] == online["files"][name], name  # offline carries what the daemon's route does
    with tarfile.open(bundle, mode="r:") as archive:  # --uncompressed: a plain tar
        assert archive.getnames()[-2:] == ["manifest.json", "manifest.sig"]
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    with bundle.open("rb") as file:
        assert file.read(4) != b"\x28\xb5\x2f\xfd"  # not a zstd frame
