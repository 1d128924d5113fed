"""Export and import of a whole instance (spec §9, issue 11): the store's side.

Export (:func:`export_bundle`) reads everything in ONE read transaction — the named files' folds and every
record — so a bundle taken while records are being written holds a consistent prefix of the log, never a torn
state, and streams it as a tar.zst (:mod:`spl.store.bundle_stream`) with O(1) memory.

Import (:func:`import_bundle`) reads the uploaded bundle, which the daemon first spools to a private file, once,
inside ONE write transaction of the store writer. Record files go in batches to worker processes
(:mod:`spl.store.verify_pool`: ids recomputed, signatures checked, off the GIL) and are inserted, in log order,
as their batches come back verified; the signed manifest, the digest chain over every file, the identity
(unsealed with the passphrase) and the named files are checked when the archive ends, and only then are the
cursors and tokens applied and the transaction committed. Any failure raises and rolls the transaction back, so
nothing of a bundle that does not check out is ever committed; a ``kill -9`` anywhere leaves nothing (SQLite
rolls back on the next open); a second run de-duplicates every record. Other writes wait while it runs.

Why one pass rather than "verify everything, then write": the two-pass importer read and parsed every record
twice and spent its first pass fighting its own reader for the GIL: 3,500 records/s at a million. Inside one
transaction the guarantee is the same — nothing is committed, hence nothing visible, unless all of it verified.
:func:`verify_bundle` (``--dry-run``) is the read-only check.

"Records of its own" (the refusal without ``--force-overwrite``) are the store's records minus those imports
inserted (meta ``imported_records``): what an import brought never makes the next import of the same bundle
refuse, so an interrupted migration is finished by running it again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import apsw
import msgspec
import nacl.pwhash
import nacl.utils

from spl.core.bundle import (
    CONFIG,
    CONSENT_GRANTS,
    DID_DOCUMENT,
    FEDERATION_PAIRS,
    MANIFEST,
    MANIFEST_SIG,
    NAMESPACES,
    PRIVATE_KEY,
    RECORD_FILE_OVERHEAD,
    ROTATIONS,
    SYNC_PAIRS,
    TOKENS,
    BundleMalformed,
    Manifest,
    build_manifest,
    check_digest,
    check_identity,
    check_record_file,
    check_rotations,
    did_document,
    manifest_bytes,
    new_digest,
    plain_private_key,
    private_key_is_sealed,
    record_path,
    seal_private_key,
    sign_manifest,
    unseal_private_key,
    verify_manifest,
)
from spl.core.canonical import canonical_json
from spl.core.config import DEFAULT_MAX_BODY, Config
from spl.core.consent import CONSENT_THREAD, ConsentBook
from spl.core.errors import Unavailable
from spl.core.federation_pairs import fold_federation_pairs
from spl.core.identity import Identity, InstanceIdentity
from spl.core.namespaces import REGISTRY_THREAD, NamespaceRegistry
from spl.core.pairs import PAIRS_THREAD, fold_pair_records
from spl.core.portability import (
    ForeignTokens,
    ImportRefused,
    ImportSummary,
    PairCursor,
    applies_instance_state,
    cursor_line,
    parse_cursor_lines,
    parse_token_lines,
    token_line,
)
from spl.core.rotation import own_keys, verify_chain
from spl.core.stored import Candidate
from spl.core.tokens import TokenInfo
from spl.store.bundle_stream import export_entries, read_tar_zst, write_tar_zst
from spl.store.database import connect_reader
from spl.store.genesis import own_genesis_count
from spl.store.ingest import WriterState, insert_imported, new_import_transaction
from spl.store.queries import pair_cursors, thread_objects, thread_objects_with_seq
from spl.store.tokens import load_tokens

__all__ = [
    "ExportOptions",
    "bundle_config",
    "ImportLimits",
    "VerifiedBundle",
    "import_bundle",
    "export_bundle",
    "limits_for",
    "own_record_count",
    "read_bundle_manifest",
    "verify_bundle",
]

MAX_NAMED_FILE = 64 * 1024 * 1024  # the named files together (pairs, grants, namespaces, tokens): more is hostile
IMPORTED_KEY = "imported_records"  # meta: how many records imports inserted (not "of its own")
# argon2id costs a sealing uses: libsodium's "interactive" limits (64 MiB, ~0.1 s here) keep an export and an
# import within the 200 MB memory budget; the limits travel in the sealed blob, so a later release can raise them.
SEAL_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
SEAL_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE
_VERIFY_CHUNK = 256  # records per verification task
_VERIFY_CHUNK_BYTES = 1024 * 1024  # ... or this many bytes of record files, whichever comes first
_VERIFY_IN_FLIGHT = 6  # tasks queued at most: pass 1 holds at most ~7 MiB of record files (+ one entry being read)
_FLUSH_EVERY = 4096  # records between flushes of the thread projections inside the import transaction


# -- export -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportOptions:
    """What ``spl export`` puts in the bundle.

    Attributes:
        identity: Carry the private key (sealed when ``passphrase`` is set, plain otherwise).
        carry_tokens: Carry ``tokens.jsonl`` (each token's metadata and the id of its secret, never a token).
        compress: zstd over the tar (``--uncompressed``: a plain tar).
        passphrase: Seal the private key with argon2id + secretbox under this passphrase.
    """

    identity: bool = True
    carry_tokens: bool = False
    compress: bool = True
    passphrase: bytes | None = None


def bundle_config(config: Config) -> dict[str, Any]:
    """The engine configuration a bundle carries (``config.json``), the same from the daemon and ``--offline``.

    ``config.toml`` holds no secret; what spl noted while reading it (obsolete keys, ignored sections) is not
    configuration and stays out.
    """
    view: dict[str, Any] = msgspec.to_builtins(config)
    for key in ("obsolete_keys", "ignored_sections"):
        view.pop(key, None)
    return view


def _utc(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))


def _jsonl(lines: list[bytes]) -> bytes:
    return b"".join(lines)


def _named_files(
    connection: apsw.Connection, identity: Identity, options: ExportOptions, config: dict[str, Any], now: float
) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """The named files, in path order, and the counts the manifest signs. Read inside the export's transaction."""
    own = own_keys(identity)  # after a rotation, records any key of the chain signed are the instance's
    pair_records = thread_objects(connection, PAIRS_THREAD)
    cursors = pair_cursors(connection)
    federation = fold_federation_pairs(pair_records, own)
    sync = fold_pair_records(pair_records, own)
    book = ConsentBook()
    for seq, record in thread_objects_with_seq(connection, CONSENT_THREAD):
        book.apply(record, seq, own)
    grants = book.grants()
    namespaces = NamespaceRegistry.folded(thread_objects(connection, REGISTRY_THREAD), own).listing()
    tokens = load_tokens(connection) if options.carry_tokens else []
    threads = 0
    for (count,) in connection.execute("SELECT COUNT(*) FROM threads"):
        threads = int(count)
    files: dict[str, bytes] = {
        CONFIG: canonical_json(config),
        CONSENT_GRANTS: _jsonl([msgspec.json.encode(grant.to_wire(now)) + b"\n" for grant in grants]),
        DID_DOCUMENT: canonical_json(did_document(identity)),
        FEDERATION_PAIRS: _jsonl(
            [
                cursor_line(
                    {
                        "pair_id": pair.pair_id,
                        "peer_did": pair.peer_did,
                        "peer_url": pair.peer_url,
                        "role": pair.role,
                        "state": pair.state,
                        "mode": pair.mode,
                    },
                    cursors.get(pair.pair_id),
                )
                for pair in federation.values()
            ]
        ),
        NAMESPACES: _jsonl([msgspec.json.encode(entry.to_wire()) + b"\n" for entry in namespaces]),
        SYNC_PAIRS: _jsonl(
            [
                cursor_line(
                    {
                        "pair_id": pair.pair_id,
                        "peer_did": pair.peer_did,
                        "peer_url": pair.peer_url,
                        "thread_id": pair.thread_id,
                        "mode": pair.mode,
                        "paused": pair.paused,
                    },
                    cursors.get(pair.pair_id),
                )
                for pair in sync.values()
            ]
        ),
    }
    if options.identity:
        seed = identity.seed
        if options.passphrase:
            files[PRIVATE_KEY] = seal_private_key(
                seed,
                options.passphrase,
                salt=nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES),
                opslimit=SEAL_OPSLIMIT,
                memlimit=SEAL_MEMLIMIT,
            )
        else:
            files[PRIVATE_KEY] = plain_private_key(seed)
    statements = getattr(identity, "statements", ())
    if statements:  # a rotated instance: the chain from its identifier to the key that signs (docs/identity.md)
        files[ROTATIONS] = canonical_json(list(statements))
    if options.carry_tokens:
        files[TOKENS] = _jsonl([token_line(info) for info in tokens])
    counts = {
        "threads": threads,
        "federation_pairs": len(federation),
        "sync_pairs": len(sync),
        "consent_grants": len(grants),
        "namespaces": len(namespaces),
        "tokens": len(tokens),
    }
    return sorted(files.items()), counts


def _signing_key(identity: Identity) -> str | None:
    """The key that signs a rotated instance's bundle; None when the identifier's own key still signs."""
    key = getattr(identity, "key_did", identity.did)
    return None if key == identity.did else str(key)


def export_bundle(
    db_path: Path,
    identity: Identity,
    out: BinaryIO,
    options: ExportOptions,
    *,
    config: dict[str, Any],
    now: float | None = None,
) -> dict[str, Any]:
    """Write the bundle of the store at ``db_path`` to ``out``; the signed manifest (as a dict).

    Everything comes from one read transaction on a connection of its own, so concurrent writes are either
    wholly in the bundle or wholly out of it. ``config`` is the engine configuration to carry (the caller
    leaves secrets out: none are in ``config.toml`` today). Blocking: call it in a worker thread.
    """
    created = time.time() if now is None else now
    connection = connect_reader(db_path)
    try:
        connection.execute("BEGIN DEFERRED")
        named, counts = _named_files(connection, identity, options, config, created)
        digest = new_digest()
        manifest: dict[str, Any] = {}

        def entries() -> Iterator[tuple[str, bytes]]:
            yield from named
            for record in export_entries(connection, in_transaction=True):
                yield record_path(record.thread, record.id), record.json.encode("ascii")
            manifest.update(
                build_manifest(
                    source_did=identity.did,
                    created_at=_utc(created),
                    counts=counts,
                    digest=digest,
                    identity_sealed=bool(options.identity and options.passphrase),
                    carries_tokens=options.carry_tokens,
                    signing_key=_signing_key(identity),
                )
            )
            yield MANIFEST, manifest_bytes(manifest)
            yield MANIFEST_SIG, sign_manifest(identity, manifest).encode("ascii")

        def chain(path: str, sha256: str) -> None:
            if path not in (MANIFEST, MANIFEST_SIG):
                digest.add(path, sha256)

        write_tar_zst(out, entries(), compress=options.compress, keep_digests=False, on_entry=chain)
        return manifest
    finally:
        if connection.in_transaction:
            connection.execute("COMMIT")
        connection.close()


# -- reading a bundle ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportLimits:
    """Bounds of one import's read: nothing in a bundle makes the importer hold or read more than these."""

    max_record_bytes: int = DEFAULT_MAX_BODY + RECORD_FILE_OVERHEAD
    max_entries: int = 50_000_000
    max_total: int = 256 * 1024**3  # decompressed bytes: a zstd bomb stops here

    @property
    def max_entry(self) -> int:
        return max(self.max_record_bytes, MAX_NAMED_FILE)


def limits_for(bundle_bytes: int) -> ImportLimits:
    """The bounds of reading a bundle of ``bundle_bytes`` (compressed): decompressed, at most 256 times as much.

    Real bundles compress 3-10 times (every record carries a random id and signature); a far higher ratio is a
    zstd bomb, refused once it is exceeded instead of after hundreds of GiB.
    """
    return ImportLimits(max_total=min(ImportLimits.max_total, max(64 * 1024 * 1024, 256 * bundle_bytes)))


def _entries(
    src: BinaryIO, limits: ImportLimits, should_stop: Callable[[], bool] = lambda: False
) -> Iterator[tuple[str, bytes]]:
    return read_tar_zst(
        src,
        max_entry=limits.max_entry,
        max_entries=limits.max_entries,
        max_total=limits.max_total,
        should_stop=should_stop,
        unique=_is_named,  # a repeated record path is the same record (its id is in the path): de-duplicated
    )


def _is_named(path: str) -> bool:
    return not path.startswith("records/")


def read_bundle_manifest(path: Path) -> dict[str, Any]:
    """The verified manifest of the bundle file at ``path`` (its signature and its digest chain checked).

    Reads the whole file (the manifest is its second-to-last member) without verifying each record: this is
    what ``spl export`` shows after a download, not an import's check.
    """
    digest = new_digest()
    manifest_data = sig_data = None
    with path.open("rb") as src:
        for name, data in _entries(src, ImportLimits(max_record_bytes=MAX_NAMED_FILE)):
            if name == MANIFEST:
                manifest_data = data
            elif name == MANIFEST_SIG:
                sig_data = data
            else:
                digest.add(name, hashlib.sha256(data).hexdigest())
    if manifest_data is None or sig_data is None:
        raise BundleMalformed("the bundle has no manifest.json and manifest.sig at its end")
    manifest = verify_manifest(manifest_data, sig_data)
    check_digest(manifest, digest)
    return msgspec.to_builtins(manifest)  # type: ignore[no-any-return]


# -- import, pass 1: verify everything, write nothing --------------------------------------------------------------


@dataclass
class VerifiedBundle:
    """A bundle that passed every check: what pass 2 may commit, and what the summary reports."""

    manifest: Manifest
    identity: Identity | None  # None: a --no-identity bundle
    cursors: list[PairCursor] = field(default_factory=list)
    tokens: list[TokenInfo] = field(default_factory=list)
    dry_run_counts: dict[str, int] = field(default_factory=dict)  # inserted / deduplicated / skipped (dry run)
    limits: ImportLimits = field(default_factory=lambda: ImportLimits())  # pass 2 reads under the same bounds


Verified = tuple[Candidate, "str | None"]  # a verified record, and its stored JSON's head when a worker built it


def _verify_chunk(chunk: list[tuple[str, bytes]], max_bytes: int) -> list[Verified]:
    return [(check_record_file(path, data, max_bytes=max_bytes), None) for path, data in chunk]


class _DryRunCounter:
    """What a commit would do with each record, asked of the store read-only (``--dry-run``)."""

    def __init__(self, db_path: Path) -> None:
        self.connection = connect_reader(db_path)
        self.counts = {"inserted": 0, "deduplicated": 0, "skipped": 0}

    def count(self, verified: list[Verified]) -> None:
        for candidate, _ in verified:
            envelope = candidate.envelope
            found = None
            for (stored_id,) in self.connection.execute(
                "SELECT id FROM records WHERE thread = ? AND actor = ? AND clock = ?",
                (envelope.thread, envelope.actor, envelope.clock),
            ):
                found = stored_id
            if found is None:
                exists = any(
                    True for _ in self.connection.execute("SELECT 1 FROM records WHERE id = ?", (envelope.id,))
                )
                self.counts["deduplicated" if exists else "inserted"] += 1
            else:
                self.counts["deduplicated" if found == envelope.id else "skipped"] += 1


Submit = Callable[[list[tuple[str, bytes]], int], "concurrent.futures.Future[list[Verified]]"]


def _scan(
    src: BinaryIO,
    *,
    passphrase: bytes | None,
    limits: ImportLimits,
    submit: Submit,
    on_verified: Callable[[list[Verified]], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> VerifiedBundle:
    """Read and check every byte of the bundle ``src``; :class:`BundleMalformed` / ``BundleSignatureInvalid`` else.

    Record files go in batches to ``submit`` (threads or worker processes), at most a few MiB of them in flight;
    each batch's verified candidates reach ``on_verified`` in archive order, as soon as the batches before it
    have. The manifest comes last in a bundle, so its signature and the digest chain over every file are checked
    at the end: a caller that wrote anything on the way must roll it back when this raises. ``should_stop`` is
    asked every MiB and every batch: True ends the scan with ``Unavailable`` (the request that wanted it is gone).
    """
    digest = new_digest()
    named: dict[str, bytes] = {}
    seed: bytes | None = None
    manifest_data = sig_data = None
    pending: deque[concurrent.futures.Future[list[Verified]]] = deque()
    chunk: list[tuple[str, bytes]] = []
    chunk_bytes = named_bytes = 0
    try:
        for path, data in _entries(src, limits, should_stop):
            if path == MANIFEST:
                manifest_data = data
                continue
            if path == MANIFEST_SIG:
                sig_data = data
                continue
            if manifest_data is not None:
                raise BundleMalformed(f"{path[:80]} follows manifest.json; the manifest and its signature end a bundle")
            digest.add(path, hashlib.sha256(data).hexdigest())  # refuses unknown paths and misplaced files
            if path.startswith("records/"):
                if len(data) > limits.max_record_bytes:  # before it is queued: the queue is bounded in bytes
                    raise BundleMalformed(
                        f"{path[:120]} is larger than {limits.max_record_bytes} bytes; raise max_body_bytes to "
                        "import it"
                    )
                chunk.append((path, data))
                chunk_bytes += len(data)
                if len(chunk) >= _VERIFY_CHUNK or chunk_bytes >= _VERIFY_CHUNK_BYTES:
                    if should_stop():
                        raise Unavailable("the bundle's check was cancelled (its request ended); run it again")
                    pending.append(submit(chunk, limits.max_record_bytes))
                    chunk, chunk_bytes = [], 0
                    while len(pending) > _VERIFY_IN_FLIGHT or (pending and pending[0].done()):
                        on_verified(pending.popleft().result())  # raises the batch's refusal
                continue
            named_bytes += len(data)
            if named_bytes > MAX_NAMED_FILE:
                raise BundleMalformed(f"the named files hold more than {MAX_NAMED_FILE} bytes together")
            named[path] = data
            if path == PRIVATE_KEY:
                seed = unseal_private_key(data, passphrase)  # a wrong passphrase is refused here, early
        if chunk:
            pending.append(submit(chunk, limits.max_record_bytes))
        while pending:
            on_verified(pending.popleft().result())
    finally:
        for future in pending:
            future.cancel()
    if manifest_data is None or sig_data is None:
        raise BundleMalformed("the bundle has no manifest.json and manifest.sig at its end; it is cut short")
    manifest = verify_manifest(manifest_data, sig_data)
    check_digest(manifest, digest)
    if PRIVATE_KEY in named and private_key_is_sealed(named[PRIVATE_KEY]) != manifest.identity_sealed:
        raise BundleMalformed("identity/private_key.bin is sealed or plain against what the manifest says")
    statements = check_rotations(manifest, named.get(ROTATIONS))
    identity = check_identity(
        named[DID_DOCUMENT], seed, source_did=manifest.source_did, signing_key=manifest.signing_key
    )
    if identity is not None and statements:  # the identifier, its chain and the current key, adopted together
        identity = InstanceIdentity(
            identity.seed,
            did=manifest.source_did,
            keys=verify_chain(manifest.source_did, statements),
            statements=statements,
        )
    cursors = [*parse_cursor_lines(named.get(FEDERATION_PAIRS, b""), FEDERATION_PAIRS)]
    cursors += parse_cursor_lines(named.get(SYNC_PAIRS, b""), SYNC_PAIRS)
    tokens = parse_token_lines(named[TOKENS], TOKENS) if TOKENS in named else []
    return VerifiedBundle(manifest, identity, cursors, tokens, {}, limits)


def verify_bundle(
    src: BinaryIO,
    *,
    passphrase: bytes | None,
    limits: ImportLimits | None = None,
    dry_run_store: Path | None = None,
    workers: int = 2,
    should_stop: Callable[[], bool] = lambda: False,
) -> VerifiedBundle:
    """Check every byte of the bundle ``src`` and write nothing (``--dry-run``, and ``spl import`` checks).

    Record files are verified on ``workers`` threads. With ``dry_run_store`` each record is also looked up in
    that store (read-only) to count what an import would insert, de-duplicate and skip.
    """
    counter = _DryRunCounter(dry_run_store) if dry_run_store is not None else None
    try:
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="spl-import-verify") as pool:
            verified = _scan(
                src,
                passphrase=passphrase,
                limits=limits or ImportLimits(),
                submit=lambda chunk, max_bytes: pool.submit(_verify_chunk, chunk, max_bytes),
                on_verified=counter.count if counter is not None else lambda candidates: None,
                should_stop=should_stop,
            )
    finally:
        if counter is not None:
            counter.connection.close()
    if counter is not None:
        verified.dry_run_counts = dict(counter.counts)
    return verified


# -- import: verify and commit in one pass, in one transaction ------------------------------------------------


def own_record_count(connection: apsw.Connection) -> int:
    """Records this store holds that no import brought: what ``--force-overwrite`` is about.

    The genesis records ``spl init`` (or a daemon's start) wrote on the reserved threads are no data of the
    instance's own (``spl.store.genesis``): a freshly initialised steward holds six and still takes an import.
    """
    total = imported = 0
    for (count,) in connection.execute("SELECT COUNT(*) FROM records"):
        total = int(count)
    for (value,) in connection.execute("SELECT value FROM meta WHERE key = ?", (IMPORTED_KEY,)):
        imported = int(value)
    return max(total - imported - own_genesis_count(connection), 0)


def import_bundle(
    connection: apsw.Connection,
    src: BinaryIO,
    state: WriterState,
    *,
    passphrase: bytes | None,
    force: bool,
    submit: Submit,
    limits: ImportLimits | None = None,
    now: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[ImportSummary, VerifiedBundle]:
    """Import the bundle ``src`` inside the caller's write transaction: verify and insert in one pass.

    Records are inserted as their batches come back verified, in archive (log) order; the manifest's signature,
    the digest chain over every file, the identity and the named files are checked when the archive ends, and
    the cursors and tokens applied then. Anything that fails raises, and the caller's transaction rolls back:
    nothing of a bundle that does not check out is ever committed, and a ``kill -9`` leaves nothing either.
    ``state`` is the writer's; the caller reloads it afterwards.

    Raises:
        ImportRefused: The store holds records of its own and ``force`` is false.
        ForeignTokens: The bundle carries tokens of another instance without its identity.
        BundleMalformed, BundleSignatureInvalid: the bundle does not check out.
        FleetFrozen: the kill switch holds (any level): nothing is read.
    """
    frozen = state.fleet.error()  # the route refused it before the upload already; this is the writer's word
    if frozen is not None:
        raise frozen
    own = own_record_count(connection)
    if own and not force:
        raise ImportRefused(own)
    tx = new_import_transaction(state, time.time() if now is None else now)
    counts = {"inserted": 0, "deduplicated": 0}
    refusals: dict[str, int] = {}
    inspected = 0

    def insert(verified: list[Verified]) -> None:
        nonlocal inspected
        for candidate, head in verified:
            outcome = insert_imported(connection, candidate, state, tx, head)
            if outcome in counts:
                counts[outcome] += 1
            else:
                refusals[outcome] = refusals.get(outcome, 0) + 1
        before, inspected = inspected, inspected + len(verified)
        if inspected // _FLUSH_EVERY != before // _FLUSH_EVERY:
            tx.threads.flush(connection)  # bounds the memory of the thread projections in one long transaction
            if progress is not None:
                progress(inspected)

    verified = _scan(src, passphrase=passphrase, limits=limits or ImportLimits(), submit=submit, on_verified=insert)
    tx.threads.flush(connection)
    manifest = verified.manifest
    ours = applies_instance_state(
        carries_identity=verified.identity is not None, source_did=manifest.source_did, local_did=state.own_did
    )
    if verified.tokens and not ours:
        raise ForeignTokens(manifest.source_did, state.own_did)
    summary = ImportSummary(
        manifest.source_did,
        manifest.bundle_sha256,
        dry_run=False,
        records_inspected=inspected,
        records_inserted=counts["inserted"],
        records_deduplicated=counts["deduplicated"],
        records_skipped=sum(refusals.values()),
        refusals_by_reason=refusals,
    )
    for cursor in verified.cursors if ours else []:
        connection.execute(
            "INSERT INTO pair_cursors(pair_id, cursor, updated_at) VALUES (?, ?, ?) ON CONFLICT(pair_id) DO NOTHING",
            (cursor.pair_id, cursor.cursor, tx.now),
        )
        summary.cursors += connection.changes()
    for info in verified.tokens:
        connection.execute(
            "INSERT INTO tokens(token_id, env, sa_id, label, scopes, created_at, revoked_at, expires_at, pair_id, "
            "peer_did, target_namespace) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(token_id) DO NOTHING",
            (
                info.token_id,
                info.env,
                info.sa_id,
                info.label,
                json.dumps(sorted(info.scopes)),
                info.created_at,
                info.revoked_at,
                info.expires_at,
                info.pair_id,
                info.peer_did,
                info.target_namespace,
            ),
        )
        summary.tokens += connection.changes()
    connection.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
        (IMPORTED_KEY, str(summary.records_inserted)),
    )
    fill_counts(summary, manifest)
    summary.check()
    return summary, verified


def fill_counts(summary: ImportSummary, manifest: Manifest) -> None:
    """The per-kind counts a summary shows, as the bundle's signed manifest states them."""
    counts = manifest.counts
    summary.threads = counts.get("threads", 0)
    summary.federation_pairs = counts.get("federation_pairs", 0)
    summary.sync_pairs = counts.get("sync_pairs", 0)
    summary.consent_grants = counts.get("consent_grants", 0)
    summary.namespaces = counts.get("namespaces", 0)
