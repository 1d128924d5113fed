"""Federation pairs (``spl federation pair``): the handshake on both sides, the pair's lifecycle, and consent.

The pure rules live in ``spl.core``: the handshake documents (:mod:`spl.core.handshake`), the pair's
records and legal moves (:mod:`spl.core.federation_pairs`), grants and the filter
(:mod:`spl.core.consent`). This module is the thin loop around them that does the I/O: it signs and
commits records through :class:`~spl.actors.local.LocalRecords`, mints and revokes tokens through
the writer, reaches peers through the federation manager's peer clients, and runs each pair's
puller as a child of the manager's pair supervisor (the same :class:`~spl.actors.pair.PairActor` a
sync pair runs, reading the peer's namespace feed instead of one thread).

State is what the records say. Every change is recorded on ``th_federation_pairs`` (signed by this
instance) before it is acted on or answered, so a restart folds the records and carries on; only
this instance's records count (``fold_federation_pairs``), so a planted record changes nothing.

``degraded``, ``peer_manifest_changed`` and ``endpoint_moving`` are not recorded: they describe the
pair's health now (the puller's failures, the last refresh, a move not yet acknowledged), so they are
computed when the pair is shown.

A steward that answers at another URL than the one a peer knows (after ``spl import`` on another
machine) announces it: :meth:`FederationPairs.announcer` sends each such pair's peer a signed
``endpoint_moved`` notice, retried with backoff until the peer acknowledges it, and the peer
(:meth:`FederationPairs.on_endpoint_moved`) re-points the pair after probing both URLs
(docs/federation-pairs.md, "When a steward moves").
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import trio

from spl.actors.local import LocalRecords
from spl.actors.messages import Kick, Reply, Resume
from spl.actors.writer import WriterClient
from spl.core import tokens
from spl.core.consent import (
    CONSENT_THREAD,
    ConsentBook,
    Decision,
    Grant,
    decide,
    grant_body,
    new_grant_id,
    revoke_body,
    validate_grant_request,
)
from spl.core.errors import Conflict, InvalidRequest, NotFound, SplError
from spl.core.federation_pairs import (
    DEFAULT_FED_POLL,
    MAX_REASON,
    FederationPair,
    check_manifest_snapshot,
    fold_federation_pairs,
    local_pairs,
    maps_from_local,
    thread_allowed,
    transition,
    validate_thread_allow,
)
from spl.core.feed import ManifestInvalid, PeerError, PeerProtocolError
from spl.core.handshake import (
    TOKEN_SCOPES,
    WINDOW,
    BadHandshakeSignature,
    EndpointMoved,
    NonceReplayed,
    PairRequest,
    PairResponse,
    build_endpoint_moved,
    build_endpoint_moved_ack,
    build_notice,
    build_pair_request,
    build_pair_response,
    build_poll,
    check_endpoint_moved,
    check_endpoint_moved_ack,
    check_notice,
    check_pair_request,
    check_pair_response,
    check_poll,
    new_nonce,
    pair_id_for,
    unseal,
)
from spl.core.identity import Identity
from spl.core.manifest import manifest_keys, rfc3339, signed_manifest_did
from spl.core.pair_machine import ConfigChanged
from spl.core.pairs import (
    PAIRS_THREAD,
    PairConfig,
    PairStatus,
    is_pair_id,
    peer_address,
    validate_peer_url,
    validate_settings,
)
from spl.core.rotation import RotationInvalid, check_extends, own_keys, pinned_keys
from spl.core.text import printable
from spl.core.tokens import TokenInfo
from spl.store.database import ReadPool
from spl.store.queries import pair_cursors, thread_objects_with_seq

__all__ = ["FederationPairs", "ServePolicy"]

log = logging.getLogger("spl.federation.pairs")
_Checked = TypeVar("_Checked")

TOKEN_TTL = 90 * 86400.0
APPROVAL_POLL_EVERY = 2.0
APPROVAL_POLL_FOR = 60.0
INITIAL_SYNC_WAIT = 60.0
NOTIFY_DEADLINE = 10.0
MAX_PENDING = 64
MAX_PAIRS = 1000
PENDING_TTL = 86_400.0  # a pair request nobody approved or rejected within a day gives its place up
MAX_STREAMS_PER_PAIR = 2  # a peer needs one continuous feed; one more covers a reconnect racing the old one
# "rotations": the peer's rotation chain, so the pair pins every key the peer proved (spl.core.rotation).
MANIFEST_SNAPSHOT_KEYS = (
    "object",
    "manifest_version",
    "daemon",
    "federation",
    "advertises",
    "consent_policy",
    "rotations",
)
# Announcing a new endpoint (docs/federation-pairs.md, "When a steward moves").
ANNOUNCE_FIRST_RETRY = 5.0  # seconds after a failed notice; doubles up to ANNOUNCE_MAX_RETRY
ANNOUNCE_MAX_RETRY = 600.0
ANNOUNCE_DEADLINE = 30.0  # one notice, answer included: the peer probes two manifests before it answers
ANNOUNCE_PARALLEL = 8  # notices in flight at once (a daemon with many pairs tells them a few at a time)
ENDPOINT_SETTLE = 2.0  # at start, how long the announcer waits to be told the bound URL (endpoint_known)
PROBE_NEW_DEADLINE = 10.0  # the peer fetching the manifest at the announced endpoint
# A signed document that does not verify against a peer's pinned key makes us fetch that peer's manifest (it may
# have rotated its key): at most once per this many seconds per peer, so unsigned junk cannot drive our fetches.
KEY_RECHECK_EVERY = 30.0
PROBE_OLD_DEADLINE = 3.0  # ... and at the old one: silence this long counts as "not live"
DUPLICATE_MARK_FOR = 900.0  # a DUPLICATE_STEWARD mark lasts this long after the last notice that found one


class PeerRejected(SplError):
    """The peer answered the handshake with an error: its status and code are in the message."""

    status = 502
    type = "api_error"
    code = "PAIR_HANDSHAKE_REJECTED"


class PeerUnavailable(SplError):
    status = 502
    type = "api_error"
    code = "PEER_UNREACHABLE"


class ManifestRefused(SplError):
    status = 502
    type = "api_error"
    code = "MANIFEST_INVALID"


class PairingClosed(SplError):
    status = 403
    type = "permission_error"
    code = "PAIRING_CLOSED"


class PairRejected(SplError):
    status = 403
    type = "permission_error"
    code = "PAIR_REJECTED"


class PairPaused(SplError):
    status = 403
    type = "permission_error"
    code = "PAIR_PAUSED"


class TooManyPending(SplError):
    status = 429
    type = "rate_limit_error"
    code = "TOO_MANY_PENDING"


class DuplicateSteward(SplError):
    """Both the pair's old URL and the announced one answer with the peer's DID: two daemons run one identity."""

    status = 409
    type = "conflict_error"
    code = "DUPLICATE_STEWARD"


class EndpointUnverified(SplError):
    """The announced endpoint does not serve a valid manifest signed by the pair's peer DID (yet)."""

    status = 502
    type = "api_error"
    code = "ENDPOINT_UNVERIFIED"


@dataclass(frozen=True)
class ServePolicy:
    """What one requester may read from this steward's feeds, decided per record by :meth:`decision`.

    ``targets`` maps each namespace we serve to the requester's namespaces it lands in (a federation
    pair's maps, or the one ``target_namespace`` a sync pair names); ``version`` is the consent and
    pair-configuration version the page is served under (the cursor carries it).
    """

    targets: Mapping[str, tuple[str, ...]]  # a pair's: only its mapped namespaces are served
    thread_allow: tuple[str, ...]
    peer_did: str | None
    version: int
    consent: ConsentBook
    widened: Callable[[int], bool]
    pair_id: str | None = None
    every_namespace_to: str | None = None  # an unbound pull naming target_namespace: every namespace lands there

    def namespaces(self) -> list[str]:
        return sorted(self.targets)

    def decision(self, namespace: str, thread: str, now: float) -> tuple[Decision, str]:
        """Deliver, project or withhold one record — the widest any of its target namespaces allows — and the
        target namespace that decided it (where a projection is minted)."""
        targets = (self.every_namespace_to,) if self.every_namespace_to else self.targets.get(namespace)
        if not targets or not thread_allowed(self.thread_allow, thread):
            return Decision("withhold", frozenset(), None), ""
        best: tuple[Decision, str] | None = None
        for target in targets:
            found = decide(
                self.consent,
                record_namespace=namespace,
                target_namespace=target,
                thread=thread,
                peer_did=self.peer_did,
                now=now,
            )
            if found.action == "deliver":
                return found, target
            if found.action == "project" and (best is None or len(found.levels) > len(best[0].levels)):
                best = (found, target)
        return best or (Decision("withhold", frozenset(), None), "")


@dataclass
class FedView:
    """One federation pair as this daemon holds it: its recorded state and what is only true now."""

    pair: FederationPair
    seq: int = 0  # the sequence of the record that made ``pair`` current
    widened_seq: int = 0  # the last record that widened what we serve (maps, thread allow-list)
    status: PairStatus | None = None  # the puller's, while it runs
    started: bool = False
    overlay: str | None = None  # "degraded" or "peer_manifest_changed" found by a refresh
    overlay_reason: str = ""
    # The token minted at approval, kept in memory only until the peer first pulls with it: each of its polls
    # is answered with that same token (sealed anew), so a poll cannot churn the peer's credential.
    token_for_peer: str | None = field(default=None, repr=False)
    served_to: int = 0  # the highest sequence our feed has handed the peer
    served_at: float | None = None
    last_sync_at: float | None = None
    pulled_total: int = 0
    no_token: bool = False  # the puller waits: we hold no token of the peer's for this pair (after a move)
    # Announcing our new endpoint (the mover's side): one notice at a time per pair, retried with backoff.
    announce_lock: trio.Lock = field(default_factory=trio.Lock, repr=False)
    announce_at: float = -math.inf  # trio clock: when the next notice is due
    announce_delay: float = ANNOUNCE_FIRST_RETRY
    announce_error: str = ""  # the last notice's outcome, when it was not acknowledged
    announce_duplicate: bool = False  # ... and whether the peer answered DUPLICATE_STEWARD
    # The token announced with our endpoint, kept in memory for the retries of one announcement (never shown).
    moved_token: tuple[str, str, float] | None = field(default=None, repr=False)  # endpoint, token, expiry
    # The peer's side: when a notice last found the pair's peer live at two URLs, and why; a notice being probed.
    duplicate: tuple[float, str] | None = None
    probing: bool = False


Remember = Callable[[TokenInfo], None]
Forget = Callable[[str, float], None]


class FederationPairs:
    """Every federation pair of this daemon; owned by the federation manager, which runs the pullers."""

    def __init__(
        self,
        manager: Any,  # actors.federation.FederationManager (typed loosely: it imports this module)
        *,
        identity: Identity,
        local: LocalRecords,
        writer: WriterClient,
        pool: ReadPool,
        remember_token: Remember,
        forget_token: Forget,
        approval: Callable[[], str],
        degraded_after: float,
        endpoint: Callable[[], str],
        wall: Callable[[], float] = time.time,
        auto_namespaces: Sequence[str] = ("default",),
        min_peer_poll: float = 60.0,
    ) -> None:
        self.manager = manager
        self.identity = identity
        self.local = local
        self.writer = writer
        self.pool = pool
        self.remember_token = remember_token
        self.forget_token = forget_token
        self.approval = approval
        self.degraded_after = degraded_after
        self.auto_namespaces = frozenset(auto_namespaces)
        self.min_peer_poll = min_peer_poll
        self.endpoint = endpoint
        self.wall = wall
        self.pairs: dict[str, FedView] = {}
        self.consent = ConsentBook()
        self._changing = trio.Lock()
        self._granting = trio.Lock()
        self._keys_checked: dict[str, float] = {}  # peer DID -> trio time its manifest was last fetched for keys
        self._tokens: dict[str, TokenInfo] = {}  # our tokens for peers, by pair id (ids and metadata only)
        self._seen_nonces: dict[str, dict[str, float]] = {}  # per pair: polls' and notices' nonces in the window
        self._streams: dict[str, int] = {}  # continuous feeds open per pair (MAX_STREAMS_PER_PAIR)
        self._wake = trio.Event()  # set: the announcer looks at every pair again now
        self._endpoint_known = trio.Event()  # set: endpoint() returns the URL this daemon is bound to

    # -- start ------------------------------------------------------------------------------------------

    def load(self) -> tuple[list[tuple[FederationPair, int]], dict[str, str], ConsentBook]:
        """Fold ``th_federation_pairs`` and ``th_consent`` with the current identity (in a worker thread).

        Returns the pairs (each with the sequence of its latest record), the pull cursors and a new consent
        book; :meth:`start` takes all three, so a reload after an import replaces them at once.
        """
        consent = ConsentBook()
        with self.pool.connection() as connection:
            pair_records = thread_objects_with_seq(connection, PAIRS_THREAD)
            for seq, record in thread_objects_with_seq(connection, CONSENT_THREAD):
                consent.apply(record, seq, own_keys(self.identity))
            cursors = pair_cursors(connection)
        last_seq: dict[str, int] = {}
        for seq, record in pair_records:
            body = record.get("body")
            if isinstance(body, dict) and isinstance(body.get("pair_id"), str):
                last_seq[body["pair_id"]] = seq
        folded = fold_federation_pairs([record for _, record in pair_records], own_keys(self.identity))
        return [(pair, last_seq.get(pair_id, 0)) for pair_id, pair in folded.items()], cursors, consent

    async def start(
        self, folded: list[tuple[FederationPair, int]], cursors: dict[str, str], consent: ConsentBook
    ) -> None:
        """Hold the folded pairs and run their pullers; the announcer then tells peers of a new endpoint."""
        self.consent = consent
        for pair, seq in folded:
            view = FedView(pair, seq=seq, widened_seq=seq)
            self.pairs[pair.pair_id] = view
            if pair.state in ("active", "paused"):
                await self._start_puller(view, cursors.get(pair.pair_id, ""))
        self._wake.set()

    async def reload(
        self, folded: list[tuple[FederationPair, int]], cursors: dict[str, str], consent: ConsentBook
    ) -> None:
        """After an import: stop every puller, forget every pair, token and nonce held in memory, and start again
        from what the store now holds, under the current identity (the manager calls it, pullers stopped first)."""
        async with self._changing:
            for view in list(self.pairs.values()):
                await self._stop_puller(view)
            self.pairs.clear()
            self._tokens.clear()
            self._seen_nonces.clear()
            await self.start(folded, cursors, consent)

    # -- the puller ---------------------------------------------------------------------------------------

    def _puller_config(self, pair: FederationPair) -> PairConfig:
        peer_side = tuple(sorted(set(pair.peer_namespaces())))
        ours = tuple(sorted(set(pair.local_namespaces())))
        return PairConfig(
            pair_id=pair.pair_id,
            peer_did=pair.peer_did,
            peer_url=pair.peer_url,
            thread_id="",
            mode=pair.mode,
            poll_interval=pair.poll_interval,
            paused=pair.state == "paused",
            created_at=_rfc3339(pair.created_at) or "",
            namespaces=peer_side,
            accept_namespaces=tuple(sorted(set(peer_side) | set(ours))),
        )

    async def _start_puller(self, view: FedView, cursor: str = "") -> None:
        """Run the pair's puller from ``cursor``; without a token of the peer's (a moved steward, before the peer
        acknowledged its new endpoint) it does not run: the pair shows why, and the acknowledgement starts it."""
        config = self._puller_config(view.pair)
        view.status = PairStatus(config.pair_id, cursor=cursor)
        view.no_token = await trio.to_thread.run_sync(self.manager.tokens.read, config.pair_id) is None
        if view.no_token:
            return
        await self.manager.start_puller(config, view.status, on_committed=self._pulled)
        view.started = True

    async def _stop_puller(self, view: FedView) -> None:
        if view.started:
            await self.manager.stop_puller(view.pair.pair_id)
            view.started = False

    def _pulled(self, pair_id: str, count: int) -> None:
        view = self.pairs.get(pair_id)
        if view is not None:
            view.pulled_total += count
            view.last_sync_at = self.wall()

    async def _kick(self, view: FedView, *, wait: float) -> tuple[int, dict[str, int]]:
        """Pull now; wait up to ``wait`` seconds for the round to end. Returns what it stored and refused."""
        status = view.status
        if status is None or not view.started or view.pair.state != "active":
            return 0, {}
        pulled, refused = status.records_pulled, dict(status.records_refused)
        reply: Reply[Any] = Reply()
        try:
            self.manager.supervisor.inbox(view.pair.pair_id).send_nowait(Kick(reply))
        except (trio.WouldBlock, KeyError):
            return 0, {}
        with trio.move_on_after(wait):
            await reply.get()
        return status.records_pulled - pulled, {
            code: count - refused.get(code, 0)
            for code, count in status.records_refused.items()
            if count > refused.get(code, 0)
        }

    # -- persistence ------------------------------------------------------------------------------------

    async def _record(self, view: FedView | None, pair: FederationPair, kind: str) -> FedView:
        """Commit ``pair`` as a ``kind`` record (signed, acknowledged after COMMIT), then make it current."""
        accepted = await self.local.record_system(PAIRS_THREAD, pair.body(kind))
        if view is None:
            view = self.pairs[pair.pair_id] = FedView(pair)
        view.pair = pair
        view.seq = accepted.record.seq
        return view

    async def _mint_for_peer(
        self, pair_id: str, peer_did: str, now: float, previous: str | None = None
    ) -> tuple[str, TokenInfo]:
        """A token the peer pulls with: bound to this pair and the peer's DID, 90 days, stored hashed only."""
        minted = tokens.mint("fed", "sa_" + pair_id.removeprefix("pair_"))
        info = replace(
            TokenInfo.of_minted(minted, f"federation pair {pair_id}", list(TOKEN_SCOPES), now),
            expires_at=now + TOKEN_TTL,
            pair_id=pair_id,
            peer_did=peer_did,
        )
        old = self._tokens.get(pair_id)
        await self.writer.mint_token(info)
        self.remember_token(info)
        self._tokens[pair_id] = info
        # The token it replaces is revoked at issuance (the one in memory, or the one the pair's record names).
        for token_id in {old.token_id if old is not None else None, previous} - {None, info.token_id}:
            assert token_id is not None
            await self.writer.revoke_token(token_id, now)
            self.forget_token(token_id, now)
        return minted.plaintext, info

    async def _revoke_token(self, info: TokenInfo, now: float) -> None:
        await self.writer.revoke_token(info.token_id, now)
        self.forget_token(info.token_id, now)

    async def _revoke_pair_tokens(self, pair: FederationPair, now: float) -> None:
        info = self._tokens.pop(pair.pair_id, None)
        if info is not None:
            await self._revoke_token(info, now)
        elif pair.our_token_id:
            await self.writer.revoke_token(pair.our_token_id, now)
            self.forget_token(pair.our_token_id, now)
        await trio.to_thread.run_sync(self.manager.tokens.delete, pair.pair_id)

    # -- the initiator ------------------------------------------------------------------------------------

    async def initiate(self, payload: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """``spl federation pair <url>``: discover, verify, handshake, persist, first pull. 201, or 202 pending."""
        unknown = sorted(set(payload) - {"url", "maps", "mode", "poll_interval", "strict", "wait"})
        if unknown:
            raise InvalidRequest(
                f"unknown field(s) {', '.join(map(repr, unknown))}; send url and optionally maps, mode, "
                "poll_interval, strict, wait",
                code="INVALID_PAIR_REQUEST",
            )
        wait = payload.get("wait", APPROVAL_POLL_FOR)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= APPROVAL_POLL_FOR:
            raise InvalidRequest(
                f"wait must be the seconds to wait for a manual approval, 0 to {APPROVAL_POLL_FOR:g}",
                code="INVALID_PAIR_REQUEST",
            )
        url = validate_peer_url(payload.get("url"))
        strict = payload.get("strict", True)
        if not isinstance(strict, bool):
            raise InvalidRequest("strict must be true or false", code="INVALID_PAIR_REQUEST")
        mode, interval = validate_settings(
            payload.get("mode"), DEFAULT_FED_POLL if payload.get("poll_interval") is None else payload["poll_interval"]
        )
        local_maps = _local_maps(payload.get("maps"))
        if self._live_pairs() >= MAX_PAIRS:
            raise Conflict(f"this daemon holds {MAX_PAIRS} federation pairs; revoke some first", code="TOO_MANY_PAIRS")
        steps: list[dict[str, Any]] = []
        peer = self.manager.peer_client(url)
        now = self.wall()
        try:
            body = await peer.manifest_body()
            did, manifest = signed_manifest_did(body, where=url, now=now, strict=strict)
        except ManifestInvalid as exc:
            raise ManifestRefused(f"{exc} (manifest signature does not verify against advertised DID?)") from None
        except PeerError as exc:
            raise PeerUnavailable(f"could not fetch {printable(url, 120)}/.well-known/syncropel: {exc}") from None
        if check_manifest_snapshot(_snapshot(manifest)) is None:  # the pair keeps it in its record (16 KiB at most)
            raise ManifestRefused(f"peer at {printable(url, 120)} serves a manifest over 16 KiB; refusing it")
        steps.append({"ok": True, "line": "manifest fetched + signature verified"})
        if did == self.identity.did:
            raise InvalidRequest(f"{url} is this daemon: a pair joins two stewards", code="SELF_PAIR")
        for view in self.pairs.values():
            if view.pair.peer_did == did and view.pair.state != "revoked":
                raise Conflict(
                    f"pair {view.pair.pair_id} already joins this daemon to {did} ({view.pair.state}); "
                    f"see `spl federation show {view.pair.pair_id}`, or revoke it first",
                    code="PAIR_EXISTS",
                )
        pair_endpoint, peer_url = _manifest_endpoints(manifest, url)
        maps = maps_from_local(local_maps, "initiator")
        nonce = new_nonce()
        pair_id = pair_id_for(self.identity.did, did, nonce)
        async with self._changing:
            token, info = await self._mint_for_peer(pair_id, did, now)
            request = build_pair_request(
                self.identity,
                responder_did=did,
                initiator_url=self.endpoint(),
                maps=maps,
                mode=mode,
                poll_interval=interval,
                token=token,
                token_expires_at=now + TOKEN_TTL,
                now=now,
                nonce=nonce,
                responder_key=manifest_keys(manifest)[-1],  # verified with the manifest: its chain's current key
            )
            pair = FederationPair(
                pair_id=pair_id,
                role="initiator",
                peer_did=did,
                peer_url=peer_url,
                maps=maps,
                mode=mode,
                poll_interval=interval,
                state="establishing",
                state_reason="handshake sent",
                nonce=nonce,
                our_token_id=info.token_id,
                token_expires_at=now + TOKEN_TTL,
                peer_manifest=_snapshot(manifest),
                last_refresh_at=now,
                created_at=now,
                updated_at=now,
                our_endpoint=request["initiator_url"],  # what the peer now knows us by
            )
            view = await self._record(None, pair, "pair.handshake.v1")
        status, answer = await self._post(peer, pair_endpoint, request, pair)
        line = f"POST {urlsplit(pair_endpoint).path or '/'} → {status} {'OK' if status == 200 else 'Accepted'}"
        steps.append({"ok": True, "line": line})
        if answer.status == "pending":
            answer = await self._await_approval(peer, view, answer.poll_endpoint, float(wait)) or answer
        if answer.status == "pending":
            steps.append({"ok": False, "line": "waiting for the peer's operator to approve (spl aitl approve)"})
            return 202, {**self.describe(pair_id), "steps": steps, "initial_sync": {"records": 0}}
        await self._activate_initiator(view, answer)
        scopes = ", ".join(answer.token_scopes)
        steps.append({"ok": True, "line": f"peer token persisted ({scopes})"})
        steps.append({"ok": True, "line": f"recorded on th_federation_pairs (pair_id: {pair_id})"})
        pulled, _ = await self._kick(view, wait=INITIAL_SYNC_WAIT)
        steps.append({"ok": True, "line": f"initial sync cursor advanced ({pulled} records)"})
        return 201, {**self.describe(pair_id), "steps": steps, "initial_sync": {"records": pulled}}

    async def _post(
        self, peer: Any, url: str, document: dict[str, Any], pair: FederationPair
    ) -> tuple[int, PairResponse]:
        """POST a handshake document; a refusal revokes what we minted and records the pair as refused.

        No answer at all changes nothing: the peer may have accepted before the connection dropped, so
        the pair stays ``establishing`` and ``spl federation refresh`` asks the peer how it stands.
        """
        try:
            status, body = await peer.post(url, document)
        except PeerProtocolError as exc:  # it answered, with garbage: a refusal, not silence
            await self._refused(pair, f"peer's answer to the handshake is malformed: {exc}")
            raise PeerRejected(f"peer's answer to the handshake is malformed: {exc}") from None
        except PeerError as exc:
            raise PeerUnavailable(
                f"peer did not answer at {printable(url, 120)}: {exc}; the pair {pair.pair_id} stays establishing: "
                f"run `spl federation refresh {pair.pair_id}` once the peer is reachable"
            ) from None
        if status in (200, 202):
            try:
                answer = check_pair_response(
                    _json(body),
                    initiator=self.identity,
                    responder_did=pair.peer_did,
                    pair_id=pair.pair_id,
                    nonce=pair.nonce,
                    now=self.wall(),
                    requested_maps=pair.maps,  # a responder may narrow our maps, never add one
                    keys_of=self._keys_of,
                )
            except SplError as exc:
                await self._refused(pair, f"peer's answer does not verify: {exc.message}")
                raise PeerRejected(f"peer's answer to the handshake does not verify: {exc.message}") from None
            return status, answer
        code, message = _error_of(body)
        await self._refused(pair, f"peer refused the handshake: {status} {code}")
        raise PeerRejected(f"peer rejected handshake: {status} {code}: {message}")

    async def _refused(self, pair: FederationPair, reason: str) -> None:
        now = self.wall()
        async with self._changing:
            view = self.pairs.get(pair.pair_id)
            current = view.pair if view is not None else pair
            if current.state == "revoked":
                return
            await self._revoke_pair_tokens(current, now)
            # Bounded and escaped like every recorded reason: the fold refuses a longer one (and with it the pair).
            reason = printable(reason, MAX_REASON - 1)
            await self._record(
                view, replace(current, state="revoked", state_reason=reason, updated_at=now), "pair.reject.v1"
            )

    async def _await_approval(self, peer: Any, view: FedView, poll_endpoint: str, wait: float) -> PairResponse | None:
        """Poll the responder (signed) every 2 s for up to ``wait`` s while its operator decides; None if pending."""
        with trio.move_on_after(wait):
            while True:
                await trio.sleep(APPROVAL_POLL_EVERY)
                answer = await self._poll_once(peer, view, poll_endpoint)
                if answer.status != "pending":
                    return answer
        return None

    async def _poll_once(self, peer: Any, view: FedView, poll_endpoint: str) -> PairResponse:
        document = build_poll(
            self.identity, pair_id=view.pair.pair_id, responder_did=view.pair.peer_did, now=self.wall()
        )
        _, answer = await self._post(peer, poll_endpoint, document, view.pair)
        return answer

    async def _activate_initiator(self, view: FedView, answer: PairResponse) -> None:
        """The responder accepted: keep its token (0600, outside the log), take the maps it agreed to (it may
        have narrowed ours, never widened them), record the pair active and start pulling."""
        if answer.token is None:
            raise PeerRejected("peer answered active without a token")
        await trio.to_thread.run_sync(self.manager.tokens.save, view.pair.pair_id, answer.token)
        now = self.wall()
        async with self._changing:
            pair = transition(view.pair, "answered", now=now, reason="handshake complete")
            pair = replace(pair, peer_token_expires_at=answer.token_expires_at, maps=answer.maps or pair.maps)
            await self._record(view, pair, "pair.active.v1")
            await self._start_puller(view)

    # -- the responder --------------------------------------------------------------------------------------

    async def on_pair_request(self, payload: object) -> tuple[int, dict[str, Any]]:
        """``POST /v1/federation/pair``: verify, apply the approval policy, answer signed."""
        now = self.wall()
        request = check_pair_request(payload, own_did=self.identity.did, now=now)
        if request.pair_id in self.pairs:
            raise NonceReplayed(
                "this pair request was already received (its nonce is spent); run `spl federation pair` again "
                "for a new handshake"
            )
        policy = self.approval()
        if policy == "closed":
            raise PairingClosed("this steward does not accept pair requests (federation.pair_approval = closed)")
        for view in self.pairs.values():
            if view.pair.peer_did == request.initiator_did and view.pair.state != "revoked":
                raise Conflict(
                    f"this steward already has pair {view.pair.pair_id} with you ({view.pair.state}); "
                    "revoke it on both sides before pairing again",
                    code="PAIR_EXISTS",
                )
        if self._live_pairs() >= MAX_PAIRS:
            raise TooManyPending(
                f"this steward holds {MAX_PAIRS} federation pairs; try later",
            )
        if policy == "manual" and self._waiting() >= MAX_PENDING:
            await self._expire_pending(now)  # requests nobody decided on within a day make room
            if self._waiting() >= MAX_PENDING:
                raise TooManyPending(f"{MAX_PENDING} pair requests already wait for this steward's operator; try later")
        maps = request.maps
        if policy == "auto":
            # Automatic pairing shares only what the operator opened to it: a stranger naming a namespace does
            # not get it. The answer narrows the maps (an initiator accepts a narrower answer, never a wider one).
            maps = tuple(mapping for mapping in request.maps if mapping.responder in self.auto_namespaces)
            if not maps:
                raise PairingClosed(
                    "none of the namespaces you asked for is open to automatic pairing on this steward "
                    "(federation.auto_namespaces); ask its operator"
                )
        their_token = unseal(self.identity, request.token_sealed)
        pair = FederationPair(
            pair_id=request.pair_id,
            role="responder",
            peer_did=request.initiator_did,
            peer_url=request.initiator_url,
            maps=maps,
            mode=request.mode,
            # How often we pull is ours to decide: never more often than federation.min_peer_poll_interval.
            poll_interval=max(request.poll_interval, self.min_peer_poll),
            state="establishing",
            state_reason="waiting for approval (spl aitl approve)",
            nonce=request.nonce,
            our_token_id=None,
            token_expires_at=None,
            peer_manifest=None,
            last_refresh_at=None,
            created_at=now,
            updated_at=now,
            peer_token_expires_at=request.token_expires_at,
            our_endpoint=validate_peer_url(self.endpoint()),  # the URL our answers (and manifest) give the peer
        )
        async with self._changing:
            if request.pair_id in self.pairs:  # a concurrent copy of this request won
                raise NonceReplayed("this pair request was already received (its nonce is spent)")
            await trio.to_thread.run_sync(self.manager.tokens.save, request.pair_id, their_token)
            view = await self._record(None, pair, "pair.handshake.v1" if policy == "auto" else "pair.pending.v1")
            if policy == "manual":
                return 202, self._response(view, request, "pending", None, now)
            token = await self._approve_locked(view, now, "accepted automatically (federation.pair_approval = auto)")
        return 200, self._response(view, request, "active", token, now)

    async def _approve_locked(self, view: FedView, now: float, reason: str = "approved by operator") -> str:
        token, info = await self._mint_for_peer(view.pair.pair_id, view.pair.peer_did, now, view.pair.our_token_id)
        pair = replace(view.pair, our_token_id=info.token_id, token_expires_at=info.expires_at)
        await self._record(view, pair, "pair.genesis.v1")
        view.token_for_peer = token
        await self._record(view, transition(view.pair, "approved", now=now, reason=reason), "pair.active.v1")
        await self._start_puller(view)
        return token

    def _response(
        self, view: FedView, request: PairRequest, status: str, token: str | None, now: float
    ) -> dict[str, Any]:
        return build_pair_response(
            self.identity,
            request=request,
            status=status,  # type: ignore[arg-type]
            maps=view.pair.maps,
            token=token,
            token_expires_at=now + TOKEN_TTL if token else None,
            poll_endpoint=f"{self.endpoint()}/v1/federation/pair/poll",
            now=now,
        )

    def _spend_nonce(self, pair_id: str, nonce: str, issued_at: float, now: float) -> None:
        """A poll's or notice's nonce is single-use within the ±5 min window it is accepted in (410 on reuse).

        Called only once the signature and the sender (the pair's own peer) are checked, and kept per
        pair: no stranger can fill the book of another pair. In memory: a replay must also fall inside
        the window, so forgetting nonces older than twice the window loses nothing.
        """
        seen = self._seen_nonces.setdefault(pair_id, {})
        if len(seen) > 256:
            cutoff = now - 2 * WINDOW
            seen = self._seen_nonces[pair_id] = {key: at for key, at in seen.items() if at >= cutoff}
        if len(seen) > 4096:
            raise TooManyPending("too many signed requests for this pair in the last minutes; retry later")
        if nonce in seen:
            raise NonceReplayed("this signed request was already received (its nonce is spent); send a fresh one")
        seen[nonce] = max(issued_at, now)

    async def on_poll(self, payload: object) -> tuple[int, dict[str, Any]]:
        """``POST /v1/federation/pair/poll``: the initiator asks how its pending request stands."""
        now = self.wall()
        poll = await self._checked(
            lambda: check_poll(payload, own_did=self.identity.did, now=now, keys_of=self._keys_of),
            payload,
            "initiator_did",
        )
        view = self.pairs.get(poll.pair_id)
        if view is None or view.pair.peer_did != poll.initiator_did or view.pair.role != "responder":
            raise NotFound("no pair request with that id from you", code="PAIR_UNKNOWN")
        self._spend_nonce(poll.pair_id, poll.nonce, poll.issued_at, now)
        request = _request_of(view.pair, self.identity.did)
        if view.pair.state == "establishing":
            return 202, self._response(view, request, "pending", None, now)
        if view.pair.state == "revoked":
            raise PairRejected(f"the pair was refused or revoked: {printable(view.pair.state_reason, 200)}")
        if view.token_for_peer is not None:
            return 200, self._response(view, request, "active", view.token_for_peer, now)
        async with self._changing:
            # After a restart the approved token is gone from memory (only its hash is stored): a fresh one
            # replaces it, and the earlier one is revoked at issuance.
            token, info = await self._mint_for_peer(view.pair.pair_id, view.pair.peer_did, now, view.pair.our_token_id)
            await self._record(
                view,
                replace(view.pair, our_token_id=info.token_id, token_expires_at=info.expires_at, updated_at=now),
                "pair.config.v1",
            )
            view.token_for_peer = token
        return 200, self._response(view, request, "active", token, now)

    async def on_notice(self, payload: object) -> dict[str, Any]:
        """``POST /v1/federation/pair/notify``: the peer revoked the pair, or asks us to pull now."""
        now = self.wall()
        notice = await self._checked(
            lambda: check_notice(payload, own_did=self.identity.did, now=now, keys_of=self._keys_of),
            payload,
            "sender_did",
        )
        view = self.pairs.get(notice.pair_id)
        if view is None or view.pair.peer_did != notice.sender_did:
            raise NotFound("no pair with that id joins this steward to you", code="PAIR_UNKNOWN")
        self._spend_nonce(notice.pair_id, notice.nonce, notice.issued_at, now)
        if notice.event == "revoke":
            if view.pair.state != "revoked":
                await self._revoke(view, f"revoked by the peer: {notice.reason}", notify=False)
            return {"object": "pair_notice_result", "pair_id": notice.pair_id, "state": "revoked"}
        pulled, _ = await self._kick(view, wait=30.0)
        return {"object": "pair_notice_result", "pair_id": notice.pair_id, "state": view.pair.state, "pulled": pulled}

    # -- moving: our endpoint is not the one a peer knows (the mover's side) ------------------------------------

    def endpoint_known(self) -> None:
        """The HTTP server is bound: ``endpoint()`` now gives the URL peers reach us at. Look at every pair again."""
        self._endpoint_known.set()
        self._wake.set()

    async def announcer(self) -> None:
        """Tell each pair's peer our new endpoint, until it acknowledges it or the pair is revoked.

        One task for the whole daemon, run in the federation manager's nursery (it stops with it). It looks at
        every pair when woken (start, a reload, the bound URL, an acknowledgement) and when the next retry is
        due on trio's clock: 5 s after a failed notice, doubling up to 10 min, so a peer that keeps answering
        DUPLICATE_STEWARD is asked again slowly. At most :data:`ANNOUNCE_PARALLEL` notices are in flight; each
        pair holds one due time, so nothing queues.
        """
        with trio.move_on_after(ENDPOINT_SETTLE):  # the URL we are bound to is known once the server listens
            await self._endpoint_known.wait()
        limiter = trio.CapacityLimiter(ANNOUNCE_PARALLEL)
        while True:
            self._wake = trio.Event()
            endpoint = self.endpoint()
            moving = [view for view in self.pairs.values() if view.pair.endpoint_moved(endpoint)]
            due = [view for view in moving if view.announce_at <= trio.current_time()]
            if due:
                async with trio.open_nursery() as nursery:
                    for view in due:
                        nursery.start_soon(self._announce_due, limiter, view)
            next_at = min(
                (view.announce_at for view in self.pairs.values() if view.pair.endpoint_moved(self.endpoint())),
                default=math.inf,
            )
            with trio.move_on_at(next_at):
                await self._wake.wait()

    async def _announce_due(self, limiter: trio.CapacityLimiter, view: FedView) -> None:
        async with limiter, view.announce_lock:
            endpoint = self.endpoint()
            # A refresh may have announced (or failed and set the next due time) while this waited for the lock.
            if view.pair.endpoint_moved(endpoint) and view.announce_at <= trio.current_time():
                await self._announce(view, endpoint)

    async def _announce_now(self, view: FedView) -> dict[str, Any] | None:
        """``spl federation refresh``: announce at once (a pair whose peer knows another URL, whose peer's token
        we lack, or whose record predates ``our_endpoint``); None when there is nothing to announce."""
        async with view.announce_lock:
            endpoint = self.endpoint()
            pair = view.pair
            if pair.state not in ("active", "paused"):
                return None
            if pair.our_endpoint == endpoint and not view.no_token:
                return None
            return await self._announce(view, endpoint)

    async def _announce(self, view: FedView, endpoint: str) -> dict[str, Any]:
        """One signed ``endpoint_moved`` notice to the pair's peer (announce lock held), and what came of it."""
        pair = view.pair
        now = self.wall()
        duplicate = False
        try:
            token, expires = await self._token_for_move(view, endpoint, now)
            notice = build_endpoint_moved(
                self.identity,
                pair_id=pair.pair_id,
                receiver_did=pair.peer_did,
                endpoint=endpoint,
                token=token,
                token_expires_at=expires,
                now=now,
                receiver_key=self._current_key(pair.peer_did),
            )
            with trio.fail_after(ANNOUNCE_DEADLINE):
                status, body = await self.manager.peer_client(pair.peer_url).post(
                    f"{pair.peer_url}/v1/federation/pair/moved", notice
                )
            if status == 200:
                ack = check_endpoint_moved_ack(
                    _json(body),
                    identity=self.identity,
                    peer_did=pair.peer_did,
                    pair_id=pair.pair_id,
                    nonce=notice["nonce"],
                    endpoint=endpoint,
                    now=self.wall(),
                    keys_of=self._keys_of,
                )
                await self._acknowledged(view, ack)
                return {"acknowledged": True, "endpoint": endpoint, "error": None}
            code, message = _error_of(body)
            error = f"the peer answered {status} {code}: {message}"
            duplicate = code == "DUPLICATE_STEWARD"
        except SplError as exc:
            error = f"{exc.code}: {exc.message}"
        except PeerError as exc:
            error = f"the peer did not answer at {pair.peer_url}: {exc}"
        except trio.TooSlowError:
            error = f"the peer did not answer within {ANNOUNCE_DEADLINE:g} s"
        retry_in = view.announce_delay
        view.announce_at = trio.current_time() + retry_in
        view.announce_delay = min(retry_in * 2, ANNOUNCE_MAX_RETRY)
        view.announce_error, view.announce_duplicate = printable(error, 400), duplicate
        log.info("pair %s: endpoint %s not acknowledged yet: %s", pair.pair_id, endpoint, view.announce_error)
        return {"acknowledged": False, "endpoint": endpoint, "error": view.announce_error, "retry_in": retry_in}

    async def _token_for_move(self, view: FedView, endpoint: str, now: float) -> tuple[str, float]:
        """The token the notice carries for the peer: minted once per announced endpoint (bound to the pair, as at
        the handshake; the one it replaces revoked), recorded by id, and reused by the retries."""
        if view.moved_token is not None and view.moved_token[0] == endpoint:
            return view.moved_token[1], view.moved_token[2]
        async with self._changing:
            if view.pair.state == "revoked":
                raise PairRejected(f"pair {view.pair.pair_id} is revoked: nothing to announce")
            token, info = await self._mint_for_peer(view.pair.pair_id, view.pair.peer_did, now, view.pair.our_token_id)
            expires = info.expires_at if info.expires_at is not None else now + TOKEN_TTL
            updated = replace(view.pair, our_token_id=info.token_id, token_expires_at=expires, updated_at=now)
            await self._record(view, updated, "pair.config.v1")
        view.moved_token = (endpoint, token, expires)
        return token, expires

    async def _acknowledged(self, view: FedView, ack: EndpointMoved) -> None:
        """The peer pulls from ``ack.endpoint`` now: keep its new token, record the endpoint it knows, pull again."""
        await trio.to_thread.run_sync(self.manager.tokens.save, view.pair.pair_id, ack.token)
        async with self._changing:
            if view.pair.state == "revoked":
                return
            now = self.wall()
            pair = replace(
                view.pair, our_endpoint=ack.endpoint, peer_token_expires_at=ack.token_expires_at, updated_at=now
            )
            await self._record(view, pair, "pair.config.v1")
            view.moved_token, view.announce_error, view.announce_duplicate = None, "", False
            view.announce_at, view.announce_delay = -math.inf, ANNOUNCE_FIRST_RETRY
            cursor = view.status.cursor if view.status is not None else ""
            await self._stop_puller(view)
            await self._start_puller(view, cursor)
        log.info("pair %s: the peer acknowledged our endpoint %s", pair.pair_id, ack.endpoint)

    # -- moving: the pair's peer answers at another URL (the peer's side) ----------------------------------------

    async def on_endpoint_moved(self, payload: object) -> dict[str, Any]:
        """``POST /v1/federation/pair/moved``: the pair's peer says it now answers at another endpoint.

        Checked like every handshake document, against the DID the pair already trusts. Then both URLs are
        probed: the new one must serve a manifest signed by that DID (it is live there), and if the old one
        does too, two daemons run one identity: the pair keeps its URL and is marked DUPLICATE_STEWARD (409)
        until the mover asks again once one of them stopped. Otherwise the pair moves: the notice's token is
        kept, ours for the old endpoint revoked, a fresh one sealed to the mover in a signed acknowledgement.
        """
        now = self.wall()
        notice = await self._checked(
            lambda: check_endpoint_moved(
                payload, own_did=self.identity.did, now=now, peer_did_of=self._peer_did_of, keys_of=self._keys_of
            ),
            payload,
            "sender_did",
        )
        view = self.pairs[notice.pair_id]
        self._spend_nonce(notice.pair_id, notice.nonce, notice.issued_at, now)
        self._movable(view)
        if view.probing:  # the mover sends one notice at a time: a second one in flight is a retry storm or abuse
            raise TooManyPending("a notice for this pair is being checked already; send the next one after its answer")
        view.probing = True
        try:
            return await self._move(view, notice, now)
        finally:
            view.probing = False

    async def _move(self, view: FedView, notice: EndpointMoved, now: float) -> dict[str, Any]:
        """Probe both URLs, then re-point the pair, or mark it DUPLICATE_STEWARD (see :meth:`on_endpoint_moved`)."""
        new_url, old_url = notice.endpoint, view.pair.peer_url
        manifest = await self._probe_new(view.pair, new_url, now)
        if peer_address(new_url) != peer_address(old_url) and await self._still_live(old_url, view.pair.peer_did):
            reason = (
                f"DUPLICATE_STEWARD: this pair's peer ({view.pair.peer_did}) answers both at {printable(old_url, 200)} "
                f"and at {printable(new_url, 200)}: two daemons run one identity (a migrated home still running "
                "at its old place?). Stop one of them; the pair keeps pulling from the first and moves by itself "
                "once only the second answers"
            )
            view.duplicate = (self.wall(), reason)
            log.warning("pair %s: %s", view.pair.pair_id, reason)
            raise DuplicateSteward(reason)
        their_token = unseal(self.identity, notice.token)
        async with self._changing:
            self._movable(view)
            now = self.wall()
            await trio.to_thread.run_sync(self.manager.tokens.save, view.pair.pair_id, their_token)
            token, info = await self._mint_for_peer(view.pair.pair_id, view.pair.peer_did, now, view.pair.our_token_id)
            expires = info.expires_at if info.expires_at is not None else now + TOKEN_TTL
            moved = replace(
                view.pair,
                peer_url=new_url,
                our_token_id=info.token_id,
                token_expires_at=expires,
                peer_token_expires_at=notice.token_expires_at,
                peer_manifest=_snapshot(manifest),
                last_refresh_at=now,
                updated_at=now,
            )
            await self._record(view, moved, "pair.config.v1")
            view.duplicate, view.overlay, view.overlay_reason = None, None, ""
            view.token_for_peer = None
            cursor = view.status.cursor if view.status is not None else ""
            await self._stop_puller(view)
            await self._start_puller(view, cursor)
        log.info(
            "pair %s: the peer moved from %s to %s", moved.pair_id, printable(old_url, 200), printable(new_url, 200)
        )
        return build_endpoint_moved_ack(
            self.identity,
            notice=notice,
            token=token,
            token_expires_at=expires,
            now=now,
            receiver_key=self._current_key(notice.sender_did),
        )

    def _peer_did_of(self, pair_id: str) -> str | None:
        view = self.pairs.get(pair_id)
        return view.pair.peer_did if view is not None else None

    async def _checked(self, check: Callable[[], _Checked], payload: object, field: str) -> _Checked:
        """``check()`` (a handshake document's check); when its signature fails against the key pinned for the
        peer that ``payload[field]`` names, learn that peer's keys again (:meth:`_learn_keys`) and check once more.

        This is how a pair follows a peer that ran ``spl identity rotate`` by itself: its first document signed
        with the new key makes us fetch its manifest, whose chain starts at the DID we pinned.
        """
        try:
            return check()
        except BadHandshakeSignature:
            did = payload.get(field) if isinstance(payload, dict) else None
            if not isinstance(did, str) or not await self._learn_keys(did):
                raise
        return check()

    async def _learn_keys(self, did: str) -> bool:
        """Fetch the manifest of the peer ``did`` of our pairs; True when it proves more keys than we pinned (its
        chain verified from ``did`` and extending the pinned one), recorded in each pair with it."""
        views = [view for view in self.pairs.values() if view.pair.peer_did == did and view.pair.state != "revoked"]
        moment = trio.current_time()
        if not views or moment < self._keys_checked.get(did, -math.inf) + KEY_RECHECK_EVERY:
            return False
        self._keys_checked[did] = moment
        pinned = self._keys_of(did) or (did,)
        url = views[0].pair.peer_url
        try:
            with trio.fail_after(PROBE_NEW_DEADLINE):
                body = await self.manager.peer_client(url).manifest_body()
            proven, manifest = signed_manifest_did(body, where=url, now=self.wall())
            keys = manifest_keys(manifest)
            check_extends(pinned, keys, who=f"peer at {printable(url, 120)}")
        except (PeerError, RotationInvalid, trio.TooSlowError) as exc:
            log.warning("peer %s: its manifest does not prove a new key: %s", did, printable(str(exc), 300))
            return False
        if proven != did or len(keys) <= len(pinned):
            return False
        async with self._changing:
            for view in views:
                now = self.wall()
                await self._record(
                    view, replace(view.pair, peer_manifest=_snapshot(manifest), updated_at=now), "pair.config.v1"
                )
        log.info("peer %s rotated its key: chain verified, it now signs with %s", did, keys[-1])
        return True

    def _current_key(self, did: str) -> str | None:
        """The key a token for ``did`` is sealed to: the current one of its pinned chain (None: the DID's own)."""
        keys = self._keys_of(did)
        return keys[-1] if keys else None

    def _keys_of(self, did: str) -> tuple[str, ...]:
        """The keys ``did`` proved it signs with (its rotation chain, current last), as pinned by the latest
        manifest a pair with it recorded; a signed document from that peer must verify against the last one."""
        best: tuple[str, ...] = ()
        for view in self.pairs.values():
            if view.pair.peer_did == did:
                keys = pinned_keys(view.pair.peer_manifest, did)
                best = keys if len(keys) > len(best) else best
        return best

    def _movable(self, view: FedView) -> None:
        state = view.pair.state
        if state == "revoked":
            raise PairRejected(f"pair {view.pair.pair_id} is revoked on this side; pair again")
        if state not in ("active", "paused"):
            raise Conflict(
                f"pair {view.pair.pair_id} is {state} on this side: finish the handshake first (spl federation "
                "refresh on the initiator), then announce the new endpoint",
                code="INVALID_PAIR_STATE",
            )

    async def _probe_new(self, pair: FederationPair, url: str, now: float) -> dict[str, Any]:
        """The manifest at the announced ``url``, signed by the pair's DID: proof the peer is live there."""
        where = printable(url, 200)
        try:
            with trio.fail_after(PROBE_NEW_DEADLINE):
                body = await self.manager.peer_client(url).manifest_body()
            did, manifest = signed_manifest_did(body, where=url, now=now)
        except (PeerError, trio.TooSlowError) as exc:
            detail = str(exc) or f"no answer within {PROBE_NEW_DEADLINE:g} s"
            raise EndpointUnverified(
                f"could not verify the announced endpoint {where}: {printable(detail, 300)}; make sure the daemon "
                "there is running and reachable from this peer (serve.public_url), then announce again "
                "(spl federation refresh)"
            ) from None
        if did != pair.peer_did:
            raise EndpointUnverified(
                f"the daemon at the announced endpoint {where} proves the DID {printable(did, 80)}, not this pair's "
                f"peer {pair.peer_did}: announce the URL of the daemon that holds the pair's identity"
            )
        return manifest

    async def _still_live(self, url: str, did: str) -> bool:
        """Whether ``url`` still serves a manifest signed by ``did`` (a short probe: silence counts as no)."""
        with trio.move_on_after(PROBE_OLD_DEADLINE):
            try:
                body = await self.manager.peer_client(url).manifest_body()
                return signed_manifest_did(body, where=url, now=self.wall(), strict=False)[0] == did
            except PeerError:
                return False
        return False

    # -- the operator ---------------------------------------------------------------------------------------

    def _waiting(self) -> int:
        return sum(1 for v in self.pairs.values() if v.pair.state == "establishing" and v.pair.role == "responder")

    async def _expire_pending(self, now: float) -> None:
        """Reject the requests that waited longer than :data:`PENDING_TTL` (throw-away keys cannot hold the queue)."""
        async with self._changing:
            for view in list(self.pairs.values()):
                pair = view.pair
                if pair.state == "establishing" and pair.role == "responder" and now - pair.created_at > PENDING_TTL:
                    reason = "expired: no operator decision within 24 h"
                    await self._record(view, transition(pair, "rejected", now=now, reason=reason), "pair.reject.v1")
                    await trio.to_thread.run_sync(self.manager.tokens.delete, pair.pair_id)

    def _live_pairs(self) -> int:
        return sum(1 for view in self.pairs.values() if view.pair.state != "revoked")

    def _view(self, pair_id: str) -> FedView:
        view = self.pairs.get(pair_id) if is_pair_id(pair_id) else None
        if view is None:
            raise NotFound("no federation pair with that id; list them with `spl federation list`")
        return view

    def pending(self) -> list[dict[str, Any]]:
        return [
            {
                "object": "aitl_decision",
                "pair_id": view.pair.pair_id,
                "kind": "federation.pair_pending.v1",
                "initiator_did": view.pair.peer_did,
                "initiator_url": view.pair.peer_url,
                "maps": _maps_wire(view.pair),
                "mode": view.pair.mode,
                "requested_at": _rfc3339(view.pair.created_at),
            }
            for view in sorted(self.pairs.values(), key=lambda v: v.pair.created_at)
            if view.pair.state == "establishing" and view.pair.role == "responder"
        ]

    async def approve(self, pair_id: str) -> dict[str, Any]:
        async with self._changing:
            view = self._pending_view(pair_id)
            await self._approve_locked(view, self.wall())
        return self.describe(pair_id)

    async def reject(self, pair_id: str, reason: str) -> dict[str, Any]:
        now = self.wall()
        async with self._changing:
            view = self._pending_view(pair_id)
            pair = transition(
                view.pair,
                "rejected",
                now=now,
                reason=f"rejected by operator: {reason}" if reason else "rejected by operator",
            )
            await self._record(view, pair, "pair.reject.v1")
            await trio.to_thread.run_sync(self.manager.tokens.delete, pair_id)
        return self.describe(pair_id)

    def _pending_view(self, pair_id: str) -> FedView:
        view = self._view(pair_id)
        if view.pair.state != "establishing" or view.pair.role != "responder":
            raise Conflict(
                f"pair {pair_id} is {view.pair.state}, not a request waiting for approval; see `spl aitl list`",
                code="NOT_PENDING",
            )
        return view

    async def pause(self, pair_id: str) -> dict[str, Any]:
        async with self._changing:
            view = self._view(pair_id)
            if view.pair.state != "paused":
                await self._record(
                    view,
                    transition(view.pair, "pause", now=self.wall(), reason="paused by operator"),
                    "pair.config.v1",
                )
            if view.started:
                self.manager.supervisor.pause(pair_id)
                if view.status is not None and view.status.state != "paused":
                    view.status.paused(self.wall())
        return self.describe(pair_id)

    async def resume(self, pair_id: str) -> dict[str, Any]:
        async with self._changing:
            view = self._view(pair_id)
            if view.pair.state == "paused":
                await self._record(
                    view,
                    transition(view.pair, "resume", now=self.wall(), reason="resumed by operator"),
                    "pair.config.v1",
                )
            if view.started:
                self.manager.supervisor.resume(pair_id)
                with contextlib.suppress(trio.WouldBlock, KeyError):
                    self.manager.supervisor.inbox(pair_id).send_nowait(Resume())
                if view.status is not None and view.status.state == "paused":
                    view.status.resumed(self.wall())
        return self.describe(pair_id)

    async def update(self, pair_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH: mode, poll interval, thread allow-list, maps — one ``pair.config.v1`` record."""
        allowed = {"mode", "poll_interval", "thread_allow", "maps"}
        unknown = sorted(set(payload) - allowed)
        if unknown or not payload:
            raise InvalidRequest(
                f"send any of {sorted(allowed)}" + (f"; {', '.join(unknown)} cannot be changed" if unknown else ""),
                code="INVALID_PAIR_UPDATE",
            )
        async with self._changing:
            view = self._view(pair_id)
            if view.pair.state == "revoked":
                raise Conflict(f"pair {pair_id} is revoked; pair again", code="PAIR_REVOKED")
            mode, interval = validate_settings(
                payload.get("mode", view.pair.mode), payload.get("poll_interval", view.pair.poll_interval)
            )
            pair = replace(view.pair, mode=mode, poll_interval=interval, updated_at=self.wall())
            widened = False
            if "thread_allow" in payload:
                allow = validate_thread_allow(payload["thread_allow"])
                widened = widened or not set(allow) <= set(view.pair.thread_allow)
                pair = replace(pair, thread_allow=allow)
            if "maps" in payload:
                maps = maps_from_local(_local_maps(payload["maps"]), view.pair.role)
                widened = widened or not set(maps) <= set(view.pair.maps)
                pair = replace(pair, maps=maps)
            if pair == view.pair:
                return self.describe(pair_id)
            maps_changed = pair.maps != view.pair.maps
            await self._record(view, pair, "pair.config.v1")
            if widened:
                view.widened_seq = view.seq
            if view.started and maps_changed:
                await self._stop_puller(view)
                await self._start_puller(view, view.status.cursor if view.status else "")
            elif view.started:
                self.manager.set_puller_config(pair_id, self._puller_config(pair))
                with contextlib.suppress(trio.WouldBlock, KeyError):
                    self.manager.supervisor.inbox(pair_id).send_nowait(ConfigChanged(pair.mode, pair.poll_interval))
        return self.describe(pair_id)

    async def revoke(self, pair_id: str, reason: str) -> dict[str, Any]:
        view = self._view(pair_id)
        if view.pair.state == "revoked":
            return self.describe(pair_id)
        notified = await self._revoke(
            view, f"revoked by operator: {reason}" if reason else "revoked by operator", notify=True
        )
        return {**self.describe(pair_id), "peer_notified": notified}

    async def _revoke(self, view: FedView, reason: str, *, notify: bool) -> bool | str:
        now = self.wall()
        async with self._changing:
            if view.pair.state == "revoked":
                return False
            pair = transition(view.pair, "revoke", now=now, reason=reason)
            await self._record(view, pair, "pair.revoke.v1")
            await self._revoke_pair_tokens(pair, now)
            await self._stop_puller(view)
        if not notify:
            return False
        document = build_notice(
            self.identity,
            pair_id=pair.pair_id,
            receiver_did=pair.peer_did,
            event="revoke",
            reason=reason[:200],
            now=now,
        )
        try:
            with trio.fail_after(NOTIFY_DEADLINE):
                status, body = await self.manager.peer_client(pair.peer_url).post(
                    f"{pair.peer_url}/v1/federation/pair/notify", document
                )
        except (PeerError, trio.TooSlowError) as exc:
            return f"peer not told (it keeps its side until its tokens expire): {exc}"
        if status != 200:
            code, message = _error_of(body)
            return f"peer answered {status} {code}: {message}"
        return True

    async def refresh(self, pair_id: str) -> dict[str, Any]:
        """Re-fetch and verify the peer's manifest now; an establishing initiator also polls for approval."""
        view = self._view(pair_id)
        pair = view.pair
        transitions: list[str] = []
        if pair.state == "revoked":
            raise Conflict(f"pair {pair_id} is revoked; pair again with `spl federation pair`", code="PAIR_REVOKED")
        announced = await self._announce_now(view)  # a move not acknowledged yet is retried at once
        if announced is not None:
            transitions.append(
                "endpoint acknowledged by the peer"
                if announced["acknowledged"]
                else f"endpoint not acknowledged: {announced['error']}"
            )
            pair = view.pair
        if pair.state == "establishing" and pair.role == "initiator":
            endpoint = f"{pair.peer_url}/v1/federation/pair/poll"
            if pair.peer_manifest:
                with contextlib.suppress(InvalidRequest, KeyError, TypeError):
                    endpoint = _manifest_endpoints(pair.peer_manifest, pair.peer_url)[0] + "/poll"
            answer = await self._poll_once(self.manager.peer_client(pair.peer_url), view, endpoint)
            if answer.status == "active":
                await self._activate_initiator(view, answer)
                await self._kick(view, wait=INITIAL_SYNC_WAIT)
                transitions.append("establishing → active")
            return {**self.describe(pair_id), "transitions": transitions}
        now = self.wall()
        try:
            body = await self.manager.peer_client(pair.peer_url).manifest_body()
            did, manifest = signed_manifest_did(body, where=pair.peer_url, now=now)
        except ManifestInvalid as exc:
            view.overlay, view.overlay_reason = "degraded", f"peer manifest no longer verifies: {exc}"
            return {**self.describe(pair_id), "transitions": transitions}
        except PeerError as exc:
            raise PeerUnavailable(f"could not fetch the peer's manifest: {exc}") from None
        if did != pair.peer_did:
            view.overlay = "degraded"
            view.overlay_reason = (
                f"peer at {pair.peer_url} now proves the DID {printable(did, 80)}, not {pair.peer_did}: it replaced "
                "its identity with no proof from the old key. Re-pair: `spl federation revoke "
                f"{pair_id}` then `spl federation pair {pair.peer_url}`"
            )
            transitions.append(f"{pair.state} → degraded")
            return {**self.describe(pair_id), "transitions": transitions}
        pinned = pinned_keys(pair.peer_manifest, pair.peer_did)
        try:  # the peer's manifest verified its chain from the DID; it must also extend the keys it proved before
            keys = manifest_keys(manifest)
            check_extends(pinned, keys, who=f"peer at {printable(pair.peer_url, 120)}")
        except RotationInvalid as exc:
            view.overlay, view.overlay_reason = "degraded", f"peer's rotation chain is refused: {exc.message}"
            transitions.append(f"{pair.state} → degraded")
            return {**self.describe(pair_id), "transitions": transitions}
        if len(keys) > len(pinned):
            transitions.append(f"peer rotated its key: {len(keys) - len(pinned)} step(s) verified, now {keys[-1]}")
        try:
            _, new_url = _manifest_endpoints(manifest, pair.peer_url)
        except InvalidRequest as exc:
            view.overlay, view.overlay_reason = "degraded", f"peer manifest names no usable endpoint: {exc.message}"
            return {**self.describe(pair_id), "transitions": transitions}
        changed = _snapshot(manifest) != _without_signature(pair.peer_manifest) or new_url != pair.peer_url
        if changed:
            view.overlay, view.overlay_reason = "peer_manifest_changed", "refresh found a new manifest"
            transitions.append(f"{pair.state} → peer_manifest_changed")
            if new_url != pair.peer_url:  # the new endpoint must prove the same DID before the pair moves there
                try:
                    moved = await self.manager.peer_client(new_url).manifest_body()
                    moved_did, _ = signed_manifest_did(moved, where=new_url, now=now)
                except (ManifestInvalid, PeerError) as exc:
                    view.overlay, view.overlay_reason = (
                        "degraded",
                        f"peer's new endpoint {new_url} does not verify: {exc}",
                    )
                    transitions.append("peer_manifest_changed → degraded")
                    return {**self.describe(pair_id), "transitions": transitions}
                if moved_did != pair.peer_did:
                    view.overlay, view.overlay_reason = "degraded", f"peer's new endpoint {new_url} is another DID"
                    transitions.append("peer_manifest_changed → degraded")
                    return {**self.describe(pair_id), "transitions": transitions}
            async with self._changing:
                updated = replace(
                    view.pair, peer_url=new_url, peer_manifest=_snapshot(manifest), last_refresh_at=now, updated_at=now
                )
                await self._record(view, updated, "pair.config.v1")
                if view.started and new_url != pair.peer_url:
                    await self._stop_puller(view)
                    await self._start_puller(view, view.status.cursor if view.status else "")
            transitions.append(f"peer_manifest_changed → {view.pair.state}")
        else:
            view.pair = replace(view.pair, last_refresh_at=now)
        view.overlay, view.overlay_reason = None, ""
        return {**self.describe(pair_id), "transitions": transitions}

    async def sync(self, pair_id: str) -> dict[str, Any]:
        """Pull now, and ask the peer (signed notice) to pull from us now: what moved each way."""
        view = self._view(pair_id)
        if view.pair.state != "active":
            raise Conflict(f"pair {pair_id} is {view.pair.state}; only an active pair syncs", code="PAIR_NOT_ACTIVE")
        pulled, refused = await self._kick(view, wait=INITIAL_SYNC_WAIT)
        peer: dict[str, Any] = {"asked": True, "pulled": None, "error": None}
        document = build_notice(
            self.identity, pair_id=pair_id, receiver_did=view.pair.peer_did, event="sync", reason="", now=self.wall()
        )
        try:
            with trio.fail_after(40.0):
                status, body = await self.manager.peer_client(view.pair.peer_url).post(
                    f"{view.pair.peer_url}/v1/federation/pair/notify", document
                )
            if status == 200:
                answer = _json(body)
                value = answer.get("pulled") if isinstance(answer, dict) else None
                peer["pulled"] = value if isinstance(value, int) and not isinstance(value, bool) else None
            else:
                code, message = _error_of(body)
                peer["error"] = f"{status} {code}: {message}"
        except (PeerError, trio.TooSlowError) as exc:
            peer["error"] = printable(str(exc), 200) or "peer did not answer in time"
        return {"object": "federation_sync", "pair_id": pair_id, "pulled": pulled, "refused": refused, "peer": peer}

    # -- serving ----------------------------------------------------------------------------------------------

    def policy_for(self, token: TokenInfo | None, target_namespace: str | None) -> ServePolicy | None:
        """The filter of a pull: a federation pair's (from its bound token), a sync pair's named target, or none."""
        pair_id = getattr(token, "pair_id", None) if token is not None else None
        if pair_id:
            view = self.pairs.get(pair_id)
            if view is None or view.pair.state == "revoked":
                raise PairRejected("this token's federation pair is revoked; pair again")
            if view.pair.state == "paused":
                raise PairPaused("the peer paused this pair: nothing is served until it resumes")
            # An initiator still recording the answer is pulled from already: the token the peer presents
            # is the one we sealed for it, so it has accepted.
            if view.pair.state != "active" and not (
                view.pair.state == "establishing" and view.pair.role == "initiator"
            ):
                raise PairRejected("this pair is not active yet")
            targets: dict[str, list[str]] = {}
            for mapping in view.pair.local_maps():
                targets.setdefault(mapping["local"], []).append(mapping["peer"])
            return ServePolicy(
                targets={ns: tuple(t) for ns, t in targets.items()},
                thread_allow=view.pair.thread_allow,
                peer_did=view.pair.peer_did,
                version=max(self.consent.version, view.widened_seq),
                consent=self.consent,
                widened=partial(self._widened, view),
                pair_id=pair_id,
            )
        bound = getattr(token, "target_namespace", None) if token is not None else None
        if bound is not None:
            target_namespace = bound  # a token bound to a namespace cannot ask to land anywhere else
        if target_namespace is None:
            return None
        return ServePolicy(
            targets={},
            every_namespace_to=target_namespace,
            thread_allow=("*",),
            peer_did=getattr(token, "peer_did", None) if token is not None else None,
            version=self.consent.version,
            consent=self.consent,
            widened=self.consent.widened_since,
        )

    def _widened(self, view: FedView, since: int) -> bool:
        return self.consent.widened_since(since) or view.widened_seq > since

    def open_stream(self, pair_id: str) -> Callable[[], None]:
        """Count a continuous feed open under ``pair_id``; 429 past :data:`MAX_STREAMS_PER_PAIR`. Returns the
        (idempotent) release: every open feed re-reads the store on each commit, so a pair gets only a few."""
        if self._streams.get(pair_id, 0) >= MAX_STREAMS_PER_PAIR:
            raise TooManyPending(
                f"this pair already has {MAX_STREAMS_PER_PAIR} continuous feeds open; close one (or wait for it "
                "to time out) before opening another"
            )
        self._streams[pair_id] = self._streams.get(pair_id, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._streams.get(pair_id, 1) - 1
                if left > 0:
                    self._streams[pair_id] = left
                else:
                    self._streams.pop(pair_id, None)

        return release

    def note_served(self, pair_id: str | None, seq: int) -> None:
        view = self.pairs.get(pair_id) if pair_id else None
        if view is not None:
            view.served_to = max(view.served_to, seq)
            view.served_at = self.wall()
            view.token_for_peer = None  # the peer pulls with its token: it has it

    # -- consent grants ------------------------------------------------------------------------------------------

    async def grant(self, payload: object) -> dict[str, Any]:
        now = self.wall()
        async with self._granting:
            self.consent.ensure_room(now)
            grant = validate_grant_request(payload, now=now, grant_id=new_grant_id())
            accepted = await self.local.record_system(CONSENT_THREAD, grant_body(grant))
            self.consent.apply(_record_of(accepted), accepted.record.seq, own_keys(self.identity))
        current = self.consent.get(grant.grant_id)
        assert current is not None
        return current.to_wire(now)

    async def revoke_grant(self, grant_id: str) -> dict[str, Any]:
        now = self.wall()
        async with self._granting:
            grant = self._grant(grant_id)
            if grant.revoked_at is None:
                accepted = await self.local.record_system(CONSENT_THREAD, revoke_body(grant, now))
                self.consent.apply(_record_of(accepted), accepted.record.seq, own_keys(self.identity))
        return self._grant(grant_id).to_wire(now)

    def _grant(self, grant_id: str) -> Grant:
        grant = self.consent.get(grant_id) if isinstance(grant_id, str) else None
        if grant is None:
            raise NotFound("no consent grant with that id; list them with `spl consent list`", code="GRANT_NOT_FOUND")
        return grant

    def grant_view(self, grant_id: str) -> dict[str, Any]:
        return self._grant(grant_id).to_wire(self.wall())

    def grants(self) -> list[dict[str, Any]]:
        now = self.wall()
        return [grant.to_wire(now) for grant in self.consent.grants()]

    # -- views --------------------------------------------------------------------------------------------------

    def state_of(self, view: FedView) -> tuple[str, str]:
        """The state an operator sees: the recorded one, or ``degraded`` / ``peer_manifest_changed`` /
        ``endpoint_moving`` now."""
        pair = view.pair
        if pair.state in ("revoked", "paused", "establishing"):
            return pair.state, pair.state_reason
        if view.duplicate is not None and self.wall() - view.duplicate[0] < DUPLICATE_MARK_FOR:
            return "degraded", view.duplicate[1]
        if view.overlay is not None:
            return view.overlay, view.overlay_reason
        endpoint = self.endpoint()
        if pair.endpoint_moved(endpoint):
            if view.announce_duplicate:
                return "degraded", f"{view.announce_error} (this side keeps announcing {endpoint}, slowly)"
            last = f"; last attempt: {view.announce_error}" if view.announce_error else ""
            return "endpoint_moving", (
                f"waiting for the peer to acknowledge our new endpoint {endpoint} (it knows {pair.our_endpoint})"
                f"{last}; pulling resumes once it does (`spl federation refresh {pair.pair_id}` asks again now)"
            )
        if view.no_token:
            return "degraded", (
                f"no pull token from the peer for this pair (secrets/pairs/{pair.pair_id}.token is missing): run "
                f"`spl federation refresh {pair.pair_id}` to announce our endpoint and receive a new one"
            )
        status = view.status
        if status is not None and status.state == "failing" and status.last_error is not None:
            error = status.last_error
            if error.code in ("MANIFEST_INVALID", "PEER_DID_MISMATCH"):
                return "degraded", f"{error.code}: {error.message}"
            if error.code == "HTTP_4XX" and ("401" in error.message[:60] or "TOKEN_" in error.message):
                return "degraded", f"the peer refused our token: {error.message}"
            since = status.last_success_at or pair.updated_at
            if self.wall() - since >= self.degraded_after:
                return "degraded", f"peer unreachable for over {self.degraded_after / 3600:g} h: {error.message}"
        return pair.state, pair.state_reason

    def describe(self, pair_id: str) -> dict[str, Any]:
        view = self._view(pair_id)
        pair = view.pair
        now = self.wall()
        state, reason = self.state_of(view)
        status = view.status
        ours = self._tokens.get(pair_id)
        lag_in = status.lag_records if status is not None else 0
        return {
            "object": "federation_pair",
            "pair_id": pair.pair_id,
            "role": pair.role,
            "peer_did": pair.peer_did,
            "peer_url": pair.peer_url,
            "our_endpoint": pair.our_endpoint,
            "state": state,
            "state_reason": reason,
            "mode": pair.mode,
            "poll_interval": pair.poll_interval,
            "maps": _maps_wire(pair),
            "thread_allow": list(pair.thread_allow),
            "created_at": _rfc3339(pair.created_at),
            "updated_at": _rfc3339(pair.updated_at),
            "last_refresh_at": _rfc3339(pair.last_refresh_at),
            "last_sync_at": _rfc3339(view.last_sync_at or (status.last_success_at if status else None)),
            "peer_manifest": pair.peer_manifest,
            "cursors": {"pull": status.cursor if status else "", "serve": view.served_to or None},
            "lag": {
                "in_records": lag_in,
                "in_seconds": round(status.lag_seconds(now), 3) if status else 0.0,
                "served_at": _rfc3339(view.served_at),
            },
            "grants": [
                grant.to_wire(now) for grant in self.consent.grants() if grant.peer_did in (None, pair.peer_did)
            ],
            "tokens": {
                "ours": {
                    "token_id": pair.our_token_id,
                    "scopes": list(TOKEN_SCOPES) if pair.our_token_id else [],
                    "expires_at": _rfc3339(ours.expires_at if ours else pair.token_expires_at),
                },
                "theirs": {
                    "present": self.manager.tokens.read(pair_id) is not None,
                    "scopes": list(TOKEN_SCOPES),
                    "expires_at": _rfc3339(pair.peer_token_expires_at),
                },
            },
            "pull": status.to_wire(now) if status and pair.state != "revoked" else None,
        }

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(pair_id) for pair_id in sorted(self.pairs)]


# -- helpers -----------------------------------------------------------------------------------------------------


def _record_of(accepted: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(accepted.record.json)
    return decoded


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _error_of(body: bytes) -> tuple[str, str]:
    payload = _json(body)
    if isinstance(payload, dict):
        return printable(str(payload.get("code", "?")), 60), printable(str(payload.get("message", "")), 300)
    return "?", printable(body[:200].decode("utf-8", "replace"), 200)


def _rfc3339(value: float | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _local_maps(value: object) -> list[tuple[str, str]]:
    """Maps as the caller gives them, from its own side (``["local:peer", …]``), checked; default ↔ default."""
    return local_pairs(value)


def _maps_wire(pair: FederationPair) -> list[dict[str, str]]:
    return pair.local_maps()


def _manifest_endpoints(manifest: Mapping[str, Any], fallback: str) -> tuple[str, str]:
    """The peer's ``pair_endpoint`` and base endpoint from its verified manifest, each a checked URL."""
    federation = manifest.get("federation")
    if not isinstance(federation, dict):
        raise InvalidRequest("the peer's manifest has no federation section", code="MANIFEST_INVALID")
    pair_endpoint = validate_peer_url(federation.get("pair_endpoint"))
    base = federation.get("endpoint")
    endpoint = validate_peer_url(base) if base is not None else fallback
    if urlsplit(fallback).scheme == "https" and "http" in (urlsplit(pair_endpoint).scheme, urlsplit(endpoint).scheme):
        raise InvalidRequest("the peer's manifest downgrades https to http; refusing", code="MANIFEST_INVALID")
    return pair_endpoint, endpoint


def _snapshot(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {key: manifest[key] for key in MANIFEST_SNAPSHOT_KEYS if key in manifest}


def _without_signature(manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if manifest is None:
        return None
    return {key: value for key, value in manifest.items() if key != "signature"}


def _request_of(pair: FederationPair, own_did: str) -> PairRequest:
    """The request a responder pair came from, rebuilt from its record (for the answers to its polls)."""
    return PairRequest(
        pair_id=pair.pair_id,
        initiator_did=pair.peer_did,
        initiator_url=pair.peer_url,
        responder_did=own_did,
        maps=pair.maps,
        mode=pair.mode,
        poll_interval=pair.poll_interval,
        nonce=pair.nonce,
        issued_at=pair.created_at,
        token_sealed="",
        token_scopes=TOKEN_SCOPES,
        token_expires_at=pair.created_at + TOKEN_TTL,
        initiator_keys=pinned_keys(pair.peer_manifest, pair.peer_did),
    )
