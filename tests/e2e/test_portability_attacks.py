"""An attacker's pass over issue 11's surfaces: export/import, snapshots/restore, ``GET /v1/actors``, the moved notice.

Who attacks: a stranger with no token, a caller holding a ``records:read`` token, an admin who was handed a hostile
bundle or snapshot, a client that never finishes its upload. Each test pins what the daemon must do. A test marked
The first pass found three holes (a stranger's bundle carrying an admin token in, zeros after the archive's end
stalling the writer, reserved threads readable by a reader token through /v1/records); their tests now guard the
fixes.

Two real daemons (``spl serve`` on loopback, auth on) for the whole module: ``victim`` only ever imports (so it
keeps no records of its own and every import is allowed), ``source`` holds records and answers the rest. The
hostile bundles are built here, the way a stranger would: a key pair of its own, a signed manifest, a valid digest
chain. Every wait polls a condition against a deadline; nothing sleeps to let something happen.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import zstandard
from fed_support import wait_until
from pair_nodes import JSON

from spl.core.bundle import (
    CONFIG,
    DID_DOCUMENT,
    MANIFEST,
    MANIFEST_SIG,
    TOKENS,
    build_manifest,
    did_document,
    manifest_bytes,
    new_digest,
    record_path,
    sign_manifest,
)
from spl.core.canonical import canonical_json
from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.portability import token_line
from spl.core.record import validate_envelope
from spl.core.tokens import TokenInfo
from spl.daemon.launcher import DaemonProcess
from spl.store.bundle_stream import write_tar_zst

ZSTD = {"content-type": "application/zstd"}
NDJSON = {"content-type": "application/x-ndjson"}


@dataclass
class Daemons:
    victim: DaemonProcess
    source: DaemonProcess
    admin_v: dict[str, str]
    admin_s: dict[str, str]
    reader_s: dict[str, str]  # a records:read token of source

    @property
    def v(self) -> str:
        return self.victim.url

    @property
    def s(self) -> str:
        return self.source.url


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    root = tmp_path_factory.mktemp("portability-attacks")
    victim, source = DaemonProcess(root / "victim", insecure=False), DaemonProcess(root / "source", insecure=False)
    try:
        victim.start(port=0)
        source.start(port=0)
        admin_v = {"authorization": f"Bearer {victim.admin_token}", **JSON}
        admin_s = {"authorization": f"Bearer {source.admin_token}", **JSON}
        with httpx.Client(timeout=30) as http:
            minted = http.post(
                f"{source.url}/v1/tokens",
                json={"label": "reader", "scopes": ["records:read"], "env": "test"},
                headers=admin_s,
            )
            assert minted.status_code == 201, minted.text
            for clock in (1, 2, 3):
                record = {"act": "PUT", "actor": "did:test:attacks", "thread": "th_attacks", "clock": clock}
                assert http.post(f"{source.url}/v1/records", json=record, headers=admin_s).status_code == 201
            made = http.post(f"{source.url}/v1/namespaces", json={"id": "team"}, headers=admin_s)
            assert made.status_code in (200, 201), made.text
        reader = {"authorization": f"Bearer {minted.json()['token']}", **JSON}
        yield Daemons(victim, source, admin_v, admin_s, reader)
    finally:
        victim.kill()
        source.kill()


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60)


# -- a stranger's bundles ---------------------------------------------------------------------------------------


def stored_record(signer: Identity, **fields: Any) -> dict[str, Any]:
    """A record as a store holds it (and a bundle carries it): its envelope, then the accepting instance's signature."""
    envelope = validate_envelope(fields)
    return {**envelope.fields(), "id": envelope.id, "signer": signer.did, "sig": signer.sign_record_id(envelope.id)}


def forged_bundle(
    attacker: Identity,
    *,
    records: tuple[dict[str, Any], ...] = (),
    tokens: tuple[TokenInfo, ...] = (),
    trailing_zeros: int = 0,
) -> bytes:
    """A --no-identity bundle signed by ``attacker``: valid in every check an importer makes.

    ``trailing_zeros``: that many zero bytes after the tar's end, inside the zstd frame (about 32 KiB of upload
    per GiB): no digest covers them.
    """
    named = {CONFIG: canonical_json({}), DID_DOCUMENT: canonical_json(did_document(attacker))}
    if tokens:
        named[TOKENS] = b"".join(token_line(info) for info in tokens)
    entries = sorted(named.items())
    entries += [(record_path(r["thread"], r["id"]), json.dumps(r, separators=(",", ":")).encode()) for r in records]
    digest = new_digest()
    for path, data in entries:
        digest.add(path, hashlib.sha256(data).hexdigest())
    manifest = build_manifest(
        source_did=attacker.did,
        created_at="2026-11-30T00:00:00Z",
        counts={"threads": len({r["thread"] for r in records})},
        digest=digest,
        identity_sealed=False,
        carries_tokens=bool(tokens),
    )
    entries += [(MANIFEST, manifest_bytes(manifest)), (MANIFEST_SIG, sign_manifest(attacker, manifest).encode())]
    if not trailing_zeros:
        out = io.BytesIO()
        write_tar_zst(out, entries)
        return out.getvalue()
    tar = io.BytesIO()
    write_tar_zst(tar, entries, compress=False)
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19, write_checksum=True).stream_writer(out, closefd=False) as frame:
        frame.write(tar.getvalue())
        for _ in range(0, trailing_zeros, 16 * 1024 * 1024):
            frame.write(bytes(16 * 1024 * 1024))
    return out.getvalue()


async def import_into(
    http: httpx.AsyncClient, d: Daemons, blob: Any, headers: dict[str, str | bytes] | None = None
) -> httpx.Response:
    return await http.post(
        f"{d.v}/v1/portability/import", content=blob, headers={**d.admin_v, **ZSTD, **(headers or {})}
    )


def spools(d: Daemons) -> list[Path]:
    return sorted((d.victim.home.root / "run").glob("import-*.part"))


# -- (a) no token, (b) a records:read token -----------------------------------------------------------------------


async def test_no_token_and_a_reader_token_reach_no_admin_surface(daemons: Daemons) -> None:
    d = daemons
    async with client() as http:
        for headers, status in (({**JSON}, 401), (d.reader_s, 403)):
            assert (await http.post(f"{d.s}/v1/portability/export", json={}, headers=headers)).status_code == status
            reply = await http.post(f"{d.s}/v1/portability/import", content=b"x" * 4096, headers={**headers, **ZSTD})
            assert reply.status_code == status, reply.text
            reply = await http.post(f"{d.s}/v1/threads/restore", content=b"{}\n", headers={**headers, **NDJSON})
            assert reply.status_code == status, reply.text
        # A reader snapshots ordinary threads, never the instance's configuration (reserved threads).
        reply = await http.get(f"{d.s}/v1/threads/snapshot", params={"threads": "th_attacks"}, headers=d.reader_s)
        assert reply.status_code == 200 and reply.text.count("\n") == 4, reply.text
        for reserved in (REGISTRY_THREAD, f"th_attacks,{REGISTRY_THREAD}"):
            reply = await http.get(f"{d.s}/v1/threads/snapshot", params={"threads": reserved}, headers=d.reader_s)
            assert reply.status_code == 403, reply.text
        assert (await http.get(f"{d.s}/v1/threads/snapshot", params={"threads": "th_attacks"})).status_code == 401
        assert (await http.get(f"{d.s}/v1/actors")).status_code == 401
        assert (await http.get(f"{d.s}/v1/actors", headers=d.reader_s)).status_code == 200
        # Hostile snapshot selections: a 4xx naming the fix, never a 5xx.
        for threads in ("", ",,,", "../etc", "a" * 300, ",".join(f"th_{n}" for n in range(101)), "th_\u00e9"):
            reply = await http.get(f"{d.s}/v1/threads/snapshot", params={"threads": threads}, headers=d.admin_s)
            assert reply.status_code == 400, (threads, reply.text)


async def test_a_reader_token_reads_no_reserved_thread_by_any_route(daemons: Daemons) -> None:
    d = daemons
    async with client() as http:
        reply = await http.get(f"{d.s}/v1/records", params={"thread": REGISTRY_THREAD}, headers=d.reader_s)
        assert reply.status_code == 403, reply.text


async def test_hostile_json_to_the_new_routes_is_a_4xx(daemons: Daemons) -> None:
    d = daemons
    deep = b"[" * 100_000 + b"]" * 100_000
    async with client() as http:
        for body in (deep, b'{"identity": ' + deep + b"}", b'{"carry_tokens": "yes"}', b'{"admin": true}', b"\xff"):
            reply = await http.post(f"{d.s}/v1/portability/export", content=body, headers=d.admin_s)
            assert reply.status_code in (400, 413), reply.text
        # The moved notice takes no token: a stranger's garbage, deep JSON and unknown pairs are all refused.
        for body in (deep, b"{}", b"null", b'{"object": "endpoint_moved", "pair_id": "fp_nope"}', b"x" * 70_000):
            reply = await http.post(f"{d.s}/v1/federation/pair/moved", content=body, headers=JSON)
            assert 400 <= reply.status_code < 500, reply.text
        reply = await http.post(f"{d.s}/v1/threads/restore", content=deep + b"\n", headers={**d.admin_s, **NDJSON})
        assert reply.status_code == 400, reply.text


# -- (c) an admin handed a hostile upload ---------------------------------------------------------------------------


async def test_the_import_gate_refuses_what_is_not_a_bundle_and_leaves_no_spool(daemons: Daemons) -> None:
    d = daemons
    async with client() as http:
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            reply = await http.post(
                f"{d.v}/v1/portability/import", content=b"x", headers={**d.admin_v, "content-type": media}
            )
            assert reply.status_code == 415, reply.text
        for passphrase in (b"p" * 1025, b"\xff\xfe-not-utf8"):
            reply = await import_into(http, d, b"x", {"spl-bundle-passphrase": passphrase})
            assert reply.status_code == 400 and reply.json()["code"] == "INVALID_PASSPHRASE", reply.text
            assert b"ppppp" not in reply.content and b"not-utf8" not in reply.content
        for junk in (b"", b"\0" * 1024, b"not a tar at all" * 100, b"\x28\xb5\x2f\xfd" + b"\0" * 64):
            reply = await import_into(http, d, junk)
            assert reply.status_code == 400, reply.text
        assert spools(d) == []
        identity = (await http.get(f"{d.v}/v1/identity", headers=d.admin_v)).json()
        assert identity["did"] == d.victim.home.load_identity().did


async def test_a_wrong_passphrase_is_refused_without_echoing_either_passphrase(daemons: Daemons) -> None:
    d = daemons
    secret, wrong = "correct-horse-battery-staple-0xA11CE", "tr0ub4dor-and-3-0xB0B"
    async with client() as http:
        reply = await http.post(f"{d.s}/v1/portability/export", json={"passphrase": secret}, headers=d.admin_s)
        assert reply.status_code == 200, reply.text
        blob = reply.content
        reply = await import_into(http, d, blob, {"spl-bundle-passphrase": wrong})
        assert 400 <= reply.status_code < 500, reply.text
        assert secret not in reply.text and wrong not in reply.text
        reply = await import_into(http, d, blob)  # no passphrase at all for a sealed key
        assert 400 <= reply.status_code < 500, reply.text
        assert spools(d) == []
    log = d.victim.log_path.read_text(errors="replace") if d.victim.log_path.exists() else ""
    assert secret not in log and wrong not in log


async def test_one_import_at_a_time_and_the_spool_is_private(daemons: Daemons) -> None:
    """A never-ending upload holds the import lock: a second import is refused at once (409), the first one's
    spool is 0600 meanwhile, and it is gone once the first request ends."""
    d = daemons
    release = trio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"\0" * 512
        await release.wait()
        yield b"junk" * 128

    async with client() as http, trio.open_nursery() as nursery:
        first: list[httpx.Response] = []

        async def upload() -> None:
            first.append(await import_into(http, d, slow_body()))

        nursery.start_soon(upload)
        await wait_until(lambda: bool(spools(d)), 20, "the first upload to be spooled")
        (spool,) = spools(d)
        assert stat.S_IMODE(spool.stat().st_mode) == 0o600
        second = await import_into(http, d, b"\0" * 1024)
        assert second.status_code == 409 and second.json()["code"] == "IMPORT_IN_PROGRESS", second.text
        release.set()
    assert first[0].status_code == 400, first[0].text
    assert spools(d) == []


async def test_a_strangers_bundle_cannot_make_its_configuration_records_fold_here(daemons: Daemons) -> None:
    """A --no-identity bundle carries a namespace registration signed by the bundle's own (stranger's) key: the
    import may store it as a record, but it never becomes this instance's configuration."""
    d = daemons
    attacker = Identity.generate()
    body = {"kind": NAMESPACE_KIND, "namespace_id": "evil", "status": "active"}
    records = [stored_record(attacker, act="LEARN", actor=attacker.did, thread=REGISTRY_THREAD, clock=1, body=body)]
    async with client() as http:
        before = (await http.get(f"{d.v}/v1/identity", headers=d.admin_v)).json()["did"]
        reply = await import_into(http, d, forged_bundle(attacker, records=tuple(records)))
        assert reply.status_code in (200, 400, 403), reply.text
        if reply.status_code == 200:
            assert reply.json()["identity"] == "kept"
        namespaces = (await http.get(f"{d.v}/v1/namespaces", headers=d.admin_v)).json()
        assert "evil" not in json.dumps(namespaces)
        assert (await http.get(f"{d.v}/v1/identity", headers=d.admin_v)).json()["did"] == before


async def test_a_strangers_bundle_cannot_carry_an_admin_token_in(daemons: Daemons) -> None:
    d = daemons
    attacker = Identity.generate()
    secret = "ab" * 32
    planted = TokenInfo(
        token_id=hashlib.sha256(secret.encode()).hexdigest(),
        env="live",
        sa_id="backdoor",
        label="looks harmless",
        scopes=frozenset({"admin"}),
        created_at=1.0,
    )
    bearer = {"authorization": f"Bearer spl_live_backdoor_{secret}"}
    async with client() as http:
        assert (await http.get(f"{d.v}/v1/tokens", headers=bearer)).status_code == 401
        reply = await import_into(http, d, forged_bundle(attacker, tokens=(planted,)))
        assert reply.status_code == 400 and reply.json()["code"] == "TOKENS_FROM_ANOTHER_INSTANCE", reply.text
        # Whatever the import answered, the stranger's token must not open this instance (with it: export the
        # private key the importer kept).
        reply = await http.get(f"{d.v}/v1/tokens", headers=bearer)
        assert reply.status_code == 401, reply.text


async def test_zeros_after_the_end_of_the_archive_are_bounded(daemons: Daemons) -> None:
    """A tar ends with two zero blocks, padded to its record size (10 KiB): a bundle that goes on with zeros for
    hundreds of MiB is hostile (256 MiB here, 8 KiB of upload), and an importer must refuse it, not read it all
    twice, the second time while holding the store writer."""
    d = daemons
    blob = forged_bundle(Identity.generate(), trailing_zeros=256 * 1024 * 1024)
    assert len(blob) < 64 * 1024
    async with client() as http:
        reply = await import_into(http, d, blob)
    assert reply.status_code == 400 and reply.json()["code"] == "BUNDLE_MALFORMED", reply.text


async def test_restore_refuses_reserved_threads_and_records_outside_its_manifest(daemons: Daemons) -> None:
    d = daemons
    async with client() as http:
        reply = await http.get(f"{d.s}/v1/threads/snapshot", params={"threads": REGISTRY_THREAD}, headers=d.admin_s)
        assert reply.status_code == 200 and reply.text.count("\n") >= 2, reply.text
        snap = reply.content
        reply = await http.post(f"{d.s}/v1/threads/restore", content=snap, headers={**d.admin_s, **NDJSON})
        assert reply.status_code == 403 and reply.json()["code"] == "RESERVED_THREAD", reply.text

        # A snapshot of an ordinary thread with a reserved-thread record slipped in before its manifest line.
        ordinary = await http.get(f"{d.s}/v1/threads/snapshot", params={"threads": "th_attacks"}, headers=d.admin_s)
        lines = ordinary.content.splitlines(keepends=True)
        smuggled = b"".join([*lines[:-1], snap.splitlines(keepends=True)[0], lines[-1]])
        reply = await http.post(f"{d.s}/v1/threads/restore", content=smuggled, headers={**d.admin_s, **NDJSON})
        assert reply.status_code in (400, 403), reply.text
