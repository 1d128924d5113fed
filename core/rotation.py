"""Identity rotation: the signed chain that links an instance's identifier to its current key. Pure: no I/O.

An instance is named, for life, by the ``did:key`` of its first key (its *inception* key; docs/identity.md says
why). ``spl identity rotate`` replaces the signing key and writes a *rotation statement*, signed by the **old**
key, naming the new one::

    {"object": "identity_rotation", "version": "1", "did": <identifier>, "seq": 1,
     "previous_key": <did:key of the old key>, "next_key": <did:key of the new key>,
     "rotated_at": "2026-11-30T23:50:00Z", "signature": <Ed25519 by previous_key, base64url>}

The statements in order form the chain: step 1 is signed by the inception key, step *n* by the key step *n-1*
named. A peer that pinned only the identifier (the inception key) can so verify every step by itself, and learn
each key the instance has signed with. The chain travels in the signed federation manifest and is kept in the
home (``keys/rotations.json``) and, as a record, on ``th_instance_registry``.

:func:`verify_chain` refuses, with a reason, a forged step, a step signed by the wrong key, a reordered or
renumbered chain, a key used twice, a fork (two successors of one key: SSB's fork, which would let whoever holds
an old key mint a second history), and a chain that does not start at the pinned identifier.
:func:`check_extends` refuses a chain that does not extend what a peer already saw (a fork across time, or a
rollback to an older manifest).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from spl.core.canonical import canonical_json
from spl.core.errors import SplError
from spl.core.identity import Identity, public_key_from_did, verify_signature
from spl.core.text import printable

__all__ = [
    "MAX_ROTATIONS",
    "ROTATION_KIND",
    "RotationInvalid",
    "check_extends",
    "key_windows",
    "own_keys",
    "owns",
    "pinned_keys",
    "rotation_statement",
    "verify_chain",
]

MAX_ROTATIONS = 64  # a peer's chain is hostile input: bounded before any signature is checked
ROTATION_KIND = "core.identity.rotation.v1"  # the record on th_instance_registry that carries a statement
_FIELDS = frozenset({"object", "version", "did", "seq", "previous_key", "next_key", "rotated_at", "signature"})
_MAX_TEXT = 128  # every string field is a did:key (≤ 57), a time (20) or a signature (86)


class RotationInvalid(SplError):
    """A rotation chain that does not link the identifier to the key that signs now; the message says why."""

    status = 400
    type = "invalid_request_error"
    code = "ROTATION_INVALID"


def _show(value: object) -> str:
    return printable(str(value), 80)


def rotation_statement(old: Identity, *, did: str, seq: int, next_key: str, rotated_at: str) -> dict[str, Any]:
    """The statement, signed by ``old`` (the key being retired), that ``next_key`` signs for ``did`` from now on."""
    public_key_from_did(next_key)  # a key we could not verify with could never be followed
    body: dict[str, Any] = {
        "object": "identity_rotation",
        "version": "1",
        "did": did,
        "seq": seq,
        "previous_key": old.did,
        "next_key": next_key,
        "rotated_at": rotated_at,
    }
    body["signature"] = old.sign(canonical_json(body))
    return body


def _moment(value: object, step: int) -> float:
    if isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.timestamp()
    raise RotationInvalid(f"rotation step {step}: rotated_at is not an RFC 3339 time with a zone")


def _shape(statement: object, step: int) -> Mapping[str, Any]:
    if not isinstance(statement, Mapping):
        raise RotationInvalid(f"rotation step {step} is not an object")
    if set(statement) != _FIELDS:
        raise RotationInvalid(
            f"rotation step {step} has fields {sorted(_show(key) for key in statement)[:10]}, "
            f"not exactly {sorted(_FIELDS)}"
        )
    if statement["object"] != "identity_rotation" or statement["version"] != "1":
        raise RotationInvalid(f"rotation step {step} is not an identity_rotation version 1")
    for name in ("did", "previous_key", "next_key", "rotated_at", "signature"):
        value = statement[name]
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            raise RotationInvalid(f"rotation step {step}: {name} is not a string of at most {_MAX_TEXT} characters")
    seq = statement["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq != step:
        raise RotationInvalid(
            f"rotation step {step} carries seq {_show(seq)}: the chain is reordered or a step is missing"
        )
    return statement


def verify_chain(identifier: str, statements: object) -> tuple[str, ...]:
    """The keys ``identifier`` has signed with, inception first and current last; RotationInvalid otherwise.

    ``identifier`` is the instance's ``did:key`` as pinned (config ``instance.did``, a pair's ``peer_did``);
    ``statements`` the chain as received (an empty chain: the identifier's own key is the only one).
    """
    try:
        public_key_from_did(identifier)
    except ValueError as exc:
        raise RotationInvalid(f"the identifier {_show(identifier)} is not a did:key: {exc}") from None
    if not isinstance(statements, Sequence) or isinstance(statements, (str, bytes)):
        raise RotationInvalid("the rotation chain is not a list")
    if len(statements) > MAX_ROTATIONS:
        raise RotationInvalid(f"the rotation chain has {len(statements)} steps, more than {MAX_ROTATIONS}")
    checked = [_shape(statement, step) for step, statement in enumerate(statements, start=1)]
    successors: dict[str, int] = {}
    for step, statement in enumerate(checked, start=1):
        earlier = successors.setdefault(statement["previous_key"], step)
        if earlier != step:
            raise RotationInvalid(
                f"fork: key {_show(statement['previous_key'])} names two successors (steps {earlier} and {step}); "
                "whoever holds that retired key tried to write a second history: trust neither"
            )
    keys = [identifier]
    last = float("-inf")
    for step, statement in enumerate(checked, start=1):
        if statement["did"] != identifier:
            raise RotationInvalid(
                f"rotation step {step} is for {_show(statement['did'])}, not for {_show(identifier)}: "
                "the chain does not start at the pinned identifier"
            )
        if statement["previous_key"] != keys[-1]:
            raise RotationInvalid(
                f"rotation step {step} retires {_show(statement['previous_key'])}, but the key current after step "
                f"{step - 1} is {_show(keys[-1])}: the chain is reordered, or does not start at the identifier"
            )
        unsigned = {name: value for name, value in statement.items() if name != "signature"}
        if not verify_signature(statement["previous_key"], canonical_json(unsigned), statement["signature"]):
            raise RotationInvalid(
                f"rotation step {step}'s signature does not verify against the key it retires "
                f"({_show(statement['previous_key'])}): it is forged, altered, or signed by the wrong key"
            )
        try:
            public_key_from_did(statement["next_key"])
        except ValueError as exc:
            raise RotationInvalid(f"rotation step {step} names a next_key that is not a did:key: {exc}") from None
        if statement["next_key"] in keys:
            raise RotationInvalid(
                f"rotation step {step} names {_show(statement['next_key'])}, a key the chain already retired: "
                "a key is never used twice"
            )
        moment = _moment(statement["rotated_at"], step)
        if moment < last:
            raise RotationInvalid(f"rotation step {step} is dated before step {step - 1}: the chain is reordered")
        last = moment
        keys.append(statement["next_key"])
    return tuple(keys)


def check_extends(known: Sequence[str], keys: Sequence[str], *, who: str) -> None:
    """``keys`` (a chain just verified) must extend ``known`` (the keys already pinned for ``who``).

    Raises RotationInvalid for a fork (the histories part) or a rollback (fewer keys than already proven: an old
    manifest replayed, or a peer restored from a backup taken before its rotation).
    """
    if list(keys[: len(known)]) == list(known):
        return
    if list(known[: len(keys)]) == list(keys):
        raise RotationInvalid(
            f"{who} serves a rotation chain of {len(keys)} key(s) while it already proved {len(known)}: an old "
            "manifest replayed, or the peer was restored from before its rotation; it must serve its current chain"
        )
    raise RotationInvalid(
        f"{who} serves a rotation chain that forks from the one it proved before (key {len(known)} was "
        f"{_show(known[-1])}): someone holding a retired key wrote a second history; re-pair only once the peer's "
        "operator confirms its current key"
    )


def key_windows(keys: Sequence[str], statements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's ``keys``: each key with the window it signed in (``valid_until`` None: the current key).

    ``statements`` is the chain :func:`verify_chain` accepted for ``keys``; the inception key's ``valid_from`` is
    unknown (None).
    """
    windows = []
    for index, key in enumerate(keys):
        windows.append(
            {
                "id": key,
                "valid_from": statements[index - 1]["rotated_at"] if 0 < index <= len(statements) else None,
                "valid_until": statements[index]["rotated_at"] if index < len(statements) else None,
            }
        )
    return windows


def own_keys(identity: object) -> frozenset[str] | str:
    """What "signed by this instance" means for ``identity``: every key of an ``InstanceIdentity``'s chain, or the
    one DID of a bare key (tests hand actors an ``Identity``)."""
    keys = getattr(identity, "own_keys", None)
    return keys if isinstance(keys, frozenset) else str(getattr(identity, "did", ""))


def pinned_keys(manifest: object, did: str) -> tuple[str, ...]:
    """The keys a stored snapshot of a peer's manifest proved for ``did`` (current last): what a pair pinned.

    The snapshot was verified when it was recorded; one from before rotation existed, or one that no longer
    verifies (it never should), pins ``did``'s own key only.
    """
    if isinstance(manifest, Mapping):
        try:
            return verify_chain(did, manifest.get("rotations", []))
        except RotationInvalid:
            pass
    return (did,)


def owns(own: str | Collection[str] | None, signer: object) -> bool:
    """Whether a record signed by ``signer`` was signed by this instance, whose keys are ``own``.

    ``own`` is every key of the instance's chain (a rotated steward keeps its freeze, registries and pairs); a
    single DID is accepted where only one key ever existed. None owns nothing.
    """
    if own is None or not isinstance(signer, str):
        return False
    return signer == own if isinstance(own, str) else signer in own
