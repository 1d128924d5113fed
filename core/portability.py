"""What ``spl export`` / ``spl import`` agree on besides the bundle's bytes (spec §9, issue 11). Pure.

:mod:`spl.core.bundle` fixes the archive (paths, digest chain, signed manifest, sealed key). This module
holds the rest of the import contract:

- the lines of ``federation/pairs.jsonl``, ``federation/sync_pairs.jsonl`` and ``tokens.jsonl`` — the
  only named files an import *applies* (pair cursors, and token hashes when the bundle carries them);
  everything else a steward is ("you": its pairs, grants, namespaces, engine config) is on its reserved
  threads and travels as records, so nothing is applied twice from two sources;
- the summary an import answers with, whose counts always add up
  (``records_inspected = inserted + deduplicated + skipped + failed``);
- the errors, each with the fix in its message.

Why an import never applies ``config.json``: the config of the steward being imported *into* (its port,
bind, CORS, auth) is what makes it reachable where it now runs; the source's values would break that.
The file travels so an operator can read what the source ran with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from spl.core.bundle import BundleMalformed
from spl.core.errors import Conflict, InvalidRequest
from spl.core.tokens import TokenInfo

__all__ = [
    "MAX_CURSOR",
    "ForeignTokens",
    "applies_instance_state",
    "ImportInProgress",
    "ImportRefused",
    "ImportSummary",
    "PairCursor",
    "cursor_line",
    "parse_cursor_lines",
    "parse_token_lines",
    "token_line",
]

MAX_CURSOR = 256  # spec §15.20: a pair's cursor is at most 256 printable ASCII characters
MAX_LINES = 1_000_000  # pairs and tokens are a handful each; a million lines is a damaged or hostile file


class ImportRefused(Conflict):
    """The store already holds records of its own: importing would mix two instances' histories."""

    code = "IMPORT_REFUSED"

    def __init__(self, own_records: int) -> None:
        super().__init__(
            f"import refused: local store has {own_records} records; pass --force-overwrite to import anyway "
            "(check `spl thread list` first: the bundle's records are added beside them, nothing is deleted)"
        )


class ForeignTokens(InvalidRequest):
    """Tokens of another instance, without its identity: importing them would hand that instance's holders this one."""

    code = "TOKENS_FROM_ANOTHER_INSTANCE"

    def __init__(self, source_did: str, local_did: str) -> None:
        super().__init__(
            f"import refused: the bundle carries tokens of {source_did} but not its identity, and this steward is "
            f"{local_did}; tokens travel only with the instance that minted them. Export again without "
            "--carry-tokens (or with the identity, to make this steward that instance)"
        )


def applies_instance_state(*, carries_identity: bool, source_did: str, local_did: str) -> bool:
    """Whether a bundle's per-instance state (carried tokens, pair cursors) may be applied here.

    Only when the importer is, or is about to become, the bundle's instance: it adopts the bundle's identity,
    or already holds it. Otherwise the tokens would let the bundle's author in (an admin token in a stranger's
    bundle is a backdoor), and the cursors would move pairs that are not the bundle's past records.
    """
    return carries_identity or source_did == local_did


class ImportInProgress(Conflict):
    code = "IMPORT_IN_PROGRESS"

    def __init__(self) -> None:
        super().__init__("another import is running on this steward; wait for it to finish, then retry")


@dataclass(frozen=True)
class PairCursor:
    """A pair's position in its peer's feed, as the source left it (the peer's opaque cursor)."""

    pair_id: str
    cursor: str


class _CursorLine(msgspec.Struct, forbid_unknown_fields=False):
    pair_id: str
    cursor: str | None = None


class _TokenLine(msgspec.Struct, forbid_unknown_fields=True):
    token_id: str
    env: str
    sa_id: str
    label: str
    scopes: list[str]
    created_at: float
    revoked_at: float | None = None
    expires_at: float | None = None
    pair_id: str | None = None
    peer_did: str | None = None
    target_namespace: str | None = None


_CURSOR_DECODER = msgspec.json.Decoder(_CursorLine)
_TOKEN_DECODER = msgspec.json.Decoder(_TokenLine)
_ENCODER = msgspec.json.Encoder(order="sorted")


def cursor_line(view: dict[str, Any], cursor: str | None) -> bytes:
    """One line of a pairs file: the pair as the operator sees it, plus the cursor its puller had reached."""
    return _ENCODER.encode({**view, "cursor": cursor}) + b"\n"


def _lines(data: bytes, path: str) -> list[bytes]:
    if data and not data.endswith(b"\n"):
        raise BundleMalformed(f"{path} does not end with a newline; the file is cut short")
    lines = data.split(b"\n")[:-1] if data else []
    if len(lines) > MAX_LINES:
        raise BundleMalformed(f"{path} has more than {MAX_LINES} lines")
    return lines


def _printable_ascii(text: str, limit: int) -> bool:
    return len(text) <= limit and text.isascii() and text.isprintable()


def parse_cursor_lines(data: bytes, path: str) -> list[PairCursor]:
    """The cursors a pairs file carries (lines without a cursor are skipped); :class:`BundleMalformed` otherwise."""
    cursors: list[PairCursor] = []
    for number, line in enumerate(_lines(data, path), 1):
        try:
            parsed = _CURSOR_DECODER.decode(line)
        except (msgspec.DecodeError, ValueError, RecursionError):
            raise BundleMalformed(f"{path} line {number} is not a pair object") from None
        if not _printable_ascii(parsed.pair_id, 64) or not parsed.pair_id:
            raise BundleMalformed(f"{path} line {number}: pair_id is not 1-64 printable ASCII characters")
        if parsed.cursor is None or parsed.cursor == "":
            continue
        if not _printable_ascii(parsed.cursor, MAX_CURSOR):
            raise BundleMalformed(f"{path} line {number}: the cursor is not at most {MAX_CURSOR} printable ASCII")
        cursors.append(PairCursor(parsed.pair_id, parsed.cursor))
    return cursors


def token_line(info: TokenInfo) -> bytes:
    """One line of ``tokens.jsonl``: a token's metadata and the id of its secret (a hash), never the token."""
    return (
        _ENCODER.encode(
            {
                "token_id": info.token_id,
                "env": info.env,
                "sa_id": info.sa_id,
                "label": info.label,
                "scopes": sorted(info.scopes),
                "created_at": info.created_at,
                "revoked_at": info.revoked_at,
                "expires_at": info.expires_at,
                "pair_id": info.pair_id,
                "peer_did": info.peer_did,
                "target_namespace": info.target_namespace,
            }
        )
        + b"\n"
    )


def parse_token_lines(data: bytes, path: str) -> list[TokenInfo]:
    """The token records of ``tokens.jsonl``, bounded field by field; :class:`BundleMalformed` otherwise."""
    infos: list[TokenInfo] = []
    for number, line in enumerate(_lines(data, path), 1):
        try:
            parsed = _TOKEN_DECODER.decode(line)
        except (msgspec.DecodeError, ValueError, RecursionError):
            raise BundleMalformed(f"{path} line {number} is not a token object") from None
        texts = [parsed.token_id, parsed.env, parsed.sa_id, parsed.label, *parsed.scopes]
        texts += [value for value in (parsed.pair_id, parsed.peer_did, parsed.target_namespace) if value is not None]
        if not all(_printable_ascii(text, 256) for text in texts) or len(parsed.scopes) > 64:
            raise BundleMalformed(f"{path} line {number}: a field is not at most 256 printable ASCII characters")
        infos.append(
            TokenInfo(
                parsed.token_id,
                parsed.env,
                parsed.sa_id,
                parsed.label,
                frozenset(parsed.scopes),
                parsed.created_at,
                parsed.revoked_at,
                expires_at=parsed.expires_at,
                pair_id=parsed.pair_id,
                peer_did=parsed.peer_did,
                target_namespace=parsed.target_namespace,
            )
        )
    return infos


@dataclass
class ImportSummary:
    """What an import did (or, with ``dry_run``, would do). The record counts always add up."""

    source_did: str
    bundle_sha256: str
    dry_run: bool
    records_inspected: int = 0
    records_inserted: int = 0
    records_deduplicated: int = 0
    records_skipped: int = 0  # the same (thread, actor, clock) is stored under another id here
    records_failed: int = 0  # always 0 today: one bad record refuses the whole bundle before anything is written
    refusals_by_reason: dict[str, int] = field(default_factory=dict)
    threads: int = 0
    federation_pairs: int = 0
    sync_pairs: int = 0
    consent_grants: int = 0
    namespaces: int = 0
    tokens: int = 0
    cursors: int = 0
    identity: str = "not included"  # "adopted" | "kept" (a --no-identity bundle) | "not included"
    identity_note: str = ""
    instance_did: str = ""

    def check(self) -> None:
        """The invariant every summary keeps (a failed check is a bug in the importer)."""
        parts = self.records_inserted + self.records_deduplicated + self.records_skipped + self.records_failed
        if parts != self.records_inspected:
            raise AssertionError(f"import counts do not add up: {parts} != {self.records_inspected}")

    def to_wire(self) -> dict[str, Any]:
        self.check()
        return {
            "object": "import_summary",
            "dry_run": self.dry_run,
            "source_did": self.source_did,
            "bundle_sha256": self.bundle_sha256,
            "signature": "valid",
            "records_inspected": self.records_inspected,
            "records_inserted": self.records_inserted,
            "records_deduplicated": self.records_deduplicated,
            "records_skipped": self.records_skipped,
            "records_failed": self.records_failed,
            "refusals_by_reason": dict(sorted(self.refusals_by_reason.items())),
            "threads": self.threads,
            "federation_pairs": self.federation_pairs,
            "sync_pairs": self.sync_pairs,
            "consent_grants": self.consent_grants,
            "namespaces": self.namespaces,
            "tokens": self.tokens,
            "cursors": self.cursors,
            "identity": self.identity,
            "identity_restored": self.identity == "adopted",
            "identity_note": self.identity_note,
            "instance_did": self.instance_did,
        }
