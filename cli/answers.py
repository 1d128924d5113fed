"""What the CLI reads from a daemon's answers, as typed Structs decoded at the client boundary.

Each Struct names only the fields a command prints or decides on; other keys are ignored, so a
daemon that adds a field does not break an older CLI. A field a presenter cannot do without is
required, and a wrong type is refused: :meth:`spl.cli.client.Reply.into` turns either into one
error line naming the URL and the field, instead of a ``KeyError`` or a ``None`` printed as data.

These are the CLI's reading of the answers, not the daemon's contract (the routes build their
answers as dicts; ``docs/api.md`` is the contract), hence here and not in ``spl.core.wire``.
``-o json`` still prints the answer as the daemon sent it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

__all__ = [
    "ActorAnswer",
    "ActorList",
    "ActorRegistration",
    "ChildOutcomeAnswer",
    "ForkAnswer",
    "ForkChild",
    "JoinChild",
    "JoinDecisionAnswer",
    "JoinStatus",
    "TaskAnswer",
    "TaskList",
    "TreeNode",
    "AitlDecision",
    "AitlList",
    "ConsentGrant",
    "ConsentGrantList",
    "Discovery",
    "ErrorAnswer",
    "FederationPair",
    "FederationPairList",
    "FederationSync",
    "Health",
    "Identity",
    "Namespace",
    "NamespaceList",
    "Pair",
    "PairCreated",
    "PairError",
    "PairList",
    "PairStats",
    "RecordAnswer",
    "RecordList",
    "Status",
    "ThreadDetail",
    "ThreadList",
    "ThreadSummary",
    "Token",
    "TokenList",
    "TokenMinted",
]

Number = int | float
# Times in these answers are RFC 3339 strings; a number (POSIX seconds) is taken too, so a presenter never
# refuses a whole pair over how one timestamp is spelt.
Time = str | Number | None


class Answer(msgspec.Struct, kw_only=True):
    """Base of every answer: ``what`` says in words what was expected, for the error line."""

    what: ClassVar[str] = "an spl answer"


class ErrorAnswer(Answer):
    """The error envelope ``{object, type, code, message}`` (``error`` is the older spelling of ``code``)."""

    what: ClassVar[str] = "an spl error"
    type: Any = None  # the error class (``invalid_request_error``…), kept in ``-o json`` errors
    code: str | None = None
    error: str | None = None
    message: Any = None


class Identity(Answer):
    """``GET /v1/identity``; the CLI also builds one from the home when no daemon runs."""

    what: ClassVar[str] = "an spl identity"
    did: str
    endpoint_url: str | None = None
    key_fingerprint: str | None = None
    method: str | None = None
    source: str | None = None
    home: str | None = None
    scopes: list[str] = msgspec.field(default_factory=list)
    is_authenticated: bool = False


class SupervisedChild(Answer):
    id: str
    state: str
    restarts: int = 0
    last_error: str | None = None
    children: SupervisionTree | None = None


class SupervisionTree(Answer):
    children: list[SupervisedChild] = msgspec.field(default_factory=list)


class PairError(Answer):
    code: str | None = None
    message: str | None = None
    at: Time = None


class PairTransition(Answer):
    at: Time = None
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    reason: str | None = None


class Pair(Answer):
    """A sync pair as ``/v1/sync/pairs`` lists it; also the answer to each pair action (with ``pulled_now``…)."""

    what: ClassVar[str] = "an spl sync pair"
    pair_id: str
    direction: str | None = None
    peer_did: str | None = None
    peer_url: str | None = None
    thread_id: str | None = None
    mode: str | None = None
    poll_interval: Number | None = None
    has_token: bool = False
    state: str | None = None
    state_reason: str | None = None
    cursor: str | None = None
    stalled: bool = False
    lag_records: int = 0
    lag_seconds: Number | None = None
    records_per_minute: Number | None = None
    last_error: PairError | None = None
    last_success_at: Time = None
    next_retry_at: Time = None
    consecutive_failures: int = 0
    records_pulled: int = 0
    records_duplicate: int = 0
    records_refused: dict[str, int] = msgspec.field(default_factory=dict)
    errors_total: int = 0
    history: list[PairTransition] = msgspec.field(default_factory=list)
    warning: str | None = None
    pulled_now: int = 0
    refused_now: dict[str, int] = msgspec.field(default_factory=dict)


class PairList(Answer):
    what: ClassVar[str] = "a list of spl sync pairs"
    data: list[Pair]


class Latency(Answer):
    count: int = 0
    p50: Number | None = None
    p95: Number | None = None


class PairTotals(Answer):
    pulls: int | None = None


class PairStats(Answer):
    """``GET /v1/sync/pairs/{id}/stats``."""

    what: ClassVar[str] = "spl sync pair statistics"
    totals: PairTotals = msgspec.field(default_factory=PairTotals)
    errors_last_hour: int = 0
    records_last_minute: int = 0
    records_last_hour: int = 0
    latency_ms: Latency = msgspec.field(default_factory=Latency)


class Federation(Answer):
    pairs: list[Pair] = msgspec.field(default_factory=list)


class Status(Answer):
    """``GET /v1/status``: what ``spl status`` prints and ``spl doctor`` checks."""

    what: ClassVar[str] = "an spl status"
    endpoint_url: str
    instance_did: str
    home: str
    sequence: int
    uptime_secs: Number
    auth_required: bool
    bind_host: str | None = None
    supervision: SupervisionTree = msgspec.field(default_factory=SupervisionTree)
    federation: Federation = msgspec.field(default_factory=Federation)


class HealthFederation(Answer):
    pairs_by_state: dict[str, int] = msgspec.field(default_factory=dict)


class Health(Answer):
    """``GET /health`` (also its 503 answer, which says what is degraded)."""

    what: ClassVar[str] = "an spl health answer"
    status: str
    version: str | None = None
    sequence: int | None = None
    auth_required: bool = False
    problems: list[str] = msgspec.field(default_factory=list)
    federation: HealthFederation = msgspec.field(default_factory=HealthFederation)


class Discovery(Answer):
    """``GET /.well-known/syncropel``: the manifest stays a dict, since its signature covers its exact JSON."""

    what: ClassVar[str] = "an spl discovery document"
    did: str | None = None
    federation_manifest: dict[str, Any] | None = None


class RecordAnswer(Answer):
    """A stored record; ``-o json`` prints the daemon's own JSON, the text line these fields."""

    what: ClassVar[str] = "an spl record"
    id: str
    act: str
    actor: str
    thread: str
    clock: int
    body: dict[str, Any] = msgspec.field(default_factory=dict)
    sequence: int | None = None


class RecordList(Answer):
    what: ClassVar[str] = "a list of spl records"
    data: list[RecordAnswer]


class ThreadSummary(Answer):
    id: str
    namespace: str | None = None
    record_count: int | None = None
    last_clock: int | None = None
    updated_at: Time = None


class ThreadList(Answer):
    what: ClassVar[str] = "a list of spl threads"
    data: list[ThreadSummary]


class Participant(Answer):
    actor: str
    role: str | None = None
    record_count: int | None = None


class ThreadDetail(ThreadSummary):
    what: ClassVar[str] = "an spl thread"
    state: str | None = None
    opened_by: str | None = None
    closed_by: str | None = None
    participants: list[Participant] = msgspec.field(default_factory=list)
    anomalies: list[str] = msgspec.field(default_factory=list)


class Token(Answer):
    token_id: str
    service_account_id: str | None = None
    scopes: list[str] = msgspec.field(default_factory=list)
    status: str | None = None
    label: str | None = None
    created_at: Time = None
    expires_at: Time = None
    pair_id: str | None = None


class TokenList(Answer):
    what: ClassVar[str] = "a list of spl tokens"
    data: list[Token]


class TokenMinted(Answer):
    what: ClassVar[str] = "a minted spl token"
    token: str
    token_id: str | None = None
    scopes: list[str] = msgspec.field(default_factory=list)


class Namespace(Answer):
    id: str
    level: str | None = None
    status: str | None = None
    description: str | None = None
    record_id: str | None = None


class NamespaceList(Answer):
    what: ClassVar[str] = "a list of spl namespaces"
    data: list[Namespace]


# -- federation pairs, AITL decisions and consent grants (docs/federation-pairs.md, "Routes") -----------------


class ConsentGrant(Answer):
    """A ``consent_grant``: which namespace's records may reach which, at which hash levels."""

    what: ClassVar[str] = "an spl consent grant"
    grant_id: str
    source_namespace: str | None = None
    target_namespace: str | None = None
    hash_levels: list[str] = msgspec.field(default_factory=list)
    threads: list[str] = msgspec.field(default_factory=list)
    purpose: str | None = None
    peer_did: str | None = None
    created_at: Time = None
    expires_at: Time = None
    revoked_at: Time = None
    status: str | None = None


class ActorRegistration(Answer):
    """The registration of an actor (``th_actor_registry``): its latest record."""

    what: ClassVar[str] = "an spl actor registration"
    did: str
    display_name: str
    category: str
    status: str
    record_id: str | None = None
    sequence: int | None = None


class ActorAnswer(Answer):
    """An ``actor`` of ``/v1/actors``: a registered DID, or one seen taking part in this instance's threads."""

    what: ClassVar[str] = "an spl actor"
    did: str
    kind: str | None = None
    status: str | None = None
    display_name: str | None = None
    category: str | None = None
    registered: bool = False
    record_count: int = 0
    thread_count: int = 0
    role: str | None = None
    registration: ActorRegistration | None = None


class ActorList(Answer):
    what: ClassVar[str] = "a list of spl actors"
    data: list[ActorAnswer]
    truncated: bool = False


class ConsentGrantList(Answer):
    what: ClassVar[str] = "a list of spl consent grants"
    data: list[ConsentGrant]


class NamespaceMapping(Answer):
    """One map of a federation pair, from this side: our namespace ``local`` ↔ the peer's ``peer``."""

    local: str
    peer: str


class FederationCursors(Answer):
    """Where each direction has reached: opaque to the CLI, shown as they come (a string or a sequence number)."""

    pull: str | int | None = None  # where our pulls from the peer have reached (the peer's cursor)
    serve: str | int | None = None  # where the peer's pulls from us have reached


class FederationLag(Answer):
    in_records: int | None = None
    in_seconds: Number | None = None
    out_records: int | None = None  # what the peer has not pulled from us yet, when the daemon knows it
    served_at: Time = None  # when the peer last pulled from us


class FederationPull(Answer):
    """The pull loop of a pair (this side pulling the peer): the sync-pair status, times in POSIX seconds."""

    state: str | None = None
    state_reason: str | None = None
    last_error: PairError | None = None
    consecutive_failures: int = 0
    next_retry_at: Time = None
    records_pulled: int = 0
    records_duplicate: int = 0
    records_refused: dict[str, int] = msgspec.field(default_factory=dict)
    errors_total: int = 0
    stalled: bool = False


class OurToken(Answer):
    """The token this instance minted for the peer: its id only, never the token."""

    token_id: str | None = None
    scopes: list[str] = msgspec.field(default_factory=list)
    expires_at: Time = None


class TheirToken(Answer):
    """Whether the peer's token for us is stored (it is never shown)."""

    present: bool = False
    scopes: list[str] = msgspec.field(default_factory=list)
    expires_at: Time = None


class FederationTokens(Answer):
    ours: OurToken | None = None
    theirs: TheirToken | None = None


class FederationPair(Answer):
    """A ``federation_pair`` as ``/v1/federation/pairs`` lists it and each lifecycle action answers it."""

    what: ClassVar[str] = "an spl federation pair"
    pair_id: str
    role: str | None = None
    peer_did: str | None = None
    peer_url: str | None = None
    state: str | None = None
    state_reason: str | None = None
    mode: str | None = None
    poll_interval: Number | None = None
    maps: list[NamespaceMapping] = msgspec.field(default_factory=list)
    thread_allow: list[str] = msgspec.field(default_factory=list)
    created_at: Time = None
    last_refresh_at: Time = None
    last_sync_at: Time = None
    peer_manifest: dict[str, Any] | None = None  # the verified snapshot; its shape is the peer's
    cursors: FederationCursors = msgspec.field(default_factory=FederationCursors)
    lag: FederationLag = msgspec.field(default_factory=FederationLag)
    grants: list[ConsentGrant] = msgspec.field(default_factory=list)
    tokens: FederationTokens = msgspec.field(default_factory=FederationTokens)
    pull: FederationPull | None = None
    transitions: list[str] = msgspec.field(default_factory=list)  # what a refresh moved through


class FederationPairList(Answer):
    what: ClassVar[str] = "a list of spl federation pairs"
    data: list[FederationPair]


class PairStep(Answer):
    """One line of ``spl federation pair``'s progress, as the daemon did it."""

    ok: bool
    line: str


class InitialSync(Answer):
    records: int | None = None


class PairCreated(Answer):
    """What ``POST /v1/federation/pairs`` adds to the pair: the steps it took and the first pull."""

    what: ClassVar[str] = "an spl federation pair answer"
    steps: list[PairStep] = msgspec.field(default_factory=list)
    initial_sync: InitialSync | None = None


class SyncPeer(Answer):
    asked: bool = False
    pulled: int | None = None
    error: Any = None  # a string by the contract; a peer's {code, message} is shown too


class FederationSync(Answer):
    """``POST /v1/federation/pairs/{id}/sync``: what moved each way."""

    what: ClassVar[str] = "an spl federation sync answer"
    pair_id: str
    pulled: int = 0
    refused: dict[str, int] = msgspec.field(default_factory=dict)
    peer: SyncPeer = msgspec.field(default_factory=SyncPeer)


class AitlDecision(Answer):
    """A pair request waiting for this operator (``spl aitl approve|reject``)."""

    what: ClassVar[str] = "an spl AITL decision"
    pair_id: str
    kind: str | None = None
    initiator_did: str | None = None
    initiator_url: str | None = None
    maps: list[Any] = msgspec.field(default_factory=list)  # as the requester proposed them
    mode: str | None = None
    requested_at: Time = None


class AitlList(Answer):
    what: ClassVar[str] = "a list of spl AITL decisions"
    data: list[AitlDecision]


# --- tasks, sub-threads, joins (``spl task``, ``spl thread fork``, issue 12) ---------------------------------


class TaskAnswer(Answer):
    """A ``task`` of ``/v1/tasks``: the task fold's output for one thread."""

    what: ClassVar[str] = "an spl task"
    thread: str
    alias: str
    status: str
    title: str = ""
    assignee: str | None = None
    domain: str | None = None
    priority: str | None = None
    labels: list[str] = msgspec.field(default_factory=list)
    criteria: list[str] = msgspec.field(default_factory=list)
    opened_by: str | None = None
    closed_by: str | None = None
    reason: str | None = None
    parent: str | None = None
    record_count: int = 0
    created_at: Time = None
    updated_at: Time = None


class TaskList(Answer):
    what: ClassVar[str] = "a list of spl tasks"
    data: list[TaskAnswer]
    has_more: bool = False
    next_cursor: str | None = None


class ForkChild(Answer):
    thread: str
    alias: str | None = None
    goal: str | None = None


class ForkAnswer(Answer):
    """What ``POST /v1/tasks/{task}/fan-out`` and ``POST /v1/threads/{thread}/fork`` answer."""

    what: ClassVar[str] = "an spl fork"
    parent: str
    children: list[ForkChild]
    join: Any = None


class ChildOutcomeAnswer(Answer):
    status: str | None = None
    result: str | None = None
    closer: str | None = None


class TreeNode(Answer):
    """One thread of a sub-thread tree (``GET /v1/tasks/{task}/tree``), with its children."""

    what: ClassVar[str] = "an spl sub-thread tree"
    thread: str
    alias: str | None = None
    status: str | None = None
    outcome: ChildOutcomeAnswer | None = None
    children: list[TreeNode] = msgspec.field(default_factory=list)
    truncated: bool = False


class JoinChild(Answer):
    thread: str
    alias: str | None = None
    status: str | None = None
    outcome: ChildOutcomeAnswer | None = None


class JoinDecisionAnswer(Answer):
    verdict: str
    accepted: int = 0
    rejected: int = 0
    open: int = 0
    total: int = 0
    reason: str = ""


class JoinStatus(Answer):
    """``GET /v1/tasks/{task}/join``: the parent's predicate, its children and the decision now."""

    what: ClassVar[str] = "an spl join status"
    thread: str
    decision: JoinDecisionAnswer
    state: str | None = None
    join: Any = None
    children: list[JoinChild] = msgspec.field(default_factory=list)
