"""Device pairing (``spl pair``, docs/pairing.md): one-time codes, their lifetime, and the redeem rate limit.

A pairing lets a second device get a token of its own without anyone copying a bearer token between
machines: the operator asks the instance for a pairing (a device name and the scopes it may have), the
instance answers with a **one-time code**, and the device trades the code for its token on an open
route. Everything here is pure (no I/O, no clock: times are passed in); the routes
(``spl.transport.routes_pairing``) keep the book in memory and the file (``spl.store.pairing``) durable.

The rules:

- A code is 16 characters of Crockford's base32 (80 random bits), shown as four groups of four
  (``7KQ4-M2XD-…``). Only its SHA-256 is kept (as for tokens); a code is found by its hash.
- A code is **single use** and **expires** (10 minutes unless the operator says otherwise, at most a day).
- A failed redeem (a wrong, malformed, expired, used or revoked code) costs a token from two buckets, the
  caller's and everyone's (:class:`RedeemLimiter`); an empty bucket answers 429 with ``Retry-After``.
  With at most :data:`MAX_PENDING` codes alive, each guess hits one with probability at most
  64 / 2**80, about 5e-23; at the global ceiling of 30 guesses a minute that is about 1e-15 in a year.
- Device names are short, printable and unique among the pairings that still matter (a pending code or a
  redeemed device whose token is live); ``spl pair revoke NAME`` finds the pairing by its name.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from spl.core import tokens
from spl.core.errors import Conflict, InvalidRequest, NotFound, SplError

__all__ = [
    "ALPHABET",
    "CODE_BITS",
    "CODE_LENGTH",
    "DEFAULT_TTL",
    "MAX_PAIRINGS",
    "MAX_PENDING",
    "MAX_TTL",
    "MIN_TTL",
    "Pairing",
    "PairingBook",
    "PairingRateLimited",
    "RedeemLimiter",
    "TokenBucket",
    "code_hash",
    "deep_link",
    "device_token_label",
    "format_code",
    "new_code",
    "parse_code",
    "validate_device_name",
    "validate_link_url",
    "validate_pairing_scopes",
    "validate_ttl",
]

# Crockford's base32: digits and letters without I, L, O and U, so a code read aloud or typed from a
# screen has no 1/I/L or 0/O to confuse (the parser maps those back), and no accidental word.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 16
CODE_BITS = CODE_LENGTH * 5  # 80
GROUP = 4
MAX_CODE_TEXT = 64  # what the parser reads at most: 16 characters plus separators and spaces, with room
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_SEPARATORS = str.maketrans("", "", "- ")

DEFAULT_TTL = 600.0  # seconds: ten minutes, time to pick up the other device
MIN_TTL = 1.0
MAX_TTL = 86_400.0  # a day: a code that lives longer is a password, not a one-time code
MAX_PENDING = 64  # codes alive at once (the guessing figures in the module docstring assume this)
MAX_PAIRINGS = 256  # pairings kept in all (live devices and their history)

MAX_DEVICE_NAME = 64
_DEVICE_NAME = re.compile(r"\A[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?\Z")
MAX_DEVICE_LABEL = 48  # the device's own words at redeem (its hostname…), kept beside its name
MAX_LINK_URL = 512

Status = Literal["pending", "redeemed", "expired", "revoked"]


class PairingRateLimited(SplError):
    """429: too many failed redeems lately, from this address or from everyone; ``retry_after`` in seconds."""

    status = 429
    type = "rate_limit_error"
    code = "PAIRING_RATE_LIMITED"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


# -- codes -------------------------------------------------------------------------------


def new_code() -> str:
    """A fresh code: :data:`CODE_LENGTH` characters of :data:`ALPHABET`, 80 bits from ``secrets``."""
    value = secrets.randbits(CODE_BITS)
    return "".join(ALPHABET[(value >> (5 * index)) & 31] for index in range(CODE_LENGTH))


def format_code(code: str) -> str:
    """The canonical code in groups of four, as the operator reads it out: ``ABCD-EFGH-JKMN-PQRS``."""
    return "-".join(code[index : index + GROUP] for index in range(0, len(code), GROUP))


def parse_code(text: object) -> str | None:
    """The canonical code (16 characters of :data:`ALPHABET`) in ``text``, or None when it holds none.

    Forgiving where a person errs and strict everywhere else: case is ignored, dashes and spaces
    anywhere are dropped, and the lookalikes O, I and L read as 0, 1 and 1. Anything longer than
    :data:`MAX_CODE_TEXT` characters is refused before it is looked at.
    """
    if not isinstance(text, str) or len(text) > MAX_CODE_TEXT or not text.isascii():
        return None
    code = text.translate(_SEPARATORS).upper().translate(_LOOKALIKES)
    if len(code) != CODE_LENGTH or any(char not in ALPHABET for char in code):
        return None
    return code


def code_hash(code: str) -> str:
    """What the instance keeps of a code: its SHA-256, hex. 80 random bits need no slow hash."""
    return hashlib.sha256(("spl-pairing:" + code).encode("ascii")).hexdigest()


# -- what an operator asks for ------------------------------------------------------------


def validate_device_name(name: object) -> str:
    """A device name as given (``laptop``, ``Alice's phone`` is refused: letters, digits, ``. _ -`` and spaces)."""
    if not isinstance(name, str) or not _DEVICE_NAME.fullmatch(name):
        raise InvalidRequest(
            f"device must be 1-{MAX_DEVICE_NAME} characters: ASCII letters and digits, and '.', '_', '-' or spaces "
            'inside, such as "laptop" or "iphone-15"',
            code="INVALID_DEVICE_NAME",
        )
    return name


def validate_pairing_scopes(scopes: object, granted: Iterable[str]) -> list[str]:
    """The scopes a pairing asks for: known, at least one, and each held by the caller who asks.

    A caller can hand a device no more than it holds itself (``admin`` holds every scope).
    """
    if not isinstance(scopes, list) or not scopes or not all(isinstance(scope, str) for scope in scopes):
        raise InvalidRequest(
            'scopes must be a non-empty list such as ["records:read", "records:write"]', code="INVALID_SCOPES"
        )
    unknown = tokens.unknown_scopes(scopes)
    if unknown:
        raise InvalidRequest(
            f"unknown scope(s) {', '.join(unknown[:5])}; choose from: {', '.join(tokens.SCOPES)}",
            code="INVALID_SCOPES",
        )
    held = frozenset(granted)
    beyond = [scope for scope in scopes if not tokens.allows(held, scope)]
    if beyond:
        raise InvalidRequest(
            f"a device cannot get scopes you do not hold ({', '.join(beyond)}); ask with fewer scopes or as an admin",
            code="SCOPE_NOT_HELD",
            status=403,
        )
    return sorted(set(scopes))


def validate_ttl(ttl: object) -> float:
    """How long a code lives, in seconds: :data:`MIN_TTL` to :data:`MAX_TTL`."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidRequest("ttl_secs must be a number of seconds, such as 600", code="INVALID_TTL")
    if not MIN_TTL <= ttl <= MAX_TTL:  # compared as given: a huge int never becomes a float (OverflowError); NaN fails
        raise InvalidRequest(
            f"ttl_secs (`spl pair --ttl`) must be between {MIN_TTL:.0f} and {MAX_TTL:.0f} seconds (a day); "
            "the default is ten minutes",
            code="INVALID_TTL",
        )
    return float(ttl)


def validate_link_url(url: object) -> str:
    """The URL a device should use (http or https, printable ASCII, at most :data:`MAX_LINK_URL` characters)."""
    problem = 'url must be the http(s) URL the device reaches this instance at, such as "https://spl.example:9100"'
    if not isinstance(url, str) or not 0 < len(url) <= MAX_LINK_URL or not url.isascii() or not url.isprintable():
        raise InvalidRequest(problem, code="INVALID_URL")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidRequest(problem, code="INVALID_URL") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in url:
        raise InvalidRequest(problem, code="INVALID_URL")
    return url


def validate_device_label(label: object) -> str:
    """The device's own description at redeem (its hostname): a token label, at most :data:`MAX_DEVICE_LABEL`."""
    text = tokens.validate_label(label)
    if len(text) > MAX_DEVICE_LABEL or not text.isprintable():
        # Stricter than a token label: a stranger writes this one, so no bidi overrides or invisible characters.
        raise InvalidRequest(
            f'label must be at most {MAX_DEVICE_LABEL} printable characters, such as "alice\'s laptop"',
            code="INVALID_LABEL",
        )
    return text


def device_token_label(name: str, label: str) -> str:
    """The label of a device's token, as ``spl token list`` shows it: ``device:laptop`` (plus the device's words)."""
    return f"device:{name}" + (f" ({label})" if label else "")


def deep_link(url: str, code: str) -> str:
    """``syncropel://pair?url=<percent-encoded URL>&code=<code in groups>``: what the QR code carries."""
    return f"syncropel://pair?url={quote(url, safe='')}&code={format_code(code)}"


# -- the book ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """One device's pairing: asked for by an operator, redeemed once by the device, revocable on its own."""

    device: str
    code_hash: str
    scopes: tuple[str, ...]
    url: str
    created_at: float
    expires_at: float
    redeemed_at: float | None = None
    revoked_at: float | None = None
    token_id: str | None = None  # the device's token, once redeemed (its id only: the plaintext went to the device)
    device_label: str = ""

    def status(self, now: float) -> Status:
        """Revocation wins, then redemption; an unredeemed code past ``expires_at`` is expired."""
        if self.revoked_at is not None:
            return "revoked"
        if self.redeemed_at is not None:
            return "redeemed"
        return "expired" if now >= self.expires_at else "pending"

    def to_wire(self, now: float) -> dict[str, Any]:
        """What ``GET /v1/pairings`` shows: never the code or its hash."""
        return {
            "object": "pairing",
            "device": self.device,
            "status": self.status(now),
            "scopes": list(self.scopes),
            "url": self.url,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "redeemed_at": self.redeemed_at,
            "revoked_at": self.revoked_at,
            "token_id": self.token_id,
            "device_label": self.device_label,
        }


@dataclass(frozen=True)
class PairingBook:
    """Every pairing by device name; each change returns a new book (the routes save it, then swap it in)."""

    pairings: dict[str, Pairing] = field(default_factory=dict)

    def listing(self) -> list[Pairing]:
        return sorted(self.pairings.values(), key=lambda pairing: pairing.created_at)

    def get(self, device: str) -> Pairing:
        pairing = self.pairings.get(device)
        if pairing is None:
            shown = repr(device[:MAX_DEVICE_NAME]) + ("…" if len(device) > MAX_DEVICE_NAME else "")  # a URL's worth
            raise NotFound(f"no pairing for device {shown}; list them with `spl pair list`", code="PAIRING_NOT_FOUND")
        return pairing

    def create(self, pairing: Pairing, *, live_token: bool) -> PairingBook:
        """Add ``pairing``; ``live_token`` says whether the token of an earlier pairing of that name still works.

        A name is free again once its code expired unredeemed, or its pairing (or only its token) was
        revoked: the old entry is replaced (its token's record stays in the token list). The book keeps at
        most :data:`MAX_PENDING` live codes and :data:`MAX_PAIRINGS` entries, dropping the oldest finished
        ones (expired or revoked) first.

        Raises:
            Conflict: 409 ``PAIRING_EXISTS`` (the name is in use) or ``TOO_MANY_PAIRINGS``.
        """
        now = pairing.created_at
        earlier = self.pairings.get(pairing.device)
        if earlier is not None:
            state = earlier.status(now)
            if state == "pending" or (state == "redeemed" and live_token):
                where = "waiting to redeem its code" if state == "pending" else "paired"
                raise Conflict(
                    f"device {pairing.device!r} is already {where}; "
                    f"revoke it first (`spl pair revoke {pairing.device}`) or choose another name",
                    code="PAIRING_EXISTS",
                )
        kept = {name: entry for name, entry in self.pairings.items() if name != pairing.device}
        if sum(1 for entry in kept.values() if entry.status(now) == "pending") >= MAX_PENDING:
            raise Conflict(
                f"{MAX_PENDING} pairing codes are waiting to be redeemed already; revoke the ones nobody will use "
                "(`spl pair list`, `spl pair revoke NAME`) or let them expire",
                code="TOO_MANY_PAIRINGS",
            )
        finished = sorted(
            (entry for entry in kept.values() if entry.status(now) in ("expired", "revoked")),
            key=lambda entry: entry.created_at,
        )
        while len(kept) >= MAX_PAIRINGS and finished:
            del kept[finished.pop(0).device]
        if len(kept) >= MAX_PAIRINGS:
            raise Conflict(
                f"{MAX_PAIRINGS} devices are paired already; revoke the ones no longer used (`spl pair revoke NAME`)",
                code="TOO_MANY_PAIRINGS",
            )
        kept[pairing.device] = pairing
        return PairingBook(kept)

    def find_code(self, hashed: str) -> Pairing | None:
        """The pairing whose code hashes to ``hashed`` (at most one: 80 random bits do not collide)."""
        return next((entry for entry in self.pairings.values() if entry.code_hash == hashed), None)

    def redeem(
        self, code: str | None, now: float, token_id: str, device_label: str = ""
    ) -> tuple[PairingBook, Pairing]:
        """The book with ``code``'s pairing redeemed for the token ``token_id``, and that pairing.

        ``code`` is :func:`parse_code`'s answer (None: the text held no code). Every refusal is a
        failed redeem the caller counts against the rate limit.

        Raises:
            InvalidRequest: 400 ``INVALID_PAIRING_CODE`` (not a code at all).
            NotFound: 404 ``PAIRING_CODE_UNKNOWN``.
            Conflict: 409 ``PAIRING_CODE_USED``.
            SplError: 410 ``PAIRING_CODE_EXPIRED`` or ``PAIRING_REVOKED``.
        """
        if code is None:
            raise InvalidRequest(
                f"code must be the {CODE_LENGTH}-character pairing code `spl pair` printed, such as "
                "ABCD-EFGH-JKMN-PQRS (dashes and case do not matter)",
                code="INVALID_PAIRING_CODE",
            )
        pairing = self.find_code(code_hash(code))
        ask_again = "ask the operator of the instance for a new code (`spl pair --device NAME`)"
        if pairing is None:
            raise NotFound(f"no pairing has this code; check it for typos, or {ask_again}", code="PAIRING_CODE_UNKNOWN")
        state = pairing.status(now)
        if state == "redeemed":
            raise Conflict(f"this code was redeemed already (a code works once); {ask_again}", code="PAIRING_CODE_USED")
        if state == "revoked":
            raise SplError(f"this pairing was revoked; {ask_again}", code="PAIRING_REVOKED", status=410)
        if state == "expired":
            raise SplError(f"this code expired; {ask_again}", code="PAIRING_CODE_EXPIRED", status=410)
        redeemed = replace(pairing, redeemed_at=now, token_id=token_id, device_label=device_label)
        return PairingBook({**self.pairings, pairing.device: redeemed}), redeemed

    def revoke(self, device: str, now: float) -> tuple[PairingBook, Pairing]:
        """The book with ``device``'s pairing revoked (a revoked one keeps its first revocation time)."""
        pairing = self.get(device)
        if pairing.revoked_at is not None:
            return self, pairing
        revoked = replace(pairing, revoked_at=now)
        return PairingBook({**self.pairings, device: revoked}), revoked

    def put(self, pairing: Pairing) -> PairingBook:
        """The book with ``pairing`` as its device's entry (to undo a redeem whose token could not be stored)."""
        return PairingBook({**self.pairings, pairing.device: pairing})


# -- the redeem rate limit ----------------------------------------------------------------


@dataclass
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; times are the caller's (monotonic) seconds."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    def level(self, now: float) -> float:
        return min(self.capacity, self.tokens + max(0.0, now - self.updated) * self.rate)

    def take(self, now: float) -> float:
        """Take one token; 0.0 when taken, else the seconds until one is there (nothing taken)."""
        level = self.level(now)
        self.updated = max(self.updated, now)
        if level >= 1.0:
            self.tokens = level - 1.0
            return 0.0
        self.tokens = level
        return (1.0 - level) / self.rate

    def give_back(self, now: float) -> None:
        self.tokens = min(self.capacity, self.level(now) + 1.0)
        self.updated = max(self.updated, now)


PER_SOURCE_BURST, PER_SOURCE_RATE = 5.0, 5.0 / 60  # five attempts, then one every 12 s
GLOBAL_BURST, GLOBAL_RATE = 20.0, 30.0 / 60  # twenty attempts, then one every 2 s, whoever asks
MAX_SOURCES = 4096  # addresses remembered at once; a full bucket is the same as none, so those go first


class RedeemLimiter:
    """Two token buckets in front of every redeem: the source address's and a global one.

    Each attempt takes a token from both before the code is looked at (so a burst of parallel guesses
    cannot all pass one check), and a successful redeem gives them back: only failures count. The global
    bucket bounds guessing from many addresses; the per-source one keeps one noisy client from spending it
    for everyone. At most :data:`MAX_SOURCES` addresses are remembered: buckets that have refilled are
    forgotten first, then the oldest.
    """

    def __init__(
        self,
        *,
        per_source: tuple[float, float] = (PER_SOURCE_BURST, PER_SOURCE_RATE),
        overall: tuple[float, float] = (GLOBAL_BURST, GLOBAL_RATE),
        max_sources: int = MAX_SOURCES,
    ) -> None:
        self._per_source = per_source
        self._overall = TokenBucket(overall[0], overall[1], overall[0], -math.inf)
        self._sources: dict[str, TokenBucket] = {}
        self._max_sources = max_sources

    def attempt(self, source: str, now: float) -> None:
        """Take one attempt for ``source`` at ``now``.

        Raises:
            PairingRateLimited: 429; nothing was taken.
        """
        bucket = self._sources.get(source)
        if bucket is None:
            self._make_room(now)
            bucket = TokenBucket(self._per_source[0], self._per_source[1], self._per_source[0], now)
        wait = max(0.0, (1.0 - bucket.level(now)) / bucket.rate) if bucket.level(now) < 1.0 else 0.0
        if wait:
            raise PairingRateLimited(
                f"too many failed pairing attempts from this address; wait {math.ceil(wait)} s and check the code",
                wait,
            )
        wait = self._overall.take(now)
        if wait:
            raise PairingRateLimited(
                f"too many failed pairing attempts on this instance; wait {math.ceil(wait)} s and try again", wait
            )
        bucket.take(now)
        self._sources[source] = bucket

    def succeeded(self, source: str, now: float) -> None:
        """A redeem that worked: give back what its attempt took."""
        self._overall.give_back(now)
        bucket = self._sources.get(source)
        if bucket is not None:
            bucket.give_back(now)

    def sources(self) -> int:
        return len(self._sources)

    def _make_room(self, now: float) -> None:
        if len(self._sources) < self._max_sources:
            return
        for key in [key for key, bucket in self._sources.items() if bucket.level(now) >= bucket.capacity]:
            del self._sources[key]
        while len(self._sources) >= self._max_sources:
            del self._sources[next(iter(self._sources))]  # dicts keep insertion order: the oldest first
