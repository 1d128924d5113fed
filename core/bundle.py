"""The export bundle format (spec §9, issue 11): paths, manifest, signature, sealed identity. Pure.

A bundle is a tar (zstd-compressed unless ``--uncompressed``) whose members come in this order:

1. the named files it carries, in ascending path order (:data:`NAMED_FILES`: config, consent
   grants, federation and sync pairs, DID document, private key, namespaces, tokens);
2. ``records/<hex of thread>/<record id>.json``, one per record, in the source's log (sequence) order;
3. ``manifest.json`` — canonical JSON (:func:`build_manifest`), exactly the bytes that are signed;
4. ``manifest.sig`` — base64url Ed25519 signature of those bytes by ``source_did``; then the end.

The manifest comes last because it holds ``bundle_sha256``, which is known only once every file
has been hashed: the exporter writes in one pass, with no second read of the log.

Why the manifest does not list every file's hash
------------------------------------------------
At 1,000,000 records a per-file listing is ~130 MB of JSON, and checking it means holding a
million (path, hash) pairs: several hundred MB of Python objects, over the issue's 200 MB import
budget. Instead the manifest lists the hashes of the few *named* files (``files``), and
``bundle_sha256`` chains every covered file (every member before ``manifest.json``) in tar order::

    bundle_sha256 = SHA-256( for each covered file, in tar order: path + "\t" + sha256hex + "\n" )

Both ends hold O(1) state (:class:`BundleDigest`): the exporter feeds each file it writes, the
importer each file it reads (hashing it as it streams past, verifying and staging records), then
:func:`verify_manifest` and :func:`check_digest` at the end compare the chain, the named files'
hashes and the counts with the signed manifest. One flipped byte in any file changes that file's
hash, hence the chain; a file added, dropped, repeated or moved changes the chain too. So an
importer commits nothing until :func:`check_digest` returns. It need not wait to refuse the
obvious: a wrong passphrase shows as soon as ``identity/private_key.bin`` is unsealed, a bad
record as soon as :func:`check_record_file` reads it.

Why tar order and not path order (spec §9 says "path-sorted")
-------------------------------------------------------------
Records travel in log order so an importer commits each thread's records in the order the
source did: ``spl thread records T`` lists by sequence, and the round trip must give the same
output on both sides. Path order (by thread, then by id) would shuffle each thread, and chaining
in path order while streaming in log order would need every pair in memory or a sort on disk.
The chain is signed, so it fixes the order as firmly as a path-sorted one would.

Why threads are hex-encoded in record paths
-------------------------------------------
A thread is 1-256 characters of ``[A-Za-z0-9_.:@-]`` (spec §15.10), so ``.`` and ``..`` are valid
threads and would be path-traversal segments; ``:`` is illegal in Windows file names, and ``A`` and
``a`` collide on case-insensitive file systems (macOS). The segment is therefore the lowercase hex
of the thread's ASCII bytes: never empty, never dots, no ``/``, safe to ``tar -x`` anywhere (at most
512 characters: a pax header carries it). A reader never uses these paths on a file system; the
record inside carries its thread in clear and must agree with its path.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from typing import Annotated, Any

import msgspec
import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from spl.core.canonical import CanonicalError, canonical_json
from spl.core.config import DEFAULT_MAX_BODY
from spl.core.errors import InvalidRequest
from spl.core.identity import Identity, b64url_decode, verify_signature
from spl.core.record import RECORD_ID, THREAD
from spl.core.rotation import RotationInvalid, verify_chain
from spl.core.stored import Candidate
from spl.core.verify import verify_pulled

__all__ = [
    "BUNDLE_VERSION",
    "CONFIG",
    "CONSENT_GRANTS",
    "DID_DOCUMENT",
    "FEDERATION_PAIRS",
    "TAIL_FILES",
    "MANIFEST",
    "MANIFEST_SIG",
    "MAX_MANIFEST_BYTES",
    "MAX_SIG_FILE_BYTES",
    "NAMED_FILES",
    "NAMESPACES",
    "PRIVATE_KEY",
    "ROTATIONS",
    "RECORD_FILE_OVERHEAD",
    "SYNC_PAIRS",
    "TOKENS",
    "BundleDigest",
    "BundleMalformed",
    "BundleSignatureInvalid",
    "Manifest",
    "build_manifest",
    "check_digest",
    "check_files",
    "check_identity",
    "check_rotations",
    "check_record_file",
    "did_document",
    "file_sha256",
    "is_record_path",
    "manifest_bytes",
    "new_digest",
    "parse_record_path",
    "plain_private_key",
    "private_key_is_sealed",
    "record_path",
    "seal_private_key",
    "sign_manifest",
    "unseal_private_key",
    "verify_manifest",
]

BUNDLE_VERSION = 1

MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.sig"
TAIL_FILES = (MANIFEST, MANIFEST_SIG)
"""The last two tar members, in this order; not covered by ``bundle_sha256`` (the signature covers them)."""

CONFIG = "config.json"  # engine config, never a secret
CONSENT_GRANTS = "consent/grants.jsonl"
FEDERATION_PAIRS = "federation/pairs.jsonl"
SYNC_PAIRS = "federation/sync_pairs.jsonl"  # with their cursors
DID_DOCUMENT = "identity/did_document.json"  # public: always present
PRIVATE_KEY = "identity/private_key.bin"  # absent from a --no-identity bundle
ROTATIONS = "identity/rotations.json"  # only from a rotated instance: the chain from source_did to signing_key
NAMESPACES = "namespaces.jsonl"
TOKENS = "tokens.jsonl"  # only with --carry-tokens: metadata and hashes, never a plaintext token
RECORDS_DIR = "records/"

NAMED_FILES = frozenset(
    {CONFIG, CONSENT_GRANTS, FEDERATION_PAIRS, SYNC_PAIRS, DID_DOCUMENT, PRIVATE_KEY, ROTATIONS, NAMESPACES, TOKENS}
)
"""Every covered file that is not a record. Their hashes are listed in the manifest's ``files``."""

MAX_MANIFEST_BYTES = 64 * 1024
"""The manifest holds counts and at most len(NAMED_FILES) hashes: ~2 KB. Anything far larger is hostile."""

MAX_SIG_FILE_BYTES = 256  # an Ed25519 signature is 86 base64url characters
MAX_DID_DOCUMENT_BYTES = 16 * 1024
RECORD_FILE_OVERHEAD = 64 * 1024
"""A record file is the stored record (envelope + signer + sig), a little more than its emitted body."""

# 256 ASCII characters of thread -> at most 512 hex digits; the id is 64 lowercase hex
_RECORD_PATH = re.compile(r"records/((?:[0-9a-f]{2}){1,256})/([0-9a-f]{64})\.json")
_SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")
_RFC3339 = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})\Z")
_COUNT_KEY = re.compile(r"\A[a-z_]{1,32}\Z")
MAX_COUNT = 2**53  # counts travel through JSON readers that hold integers as doubles


# -- errors --------------------------------------------------------------------------------------


class BundleMalformed(InvalidRequest):
    """A bundle that is not what a sound exporter writes: refused before anything is written."""

    code = "BUNDLE_MALFORMED"

    def __init__(self, message: str) -> None:
        super().__init__(f"bundle malformed: {message}")
        self.detail = message  # without the prefix: what crosses a process boundary to be raised again


class BundleSignatureInvalid(InvalidRequest):
    """A bundle whose signature or sealed identity does not check out: refused before anything is written."""

    code = "BUNDLE_SIGNATURE_INVALID"

    def __init__(self, message: str) -> None:
        super().__init__(f"signature verification failed: {message}")
        self.detail = message


def _shown(text: str, limit: int = 80) -> str:
    """Hostile text echoed in a message: bounded and escaped, so it cannot forge log lines."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


# -- paths ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _thread_folder(thread: str) -> str:
    """The hex folder of a thread (cached: an export names each thread once per record, a few hundred threads)."""
    if not THREAD.fullmatch(thread):
        raise ValueError("not a valid thread")
    return thread.encode("ascii").hex()


@functools.lru_cache(maxsize=4096)
def _folder_thread(folder: str) -> str | None:
    """The thread a hex folder spells, when it spells a valid one (cached likewise, for the reader)."""
    thread = bytes.fromhex(folder).decode("ascii", errors="replace")
    return thread if THREAD.fullmatch(thread) else None


def record_path(thread: str, record_id: str) -> str:
    """``records/<hex of thread>/<record id>.json`` (see the module docstring for why hex)."""
    if not isinstance(thread, str):
        raise ValueError("not a valid thread")
    if not isinstance(record_id, str) or not RECORD_ID.fullmatch(record_id):
        raise ValueError("not a record id (64 lowercase hex)")
    return f"{RECORDS_DIR}{_thread_folder(thread)}/{record_id}.json"


def is_record_path(path: str) -> bool:
    """Whether ``path`` has a record path's shape: ``records/``, even-length lowercase hex, ``/``, 64 hex, ``.json``.

    Such a path is plain ASCII with three non-empty segments, none of them ``.`` or ``..``: a reader may take it
    without its generic path checks (whether its folder spells a valid thread is :func:`parse_record_path`'s).
    """
    return _RECORD_PATH.fullmatch(path) is not None


def parse_record_path(path: str) -> tuple[str, str]:
    """``(thread, record_id)`` of a record path; :class:`BundleMalformed` for any other path."""
    match = _RECORD_PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise BundleMalformed(
            f"{_shown(str(path))} is not a bundle file; records live at records/<hex of thread>/<64 hex id>.json"
        )
    thread = _folder_thread(match.group(1))
    if thread is None:
        raise BundleMalformed(f"{_shown(path)} does not encode a valid thread")
    return thread, match.group(2)


def file_sha256(data: bytes) -> str:
    """Lowercase hex SHA-256 of a whole file (a streaming reader uses ``hashlib.sha256`` per chunk)."""
    return hashlib.sha256(data).hexdigest()


# -- the chained digest --------------------------------------------------------------------------


class BundleDigest:
    """``bundle_sha256`` built one file at a time, in tar order, with O(1) memory.

    The exporter feeds each file it writes; the checker feeds each file it reads, so both refuse
    the same things: a path that is neither a named file nor a record path, a named file repeated,
    out of path order or after a record, a malformed hash. It counts files and records; threads
    are counted by the caller (records of a thread are not adjacent in log order).
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._last_named = ""
        self.file_count = 0
        self.record_count = 0
        self.named: dict[str, str] = {}  # at most len(NAMED_FILES) entries

    def add(self, path: str, sha256: str) -> None:
        """Chain one covered file; :class:`BundleMalformed` on anything a sound exporter never writes."""
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise BundleMalformed(f"the hash of {_shown(str(path))} is not 64 lowercase hex")
        if path in TAIL_FILES:
            raise BundleMalformed(f"{path} appears before the end; the manifest and its signature are the last members")
        if path in NAMED_FILES:
            if self.record_count or path <= self._last_named:
                raise BundleMalformed(
                    f"{path} is out of place; named files come once each, in path order, before the records"
                )
            self._last_named = path
            self.named[path] = sha256
        elif isinstance(path, str) and path.startswith(RECORDS_DIR):
            parse_record_path(path)
            self.record_count += 1
        else:
            raise BundleMalformed(f"{_shown(str(path))} is not a file a bundle may hold")
        self.file_count += 1
        self._hash.update(f"{path}\t{sha256}\n".encode("ascii"))

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def new_digest() -> BundleDigest:
    """A fresh :class:`BundleDigest` (the exporter's and the checker's starting point)."""
    return BundleDigest()


# -- the manifest --------------------------------------------------------------------------------


def build_manifest(
    *,
    source_did: str,
    created_at: str,
    counts: dict[str, int],
    digest: BundleDigest,
    identity_sealed: bool,
    carries_tokens: bool,
    signing_key: str | None = None,
) -> dict[str, Any]:
    """The manifest of a bundle whose covered files were all fed to ``digest``.

    ``signing_key`` is set for an instance that rotated its key (docs/identity.md): ``source_did`` stays its
    identifier, the manifest is signed by the current key, and ``identity/rotations.json`` links the two.

    ``counts`` holds the per-kind counts the output shows (threads, federation_pairs,
    consent_grants, …); ``records`` is taken from ``digest`` (and must agree if given), so the
    manifest never claims more records than the files hold. ``record_count`` is spec §9's field.
    Raises ValueError for a caller's bug (the exporter's inputs are trusted).
    """
    if not _RFC3339.fullmatch(created_at):
        raise ValueError("created_at must be RFC 3339 with a zone")
    all_counts = dict(counts)
    if all_counts.setdefault("records", digest.record_count) != digest.record_count:
        raise ValueError("counts['records'] disagrees with the files fed to the digest")
    for key, value in all_counts.items():
        if not _COUNT_KEY.fullmatch(key) or not isinstance(value, int) or not 0 <= value < MAX_COUNT:
            raise ValueError(f"bad count {key!r}")
    if identity_sealed and PRIVATE_KEY not in digest.named:
        raise ValueError("identity_sealed without identity/private_key.bin")
    if carries_tokens != (TOKENS in digest.named):
        raise ValueError("carries_tokens must match whether tokens.jsonl was written")
    if DID_DOCUMENT not in digest.named:
        raise ValueError("identity/did_document.json is always written")
    if (signing_key is not None) != (ROTATIONS in digest.named):
        raise ValueError("signing_key must match whether identity/rotations.json was written")
    rotated = {} if signing_key is None else {"signing_key": signing_key}
    return {
        "object": "bundle_manifest",
        "bundle_version": BUNDLE_VERSION,
        "source_did": source_did,
        "created_at": created_at,
        "record_count": digest.record_count,
        "counts": all_counts,
        "files": dict(sorted(digest.named.items())),
        "file_count": digest.file_count,
        "bundle_sha256": digest.hexdigest(),
        "identity_included": PRIVATE_KEY in digest.named,
        "identity_sealed": identity_sealed,
        "carries_tokens": carries_tokens,
        **rotated,
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The exact bytes written as ``manifest.json``: its canonical JSON, which is what is signed."""
    return canonical_json(manifest)


def sign_manifest(identity: Identity, manifest: dict[str, Any]) -> str:
    """``manifest.sig``: Ed25519 over the manifest's canonical JSON, base64url without padding."""
    signer = manifest.get("signing_key") or manifest.get("source_did")
    if signer != getattr(identity, "key_did", identity.did):  # InstanceIdentity: the chain's current key
        raise ValueError("a manifest is signed by its signing_key, or by its source_did when there is none")
    return identity.sign(manifest_bytes(manifest))


class _Version(msgspec.Struct):
    bundle_version: Any = None


_Count = Annotated[int, msgspec.Meta(ge=0, lt=MAX_COUNT)]
_Sha = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A manifest whose signature verified: every field typed and bounded."""

    object: Annotated[str, msgspec.Meta(pattern="^bundle_manifest$")]
    bundle_version: int
    source_did: Annotated[str, msgspec.Meta(max_length=128)]
    created_at: Annotated[str, msgspec.Meta(max_length=64)]
    record_count: _Count
    counts: Annotated[
        dict[Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{1,32}$")], _Count], msgspec.Meta(max_length=64)
    ]
    files: Annotated[dict[str, _Sha], msgspec.Meta(max_length=len(NAMED_FILES))]
    file_count: _Count
    bundle_sha256: _Sha
    identity_included: bool
    identity_sealed: bool
    carries_tokens: bool
    # Only in a rotated instance's bundle (omitted otherwise, so older bundles keep their exact bytes).
    signing_key: Annotated[str, msgspec.Meta(max_length=128)] | None = None


_VERSION_DECODER = msgspec.json.Decoder(_Version)
_MANIFEST_DECODER = msgspec.json.Decoder(Manifest)


def verify_manifest(manifest_data: bytes, sig_data: bytes) -> Manifest:
    """The manifest, once its bytes are canonical, its shape sound and its signature by ``source_did`` valid.

    The bytes must be exactly the canonical JSON that was signed, so no byte of ``manifest.json``
    can change without a refusal, even whitespace. Order: size, version (so a newer bundle gets an
    "upgrade spl" answer, not a shape error), shape, self-consistency, then the signature.
    """
    if len(manifest_data) > MAX_MANIFEST_BYTES:
        raise BundleMalformed(f"manifest.json is larger than {MAX_MANIFEST_BYTES} bytes")
    if len(sig_data) > MAX_SIG_FILE_BYTES:
        raise BundleMalformed(f"manifest.sig is larger than {MAX_SIG_FILE_BYTES} bytes")
    try:
        version = _VERSION_DECODER.decode(manifest_data).bundle_version
    except (msgspec.DecodeError, ValueError, RecursionError):
        raise BundleMalformed("manifest.json is not a JSON object; the bundle is damaged") from None
    if version != BUNDLE_VERSION or isinstance(version, bool):
        raise BundleMalformed(
            f"bundle_version {_shown(str(version), 20)} is not supported (this spl reads version {BUNDLE_VERSION}); "
            "import it with the spl release that wrote it, or a newer one"
        )
    try:
        manifest = _MANIFEST_DECODER.decode(manifest_data)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise BundleMalformed(f"manifest.json has a bad shape ({str(exc)[:120]})") from None
    _check_manifest(manifest)
    try:
        canonical = canonical_json(msgspec.to_builtins(manifest))
    except CanonicalError:  # pragma: no cover - a decoded Manifest is always canonicalisable
        raise BundleMalformed("manifest.json cannot be canonicalised") from None
    if canonical != manifest_data:
        raise BundleMalformed("manifest.json is not in canonical form; it was altered after signing")
    signature = _signature_text(sig_data)
    signer = manifest.signing_key or manifest.source_did  # the chain binding signing_key: check_rotations
    if not verify_signature(signer, manifest_data, signature):
        raise BundleSignatureInvalid(
            f"manifest.sig does not verify against the {'signing key' if manifest.signing_key else 'source DID'} "
            f"{_shown(signer)}; the bundle was altered or not written by that instance"
        )
    return manifest


_SIG_TEXT = re.compile(rb"\A[A-Za-z0-9_-]{86}\Z")


def _signature_text(sig_data: bytes) -> str:
    """``manifest.sig`` as written: exactly 86 base64url characters, no padding, no newline.

    Exact, because base64 decoders forgive (they skip stray characters and ignore the 4 spare bits
    of the last character), and a flipped byte must never leave a bundle accepted.
    """
    if not _SIG_TEXT.fullmatch(sig_data):
        raise BundleSignatureInvalid("manifest.sig is not 86 base64url characters; the bundle is damaged")
    text = sig_data.decode("ascii")
    try:
        b64url_decode(text)  # strict: only the canonical spelling decodes
    except ValueError:
        raise BundleSignatureInvalid("manifest.sig is not in canonical base64url; the bundle is damaged") from None
    return text


def _check_manifest(manifest: Manifest) -> None:
    if not manifest.source_did.startswith("did:key:z"):
        raise BundleMalformed("source_did is not a did:key")
    if not _RFC3339.fullmatch(manifest.created_at):
        raise BundleMalformed("created_at is not an RFC 3339 time")
    unknown = set(manifest.files) - NAMED_FILES
    if unknown:
        raise BundleMalformed(f"manifest lists {_shown(min(unknown))}, which is not a file a bundle may hold")
    if DID_DOCUMENT not in manifest.files:
        raise BundleMalformed("manifest lists no identity/did_document.json")
    if manifest.identity_included != (PRIVATE_KEY in manifest.files):
        raise BundleMalformed("identity_included disagrees with whether identity/private_key.bin is listed")
    if manifest.identity_sealed and not manifest.identity_included:
        raise BundleMalformed("identity_sealed is set but the bundle carries no private key")
    if manifest.carries_tokens != (TOKENS in manifest.files):
        raise BundleMalformed("carries_tokens disagrees with whether tokens.jsonl is listed")
    if manifest.counts.get("records") != manifest.record_count:
        raise BundleMalformed("counts.records disagrees with record_count")
    if manifest.file_count != manifest.record_count + len(manifest.files):
        raise BundleMalformed("file_count is not record_count plus the named files")
    if manifest.signing_key is not None and (
        not manifest.signing_key.startswith("did:key:z") or manifest.signing_key == manifest.source_did
    ):
        raise BundleMalformed("signing_key is not a did:key other than source_did")
    if (manifest.signing_key is not None) != (ROTATIONS in manifest.files):
        raise BundleMalformed("signing_key disagrees with whether identity/rotations.json is listed")


MAX_ROTATIONS_BYTES = 256 * 1024  # 64 statements of well under 1 KiB each


def check_rotations(manifest: Manifest, data: bytes | None) -> list[dict[str, Any]]:
    """The rotation chain a rotated instance's bundle carries, once it leads from ``source_did`` to the key that
    signed the manifest; ``[]`` for a bundle of an instance that never rotated. Must run after
    :func:`verify_manifest`: it is what ties ``signing_key`` to the identifier."""
    if manifest.signing_key is None:
        return []
    if data is None or len(data) > MAX_ROTATIONS_BYTES:
        raise BundleMalformed("identity/rotations.json is missing or too large")
    try:
        statements = msgspec.json.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):
        raise BundleMalformed("identity/rotations.json is not JSON") from None
    try:
        keys = verify_chain(manifest.source_did, statements)
    except RotationInvalid as exc:
        raise BundleSignatureInvalid(f"identity/rotations.json is not a valid rotation chain: {exc.message}") from None
    if keys[-1] != manifest.signing_key:
        raise BundleSignatureInvalid("identity/rotations.json does not lead to the key that signed the manifest")
    return list(statements)


# -- checking the files ----------------------------------------------------------------------------


def check_digest(manifest: Manifest, digest: BundleDigest) -> None:
    """Every covered file was fed to ``digest``: the named files, counts and chain must be what the manifest signed."""
    listed, seen = manifest.files, digest.named
    for path in sorted(set(listed) | set(seen)):
        if path not in seen:
            raise BundleMalformed(f"{path} is listed in the manifest but missing from the bundle")
        if path not in listed:
            raise BundleMalformed(f"{path} is in the bundle but not listed in the manifest")
        if listed[path] != seen[path]:
            raise BundleMalformed(f"{path} does not match its SHA-256 in the manifest; the file was altered")
    if digest.record_count != manifest.record_count:
        raise BundleMalformed(
            f"the bundle holds {digest.record_count} records, its manifest says {manifest.record_count}"
        )
    if digest.file_count != manifest.file_count:  # pragma: no cover - implied by the two checks above
        raise BundleMalformed(f"the bundle holds {digest.file_count} files, its manifest says {manifest.file_count}")
    if digest.hexdigest() != manifest.bundle_sha256:
        raise BundleMalformed("bundle_sha256 does not match the files; a file was altered, added, removed or moved")


def check_files(manifest: Manifest, seen: dict[str, str]) -> None:
    """:func:`check_digest` over a whole ``{path: sha256}`` map, in insertion (tar) order (tests, small bundles)."""
    digest = BundleDigest()
    for path, sha256 in seen.items():
        digest.add(path, sha256)
    check_digest(manifest, digest)


# -- identity ------------------------------------------------------------------------------------

_PLAIN_HEADER = b"spl-key-v1:plain\n"
_SEALED_HEADER = b"spl-key-v1:argon2id+secretbox\n"
_LIMITS = struct.Struct(">QQ")  # opslimit, memlimit
_ARGON = nacl.pwhash.argon2id
SALT_BYTES = _ARGON.SALTBYTES
_SEALED_BODY = _LIMITS.size + SALT_BYTES + nacl.secret.SecretBox.NONCE_SIZE + 32 + nacl.secret.SecretBox.MACBYTES
MAX_OPSLIMIT = _ARGON.OPSLIMIT_SENSITIVE
MAX_MEMLIMIT = _ARGON.MEMLIMIT_MODERATE
"""A hostile blob names its own argon2 limits; past these, unsealing it would be a denial of service."""


def plain_private_key(seed: bytes) -> bytes:
    """``identity/private_key.bin`` without a passphrase: a header, then the 32-byte seed (file written 0600)."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return _PLAIN_HEADER + seed


def seal_private_key(
    seed: bytes,
    passphrase: bytes,
    *,
    salt: bytes,
    nonce: bytes | None = None,
    opslimit: int = _ARGON.OPSLIMIT_MODERATE,
    memlimit: int = _ARGON.MEMLIMIT_MODERATE,
) -> bytes:
    """``identity/private_key.bin`` sealed: argon2id(passphrase, salt) as a SecretBox key over the seed.

    The limits travel in the blob, so tests can seal cheaply (``OPSLIMIT_MIN``/``MEMLIMIT_MIN``)
    and a later release can raise the defaults without breaking old bundles. ``salt`` (16 bytes)
    and ``nonce`` (24) come from the caller's ``secrets``/``os.urandom``; a None nonce is drawn here.
    """
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    if not passphrase:
        raise ValueError("an empty passphrase seals nothing; use plain_private_key")
    if len(salt) != SALT_BYTES:
        raise ValueError(f"salt must be {SALT_BYTES} bytes")
    if not (_ARGON.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT and _ARGON.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT):
        raise ValueError("argon2id limits out of range")
    key = _ARGON.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    box = nacl.secret.SecretBox(key)
    sealed = bytes(box.encrypt(seed, nonce if nonce is not None else nacl.utils.random(box.NONCE_SIZE)))
    return _SEALED_HEADER + _LIMITS.pack(opslimit, memlimit) + salt + sealed


def private_key_is_sealed(blob: bytes) -> bool:
    """Which form ``identity/private_key.bin`` is in; :class:`BundleMalformed` when neither."""
    if blob.startswith(_SEALED_HEADER):
        return True
    if blob.startswith(_PLAIN_HEADER):
        return False
    raise BundleMalformed("identity/private_key.bin has no known header")


def unseal_private_key(blob: bytes, passphrase: bytes | None) -> bytes:
    """The 32-byte seed in ``identity/private_key.bin``, plain or sealed.

    Raises:
        BundleMalformed: the blob has a bad header, length or argon2 limits.
        BundleSignatureInvalid: it is sealed and ``passphrase`` is missing or wrong.
    """
    if not private_key_is_sealed(blob):
        seed = blob[len(_PLAIN_HEADER) :]
        if len(seed) != 32:
            raise BundleMalformed("identity/private_key.bin does not hold a 32-byte Ed25519 seed")
        return seed
    body = blob[len(_SEALED_HEADER) :]
    if len(body) != _SEALED_BODY:
        raise BundleMalformed("identity/private_key.bin (sealed) has the wrong length")
    opslimit, memlimit = _LIMITS.unpack_from(body)
    if not (_ARGON.OPSLIMIT_MIN <= opslimit <= MAX_OPSLIMIT and _ARGON.MEMLIMIT_MIN <= memlimit <= MAX_MEMLIMIT):
        raise BundleMalformed("identity/private_key.bin names argon2id limits outside what spl accepts")
    if not passphrase:
        raise BundleSignatureInvalid(
            "the bundle's private key is sealed with a passphrase; pass it with --passphrase-file"
        )
    salt = body[_LIMITS.size : _LIMITS.size + SALT_BYTES]
    key = _ARGON.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(body[_LIMITS.size + SALT_BYTES :]))
    except nacl.exceptions.CryptoError:
        raise BundleSignatureInvalid(
            "wrong passphrase: the sealed private key does not open with it; check --passphrase-file"
        ) from None


def did_document(identity: Identity) -> dict[str, Any]:
    """The W3C DID document of the instance's did:key (public; what ``identity/did_document.json`` holds)."""
    return _document_of(identity.did)


def _document_of(did: str) -> dict[str, Any]:
    """A did:key's document is a function of the DID alone, so a reader rebuilds it rather than trust it."""
    multibase = did[len("did:key:") :]
    method = f"{did}#{multibase}"  # the did:key method names its one key by its multibase value
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/ed25519-2020/v1"],
        "id": did,
        "verificationMethod": [
            {
                "id": method,
                "type": "Ed25519VerificationKey2020",
                "controller": did,
                "publicKeyMultibase": multibase,
            }
        ],
        "authentication": [method],
        "assertionMethod": [method],
    }


def check_identity(
    document: bytes, seed: bytes | None, *, source_did: str, signing_key: str | None = None
) -> Identity | None:
    """The bundle's identity, when the DID document, the seed and the manifest's ``source_did`` agree.

    ``seed`` None (a ``--no-identity`` bundle) checks only the document and returns None. The
    document must be exactly what :func:`did_document` writes for ``source_did``: nothing in it is
    taken on trust, since the DID alone determines it.
    """
    if len(document) > MAX_DID_DOCUMENT_BYTES:
        raise BundleMalformed("identity/did_document.json is too large")
    try:
        parsed = msgspec.json.decode(document)
    except (msgspec.DecodeError, ValueError, RecursionError):
        raise BundleMalformed("identity/did_document.json is not JSON") from None
    doc_did = parsed.get("id") if isinstance(parsed, dict) else None
    if not isinstance(doc_did, str) or doc_did != source_did:
        raise BundleSignatureInvalid("identity/did_document.json names a different DID than the manifest's source_did")
    if parsed != _document_of(source_did):
        raise BundleMalformed("identity/did_document.json is not the DID document of the source DID")
    if seed is None:
        return None
    if len(seed) != 32:
        raise BundleMalformed("identity/private_key.bin does not hold a 32-byte Ed25519 seed")
    identity = Identity(seed)
    if identity.did != (signing_key or source_did):
        raise BundleSignatureInvalid("the bundle's private key is not the key that signed it")
    return identity


# -- records -------------------------------------------------------------------------------------


def check_record_file(path: str, data: bytes, *, max_bytes: int = DEFAULT_MAX_BODY + RECORD_FILE_OVERHEAD) -> Candidate:
    """The verified record a ``records/…`` file holds, ready for the writer.

    It is verified here (:func:`spl.core.verify.verify_pulled`: id recomputed, signature checked)
    because the issue refuses the whole bundle on any bad record, and the answer should name the
    file. The thread and id must also equal those its path spells. ``max_bytes`` is the importer's
    bound (its ``max_body_bytes`` plus :data:`RECORD_FILE_OVERHEAD`).
    """
    thread, record_id = parse_record_path(path)
    if len(data) > max_bytes:
        raise BundleMalformed(f"{path} is larger than {max_bytes} bytes; raise max_body_bytes to import it")
    try:
        raw = msgspec.json.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):
        raise BundleMalformed(f"{path} is not a JSON record") from None
    outcome = verify_pulled(raw)
    if not isinstance(outcome, Candidate):
        if outcome.code == "SIGNATURE_INVALID":
            raise BundleSignatureInvalid(f"{path}: {outcome.reason}")
        raise BundleMalformed(f"{path}: {outcome.code}: {outcome.reason}")
    if outcome.envelope.id != record_id or outcome.envelope.thread != thread:
        raise BundleMalformed(f"{path} holds record {outcome.envelope.id} of another thread or id than its path")
    return outcome
