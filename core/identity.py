"""Ed25519 identities in W3C ``did:key`` form, and record/manifest signatures.

Spec §15.12: a record's ``sig`` is Ed25519 over the 32 raw bytes of its id, encoded
base64url without padding; ``signer`` is the DID of the instance that first accepted it:
``did:key:z`` + base58-btc(0xed 0x01 + 32 public-key bytes).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import nacl.exceptions
import nacl.signing

__all__ = [
    "ED25519_MULTICODEC",
    "Identity",
    "InstanceIdentity",
    "b64url_decode",
    "b64url_encode",
    "did_from_public_key",
    "public_key_from_did",
    "verify_record_signature",
    "verify_signature",
]

ED25519_MULTICODEC = b"\xed\x01"
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {char: index for index, char in enumerate(_BASE58)}


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url in its one canonical spelling; raises ValueError on anything else.

    Strict on purpose: the lenient decoder skips characters outside the alphabet and ignores the unused low bits
    of the last character, so ``…Bg`` and ``…Bh`` were the same signature. A signature that verifies must be the
    only string that does, or one record could be stored and served under several ``sig`` spellings.
    """
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    padded = text + "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if b64url_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _base58_encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, remainder = divmod(number, 58)
        digits.append(_BASE58[remainder])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(digits))


def _base58_decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _BASE58_INDEX:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + _BASE58_INDEX[char]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading_ones = len(text) - len(text.lstrip("1"))
    return b"\0" * leading_ones + body


MAX_DID_KEY_DIGITS = 48  # base58 digits of the 34-byte multicodec key (47), with room to spare


def did_from_public_key(public_key: bytes) -> str:
    """The ``did:key`` of a 32-byte Ed25519 public key."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return "did:key:z" + _base58_encode(ED25519_MULTICODEC + public_key)


def public_key_from_did(did: str) -> bytes:
    """The Ed25519 public key inside a ``did:key``; raises ValueError for anything else."""
    if not isinstance(did, str) or not did.startswith("did:key:z"):
        raise ValueError("only did:key:z… (Ed25519) signers can be verified")
    # 34 bytes are at most 47 base58 digits. Checked before decoding: the decode is quadratic
    # in the length, and a signer comes from a peer (a 300 KB one used to cost 17 s of CPU).
    if len(did) > len("did:key:z") + MAX_DID_KEY_DIGITS:
        raise ValueError("did:key is too long to hold an Ed25519 public key")
    decoded = _base58_decode(did[len("did:key:z") :])
    if len(decoded) != 34 or not decoded.startswith(ED25519_MULTICODEC):
        raise ValueError("did:key does not hold an Ed25519 public key")
    return decoded[2:]


@functools.lru_cache(maxsize=4096)
def _verify_key(did: str) -> nacl.signing.VerifyKey:
    """Decoding a did:key costs more than checking a signature; a peer has few signers."""
    return nacl.signing.VerifyKey(public_key_from_did(did))


def verify_signature(did: str, message: bytes, signature_b64: str) -> bool:
    """True when ``signature_b64`` is a valid Ed25519 signature of ``message`` by ``did``."""
    try:
        key = _verify_key(did)
        key.verify(message, b64url_decode(signature_b64))
    except (ValueError, TypeError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def verify_record_signature(record_id: str, signer: str, sig: str) -> bool:
    """Check a record's ``sig`` (over the raw id bytes) against its ``signer``."""
    try:
        id_bytes = bytes.fromhex(record_id)
    except (ValueError, TypeError):
        return False
    if len(id_bytes) != 32:
        return False
    return verify_signature(signer, id_bytes, sig)


class _Keys(NamedTuple):
    signing_key: nacl.signing.SigningKey
    public_key: bytes
    did: str


class Identity:
    """An instance's Ed25519 keypair and the DID derived from it."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        signing_key = nacl.signing.SigningKey(seed)
        public_key = bytes(signing_key.verify_key)
        self._keys = _Keys(signing_key, public_key, did_from_public_key(public_key))

    @property
    def did(self) -> str:
        return self._keys.did

    @property
    def key_did(self) -> str:
        """The ``did:key`` of the key that signs now: a record's ``signer``. For a bare key, its DID."""
        return self._keys.did

    @property
    def public_key(self) -> bytes:
        return self._keys.public_key

    @classmethod
    def generate(cls) -> Identity:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The private seed. Never log it; it is written only to a 0600 file or a bundle."""
        return bytes(self._keys.signing_key)

    @property
    def fingerprint(self) -> str:
        """A short, public handle for the key (SHA-256 of the public key, 16 hex)."""
        return hashlib.sha256(self.public_key).hexdigest()[:16]

    def sign(self, message: bytes) -> str:
        """Ed25519 signature of ``message``, base64url without padding."""
        return b64url_encode(self._keys.signing_key.sign(message).signature)

    def sign_record_id(self, record_id: str) -> str:
        return self.sign(bytes.fromhex(record_id))

    def signed_id(self, record_id: str) -> tuple[str, str]:
        """``(signer, sig)`` of a record id, both from one key: a rotation in between cannot mismatch them."""
        keys = self._keys
        return keys.did, b64url_encode(keys.signing_key.sign(bytes.fromhex(record_id)).signature)

    def __repr__(self) -> str:  # never show the seed
        return f"Identity(did={self.did!r})"


class _Chain(NamedTuple):
    did: str  # the instance's identifier: its inception key's did:key, for life
    keys: tuple[str, ...]  # every key it signed with, inception first, current last
    statements: tuple[dict[str, Any], ...]  # the rotation chain linking them (spl.core.rotation)


class InstanceIdentity(Identity):
    """The running daemon's identity: ONE object every actor and route holds, whose key can change under it.

    ``spl import`` of a bundle that carries an identity makes the daemon sign as the bundle's DID from then on
    (:meth:`adopt`, issue 11), and ``spl identity rotate`` replaces the signing key while the instance keeps its
    identifier (:meth:`rotate`, issue 14). Every component was handed this object at start and reads ``did``,
    ``key_did`` or calls ``sign`` when it needs them, so a change is seen by all of them at once. Key and chain
    are swapped as one tuple (one reference assignment), so a signature made in a worker thread during the swap
    is made entirely with the old key or entirely with the new one; :meth:`signed_id` returns the signer with the
    signature so the two always match. What was derived from the old keys is rebuilt by the caller.

    ``did`` is the instance's identifier (the inception key's did:key: manifests, pairs, actor of its own
    records); ``key_did`` signs (a record's ``signer``); ``own_keys`` is every key of the chain, which is what
    "signed by this instance" means to a fold of its configuration.
    """

    def __init__(
        self,
        seed: bytes,
        *,
        did: str | None = None,
        keys: Sequence[str] = (),
        statements: Sequence[dict[str, Any]] = (),
    ) -> None:
        super().__init__(seed)
        keys = tuple(keys) or (self._keys.did,)
        self._state = (self._keys, _Chain(did or keys[0], keys, tuple(statements)))

    @property  # type: ignore[override]
    def _keys(self) -> _Keys:
        return self._state[0]

    @_keys.setter
    def _keys(self, keys: _Keys) -> None:  # Identity.__init__ sets it once, before the chain exists
        self._state = (keys, _Chain(keys.did, (keys.did,), ()))

    @property
    def did(self) -> str:
        return self._state[1].did

    @property
    def own_keys(self) -> frozenset[str]:
        """Every key this instance signed with: a record signed by any of them is its own."""
        return frozenset(self._state[1].keys)

    @property
    def keys(self) -> tuple[str, ...]:
        return self._state[1].keys

    @property
    def statements(self) -> tuple[dict[str, Any], ...]:
        return self._state[1].statements

    def adopt(self, identity: Identity) -> None:
        """Sign as ``identity`` from now on: its key and DID, and its rotation chain when it is an instance's (an
        import of a rotated instance). One reference assignment."""
        if isinstance(identity, InstanceIdentity):
            self._state = identity._state
            return
        keys = identity._keys
        self._state = (keys, _Chain(keys.did, (keys.did,), ()))

    def rotate(self, identity: Identity, statement: dict[str, Any]) -> None:
        """Sign with ``identity``'s key from now on, for the same identifier: ``statement`` (signed by the key
        being retired, checked by the caller) links it to the chain. One reference assignment."""
        chain = self._state[1]
        self._state = (
            identity._keys,
            _Chain(chain.did, (*chain.keys, identity._keys.did), (*chain.statements, statement)),
        )

    def __repr__(self) -> str:  # never show the seed
        return f"InstanceIdentity(did={self.did!r}, key={self.key_did!r})"
