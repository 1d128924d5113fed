"""The API contract: an OpenAPI 3.1 document generated from the application's own route table.

``GET /openapi.json`` (``routes_openapi.py``) serves it. The paths come from walking ``app.url_map``, so every
route is in the document the moment its blueprint is registered, described or not: a route this module knows
(:data:`OPERATIONS`) gets its parameters, request body, success answer and the errors it can give; any other
route still appears, with a generic JSON body for a write and the error answers every route can give.

Request bodies with a wire type (``spl.core.wire``) take their schema from msgspec, so the contract and the
decoder cannot drift; the other shapes are hand-written JSON Schema in :data:`SCHEMAS`. Response schemas are
deliberately open (extra fields allowed): they pin what a client relies on (the fields, their types, times as
RFC 3339 text), not every field an answer may grow.

Every error is the JSON envelope of spec §15.9 (``ErrorEnvelope``). Which statuses an operation lists follows
the gates of ``transport/app.py``: 400 for a bad parameter or body, 401/403 unless the route is open, 404 for a
path naming something, 413/415 for a write, 421 (auth off, a non-loopback ``Host``), 503 (emergency freeze,
federation starting, store unavailable), plus the statuses a route adds (409 conflicts, 422, 408).

Pure: nothing here does I/O; ``routes_openapi.document_for`` builds the document once per application and keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from spl.core import tokens
from spl.core.manifest import VERSION
from spl.core.wire import NamespaceCreate, RecordPush, RecordSubmission, TokenMint

__all__ = ["OPENAPI_VERSION", "Operation", "OPERATIONS", "build_document"]

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{name}"
JSON = "application/json"
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
DOCUMENTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")  # HEAD and OPTIONS are answered from the route table


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


TIME = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
OPTIONAL_TIME = _nullable(TIME)
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
COUNT = {"type": "integer", "minimum": 0}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
OBJECT: dict[str, Any] = {"type": "object"}
ANY: dict[str, Any] = {}


def _object(required: Iterable[str] = (), **properties: Any) -> dict[str, Any]:
    """An open JSON object schema: the named properties typed, ``required`` present, other fields allowed."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    listed = list(required)
    if listed:
        schema["required"] = listed
    return schema


def _const(value: str) -> dict[str, str]:
    return {"type": "string", "const": value}


def _list_of(item: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return _object(["object", "data"], object=_const("list"), data={"type": "array", "items": item}, **extra)


PAGING = {"has_more": BOOLEAN, "next_cursor": _nullable(STRING)}

# Hand-written schemas (the shapes without a msgspec wire type), by component name.
SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorEnvelope": {
        "type": "object",
        "description": "Every error, on every route (spec §15.9). `error` repeats `code` for older SDK readers.",
        "required": ["object", "type", "code", "message"],
        "properties": {
            "object": _const("error"),
            "type": STRING,
            "code": {"type": "string", "description": "machine-readable, e.g. INVALID_RECORD"},
            "error": STRING,
            "message": {"type": "string", "description": "names the field at fault and the fix"},
        },
    },
    "Record": _object(
        ["id", "act", "actor", "thread", "clock", "sequence", "created_at"],
        id={"type": "string", "pattern": "^[0-9a-f]{64}$"},
        act=STRING,
        actor=STRING,
        thread=STRING,
        clock=INTEGER,
        body=_nullable(OBJECT),
        parents=_nullable({"type": "array", "items": STRING}),
        sequence=INTEGER,
        created_at=TIME,
    ),
    "RecordList": _list_of(ref("Record")),
    "Thread": _object(
        ["object", "id", "record_count", "updated_at"],
        object=_const("thread"),
        id=STRING,
        namespace=STRING,
        record_count=COUNT,
        last_clock=INTEGER,
        first_sequence=INTEGER,
        last_sequence=INTEGER,
        updated_at=TIME,
        state=STRING,
        participants={"type": "array", "items": OBJECT},
        anomalies={"type": "array", "items": STRING},
    ),
    "ThreadList": _list_of(ref("Thread"), **PAGING),
    "ThreadId": _object(["object", "thread", "seed"], object=_const("thread_id"), thread=STRING, seed=OBJECT),
    "Fork": _object(["object", "parent", "children"], object=_const("fork"), parent=STRING, children={"type": "array"}),
    "Tree": _object(["object", "thread", "children"], object=_const("tree"), thread=STRING, children={"type": "array"}),
    "Join": _object(["object", "thread", "decision"], object=_const("join"), thread=STRING, decision=OBJECT),
    "Token": _object(
        ["object", "token_id", "scopes", "created_at", "status"],
        object=_const("token"),
        token_id=STRING,
        env=STRING,
        service_account_id=STRING,
        label=STRING,
        scopes={"type": "array", "items": STRING},
        created_at=TIME,
        revoked_at=OPTIONAL_TIME,
        expires_at=OPTIONAL_TIME,
        status=STRING,
    ),
    "TokenList": _list_of(ref("Token")),
    "MintedToken": {"allOf": [ref("Token"), _object(["token"], token={"type": "string", "description": "shown once"})]},
    "RevokedToken": _object(["object", "token_id", "status"], object=_const("token"), token_id=STRING, status=STRING),
    "Namespace": _object(["object", "id"], object=_const("namespace"), id=STRING, description=STRING),
    "NamespaceList": _list_of(ref("Namespace")),
    "Health": _object(
        ["status", "problems", "instance_did", "sequence", "uptime_secs"],
        status={"enum": ["ok", "degraded", "stopping"]},
        problems={"type": "array", "items": STRING},
        service=STRING,
        version=STRING,
        instance_did=STRING,
        sequence=INTEGER,
        uptime_secs={"type": "number", "description": "seconds since the daemon started (a duration)"},
        auth_required=BOOLEAN,
        federation=OBJECT,
        fleet=OBJECT,
    ),
    "Identity": _object(
        ["did", "method", "is_authenticated", "scopes"],
        object=_const("identity"),
        did=STRING,
        actor=STRING,
        method=STRING,
        key_fingerprint=STRING,
        endpoint_url=STRING,
        is_authenticated=BOOLEAN,
        scopes={"type": "array", "items": STRING},
        service_account_id=_nullable(STRING),
    ),
    "Capabilities": _object(["object"], object=_const("capabilities_manifest")),
    "Discovery": _object(
        ["did", "capabilities_manifest", "federation_manifest"],
        object=_const("discovery"),
        did=STRING,
        capabilities_manifest=OBJECT,
        federation_manifest=OBJECT,
    ),
    "Status": _object(
        ["object", "instance_did", "sequence", "uptime_secs", "supervision"],
        object=_const("status"),
        instance_did=STRING,
        endpoint_url=STRING,
        auth_required=BOOLEAN,
        sequence=INTEGER,
        uptime_secs=NUMBER,
        fleet=ref("FleetControl"),
        supervision=OBJECT,
        streams=OBJECT,
        federation=_object(pairs={"type": "array", "items": ref("SyncPair")}),
    ),
    "FleetControl": _object(
        ["object", "level", "frozen"],
        object=_const("fleet_control"),
        level={"enum": ["none", "soft", "hard", "emergency"]},
        frozen=BOOLEAN,
        since=_nullable(STRING),
        reason=STRING,
        record_id=_nullable(STRING),
    ),
    "PairError": _object(["code", "message", "at"], code=STRING, message=STRING, at=TIME),
    "SyncPair": _object(
        ["object", "pair_id", "state"],
        object=_const("sync_pair"),
        pair_id=STRING,
        peer_did=STRING,
        peer_url=STRING,
        thread_id=STRING,
        mode=STRING,
        poll_interval=NUMBER,
        state=STRING,
        last_error=_nullable(ref("PairError")),
        last_success_at=OPTIONAL_TIME,
        next_retry_at=OPTIONAL_TIME,
        lag_seconds=NUMBER,
        history={"type": "array", "items": _object(["at"], at=TIME)},
        has_token=BOOLEAN,
    ),
    "SyncPairList": _list_of(ref("SyncPair")),
    "SyncPairStats": _object(
        ["object", "pair_id"],
        object=_const("sync_pair_stats"),
        pair_id=STRING,
        poll=_object(next_retry_at=OPTIONAL_TIME),
    ),
    "SyncHealth": _object(["object", "pairs_total"], object=_const("sync_health"), pairs_total=COUNT),
    "SyncChanges": _object(
        ["object", "records", "next_cursor", "has_more"],
        object=_const("sync_changes"),
        records={"type": "array", "items": _object(["id", "record"], id=STRING, record=OBJECT)},
        next_cursor=STRING,
        has_more=BOOLEAN,
        pending=COUNT,
    ),
    "SyncIngestResult": _object(
        ["object", "accepted", "duplicates", "refused"],
        object=_const("sync_ingest_result"),
        accepted={"type": "array", "items": STRING},
        duplicates={"type": "array", "items": STRING},
        refused={"type": "array", "items": OBJECT},
    ),
    "FederationPair": _object(
        ["object", "pair_id", "state"],
        object=_const("federation_pair"),
        pair_id=STRING,
        role=STRING,
        peer_did=STRING,
        state=STRING,
        created_at=OPTIONAL_TIME,
        updated_at=OPTIONAL_TIME,
        last_refresh_at=OPTIONAL_TIME,
        last_sync_at=OPTIONAL_TIME,
        pull=_nullable(ref("SyncPair")),
    ),
    "FederationPairList": _list_of(ref("FederationPair")),
    "AitlDecision": _object(["object", "pair_id"], object=_const("aitl_decision"), pair_id=STRING, requested_at=TIME),
    "AitlList": _list_of(ref("AitlDecision")),
    "ConsentGrant": _object(
        ["grant_id"], grant_id=STRING, created_at=TIME, expires_at=OPTIONAL_TIME, revoked_at=OPTIONAL_TIME
    ),
    "ConsentGrantList": _list_of(ref("ConsentGrant")),
    "Task": _object(
        ["object", "thread", "alias", "status"],
        object=_const("task"),
        thread=STRING,
        alias=STRING,
        status=STRING,
        title=_nullable(STRING),
        created_at=OPTIONAL_TIME,
        updated_at=OPTIONAL_TIME,
        fold=ref("Thread"),
    ),
    "TaskList": _list_of(ref("Task"), **PAGING),
    "Actor": _object(
        ["object", "did", "kind", "registered", "status"],
        object=_const("actor"),
        did=STRING,
        kind={"enum": ["instance", "participant", "registered"]},
        registered=BOOLEAN,
        status=STRING,
    ),
    "ActorList": _list_of(ref("Actor"), truncated=BOOLEAN),
    "ImportSummary": _object(["object"], object=_const("import_summary")),
    "RestoreSummary": _object(["object"], object=_const("restore_summary")),
    # -- request bodies without a wire type ---------------------------------------------------------------------
    "ThreadMint": _object(
        kind={"enum": ["task", "sub"]},
        alias=STRING,
        nonce={"type": "string", "minLength": 1, "maxLength": 128},
        parent=STRING,
        actor=STRING,
        timestamp_us={"type": "integer", "minimum": 0},
    ),
    "ForkRequest": _object(
        ["goals"],
        goals={"type": "array", "items": STRING, "minItems": 1, "maxItems": 64},
        join=ANY,
        tasks=BOOLEAN,
        assignee=STRING,
    ),
    "TaskCreate": _object(
        ["title"],
        title=STRING,
        alias=STRING,
        assignee=STRING,
        domain=STRING,
        priority=STRING,
        labels={"type": "array", "items": STRING},
        criteria={"type": "array", "items": STRING},
        join=ANY,
    ),
    "TaskEvent": _object(
        ["event"],
        event={"enum": ["start", "done", "fail", "cancel", "block", "reopen", "comment"]},
        reason=STRING,
        summary=STRING,
        text=STRING,
    ),
    "FanOut": _object(["goals"], goals={"type": "array", "items": STRING, "minItems": 1}, join=ANY, assignee=STRING),
    "ActorRegistration": _object(
        ["did", "display_name", "category"],
        did=STRING,
        display_name={"type": "string", "minLength": 1, "maxLength": 128},
        category={"enum": ["human", "agent", "service", "instance", "adapter"]},
        status={"enum": ["active", "suspended", "retired"]},
    ),
    "SyncPairCreate": _object(
        ["peer_did", "peer_url", "thread_id"],
        peer_did=STRING,
        peer_url=STRING,
        thread_id=STRING,
        mode=STRING,
        poll_interval=NUMBER,
        token=STRING,
    ),
    "SyncPairUpdate": _object(mode=STRING, poll_interval=NUMBER),
    "FederationPairCreate": _object(["url"], url=STRING),
    "FederationPairUpdate": _object(mode=STRING, poll_interval=NUMBER, thread_allow={"type": "array"}, maps=ANY),
    "ConsentGrantCreate": _object(
        ["target_namespace"],
        target_namespace=STRING,
        source_namespace=STRING,
        hash_levels={"type": "array", "items": STRING},
        threads={"type": "array", "items": STRING},
        purpose=STRING,
        expires=ANY,
        peer_did=STRING,
    ),
    "Reason": _object(reason={"type": "string", "maxLength": 256}),
    "FleetKill": _object(["level", "reason"], level={"enum": ["soft", "hard", "emergency"]}, reason=STRING),
    "ExportRequest": _object(identity=BOOLEAN, carry_tokens=BOOLEAN, compress=BOOLEAN, passphrase=_nullable(STRING)),
    "SignedDocument": {"type": "object", "description": "a signed handshake document (docs/federation-pairs.md)"},
    "PairingCreate": _object(
        ["device"],
        device=STRING,
        scopes={"type": "array", "items": STRING},
        ttl_secs={"type": "number"},
        url=_nullable(STRING),
    ),
    "PairingRedeem": _object(["code"], code=STRING, label=STRING),
}

WIRE_TYPES = (RecordSubmission, NamespaceCreate, TokenMint, RecordPush)


@dataclass(frozen=True)
class Operation:
    """What the document says about one (method, route) beyond what the route table already tells."""

    summary: str
    scope: str | None = None  # the token scope it needs (None: open, or any authenticated caller)
    body: str | None = None  # request body schema component (JSON), or None
    body_required: bool = True
    body_media: tuple[str, ...] = (JSON,)
    query: tuple[tuple[str, dict[str, Any], bool], ...] = ()  # (name, schema, required)
    headers: tuple[tuple[str, dict[str, Any]], ...] = ()
    success: int = 200
    response: str | None = None  # success schema component (JSON)
    response_media: str = JSON
    errors: tuple[int, ...] = ()  # beyond those every operation of its kind gives
    also: tuple[int, ...] = ()  # other success statuses (e.g. 200 beside 201)


LIMIT = ("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}, False)
SEQUENCE = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
CURSOR = ("cursor", STRING, False)

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/health"): Operation("Liveness and readiness (503 when degraded or stopping)", response="Health"),
    ("GET", "/v1/identity"): Operation("This instance's DID and the caller's scopes", response="Identity"),
    ("GET", "/v1/capabilities"): Operation("The capabilities manifest", response="Capabilities"),
    ("GET", "/.well-known/syncropel"): Operation("Discovery: the DID and the signed manifests", response="Discovery"),
    ("GET", "/v1/status"): Operation("Identity, head, supervision tree, pairs", scope="config:read", response="Status"),
    ("GET", "/metrics"): Operation(
        "Prometheus text format", scope="metrics:read", response_media="text/plain; version=0.0.4"
    ),
    ("POST", "/v1/records"): Operation(
        "Emit a record (201 new, 200 already stored)",
        scope="records:write",
        body="RecordSubmission",
        success=201,
        also=(200,),
        response="Record",
        errors=(409,),
    ),
    ("GET", "/v1/records"): Operation(
        "List records (reserved threads only when named)",
        scope="records:read",
        query=(
            ("thread", STRING, False),
            ("actor", STRING, False),
            ("since", SEQUENCE, False),
            LIMIT,
            ("after_sequence", SEQUENCE, False),
        ),
        response="RecordList",
    ),
    ("GET", "/v1/records/{record_id}"): Operation("One record by id", scope="records:read", response="Record"),
    ("GET", "/v1/threads"): Operation(
        "List threads, most recently written first",
        scope="records:read",
        query=(LIMIT, ("namespace", STRING, False), CURSOR),
        response="ThreadList",
    ),
    ("POST", "/v1/threads"): Operation(
        "Mint a thread id (writes nothing)", scope="threads:write", body="ThreadMint", response="ThreadId"
    ),
    ("GET", "/v1/threads/{thread}"): Operation("A thread's summary and fold", scope="records:read", response="Thread"),
    ("GET", "/v1/threads/{thread}/records"): Operation(
        "A thread's records",
        scope="records:read",
        query=(LIMIT, ("since", SEQUENCE, False)),
        response="RecordList",
    ),
    ("GET", "/v1/threads/{thread}/watch"): Operation(
        "Live records of a thread (Server-Sent Events; resume with Last-Event-ID)",
        scope="records:read",
        query=(("since_clock", SEQUENCE, False),),
        headers=(("last-event-id", STRING),),
        response_media="text/event-stream",
    ),
    ("POST", "/v1/threads/{thread}/fork"): Operation(
        "Fork sub-threads", scope="threads:write", body="ForkRequest", success=201, response="Fork", errors=(409,)
    ),
    ("GET", "/v1/threads/{thread}/tree"): Operation(
        "A thread's sub-thread tree", scope="records:read", response="Tree"
    ),
    ("GET", "/v1/threads/{thread}/join"): Operation("A parent's join status", scope="records:read", response="Join"),
    ("GET", "/v1/threads/snapshot"): Operation(
        "A .snap.jsonl snapshot of 1-100 threads",
        scope="records:read",
        query=(("threads", {"type": "string", "minLength": 1}, True),),
        response_media="application/x-ndjson",
    ),
    ("POST", "/v1/threads/restore"): Operation(
        "Restore a .snap.jsonl snapshot",
        scope="admin",
        body="Snapshot",
        body_media=("application/x-ndjson",),
        response="RestoreSummary",
    ),
    ("GET", "/v1/namespaces"): Operation("Registered namespaces", scope="records:read", response="NamespaceList"),
    ("GET", "/v1/namespaces/{namespace}"): Operation("One namespace", scope="records:read", response="Namespace"),
    ("POST", "/v1/namespaces"): Operation(
        "Register a namespace",
        scope="config:write",
        body="NamespaceCreate",
        success=201,
        response="Namespace",
        errors=(409,),
    ),
    ("GET", "/v1/tokens"): Operation("Tokens (metadata only)", scope="admin", response="TokenList"),
    ("POST", "/v1/tokens"): Operation(
        "Mint a token (its plaintext is shown once)",
        scope="admin",
        body="TokenMint",
        success=201,
        response="MintedToken",
    ),
    ("DELETE", "/v1/tokens/{token_id}"): Operation(
        "Revoke a token", scope="admin", body="Reason", body_required=False, response="RevokedToken"
    ),
    ("GET", "/v1/sync/changes"): Operation(
        "The change feed a peer pulls (JSON page, long poll, or SSE with feed=continuous)",
        scope="federation:sync",
        query=(
            ("thread", STRING, False),
            ("namespace", STRING, False),
            ("since", STRING, False),
            LIMIT,
            ("feed", {"enum": ["normal", "longpoll", "continuous"]}, False),
            ("timeout", {"type": "number", "minimum": 0, "maximum": 30}, False),
            ("target_namespace", STRING, False),
        ),
        response="SyncChanges",
        errors=(422,),
    ),
    ("POST", "/v1/sync/records"): Operation(
        "Push signed records", scope="federation:sync", body="RecordPush", response="SyncIngestResult", errors=(422,)
    ),
    ("GET", "/v1/sync/pairs"): Operation("Sync pairs", scope="federation:manage", response="SyncPairList"),
    ("POST", "/v1/sync/pairs"): Operation(
        "Create a sync pair",
        scope="federation:manage",
        body="SyncPairCreate",
        success=201,
        response="SyncPair",
        errors=(409,),
    ),
    ("GET", "/v1/sync/pairs/{pair_id}"): Operation("One sync pair", scope="federation:manage", response="SyncPair"),
    ("PATCH", "/v1/sync/pairs/{pair_id}"): Operation(
        "Change a pair's mode or poll interval", scope="federation:manage", body="SyncPairUpdate", response="SyncPair"
    ),
    ("DELETE", "/v1/sync/pairs/{pair_id}"): Operation(
        "Remove a sync pair", scope="federation:manage", body="Reason", body_required=False, response="SyncPair"
    ),
    ("POST", "/v1/sync/pairs/{pair_id}/pause"): Operation(
        "Pause a pair", scope="federation:manage", body="Reason", body_required=False, response="SyncPair"
    ),
    ("POST", "/v1/sync/pairs/{pair_id}/resume"): Operation(
        "Resume a pair", scope="federation:manage", body="Reason", body_required=False, response="SyncPair"
    ),
    ("POST", "/v1/sync/pairs/{pair_id}/kick"): Operation(
        "Pull now (wait=1: report what was pulled)",
        scope="federation:manage",
        body="Reason",
        body_required=False,
        query=(("wait", {"enum": ["0", "1", "true", "false", "yes", "no"]}, False),),
        response="SyncPair",
    ),
    ("GET", "/v1/sync/pairs/{pair_id}/stats"): Operation(
        "A pair's statistics", scope="federation:manage", response="SyncPairStats"
    ),
    ("GET", "/v1/sync/health"): Operation("Every pair's health", scope="federation:manage", response="SyncHealth"),
    ("POST", "/v1/federation/pair"): Operation(
        "Handshake: a peer's signed pair request", body="SignedDocument", also=(201, 202), errors=(409,)
    ),
    ("POST", "/v1/federation/pair/poll"): Operation(
        "Handshake: poll a pending request", body="SignedDocument", also=(201, 202), errors=(409,)
    ),
    ("POST", "/v1/federation/pair/notify"): Operation(
        "Handshake: a peer's signed notice", body="SignedDocument", errors=(409,)
    ),
    ("POST", "/v1/federation/pair/moved"): Operation(
        "Handshake: a peer's signed endpoint-moved notice", body="SignedDocument", errors=(409,)
    ),
    ("GET", "/v1/federation/pairs"): Operation(
        "Federation pairs", scope="federation:manage", response="FederationPairList"
    ),
    ("POST", "/v1/federation/pairs"): Operation(
        "Ask a peer to pair",
        scope="federation:manage",
        body="FederationPairCreate",
        success=201,
        also=(200, 202),
        response="FederationPair",
        errors=(409, 502),
    ),
    ("GET", "/v1/federation/pairs/{pair_id}"): Operation(
        "One federation pair", scope="federation:manage", response="FederationPair"
    ),
    ("PATCH", "/v1/federation/pairs/{pair_id}"): Operation(
        "Change a federation pair",
        scope="federation:manage",
        body="FederationPairUpdate",
        response="FederationPair",
        errors=(409,),
    ),
    ("POST", "/v1/federation/pairs/{pair_id}/{action}"): Operation(
        "pause, resume, refresh, revoke or sync a federation pair",
        scope="federation:manage",
        body="Reason",
        body_required=False,
        response="FederationPair",
        errors=(409, 502),
    ),
    ("GET", "/v1/aitl"): Operation("Pair requests awaiting a decision", scope="federation:manage", response="AitlList"),
    ("POST", "/v1/aitl/{pair_id}/{decision}"): Operation(
        "approve or reject a pair request",
        scope="federation:manage",
        body="Reason",
        body_required=False,
        response="FederationPair",
        errors=(409, 502),
    ),
    ("GET", "/v1/consent/grants"): Operation("Consent grants", scope="federation:manage", response="ConsentGrantList"),
    ("POST", "/v1/consent/grants"): Operation(
        "Grant consent", scope="federation:manage", body="ConsentGrantCreate", success=201, response="ConsentGrant"
    ),
    ("GET", "/v1/consent/grants/{grant_id}"): Operation(
        "One consent grant", scope="federation:manage", response="ConsentGrant"
    ),
    ("DELETE", "/v1/consent/grants/{grant_id}"): Operation(
        "Revoke a consent grant",
        scope="federation:manage",
        body="Reason",
        body_required=False,
        response="ConsentGrant",
        errors=(409,),
    ),
    ("POST", "/v1/portability/export"): Operation(
        "Export this steward as a signed bundle (streamed)",
        scope="admin",
        body="ExportRequest",
        body_required=False,
        response_media="application/zstd",
    ),
    ("POST", "/v1/portability/import"): Operation(
        "Import a bundle (streamed upload)",
        scope="admin",
        body="Bundle",
        body_media=("application/zstd", "application/x-tar", "application/octet-stream"),
        query=(("dry_run", STRING, False), ("force_overwrite", STRING, False)),
        headers=(("spl-bundle-passphrase", STRING),),
        response="ImportSummary",
        errors=(408, 409),
    ),
    ("GET", "/v1/actors"): Operation("Registered and participating actors", scope="records:read", response="ActorList"),
    ("POST", "/v1/actors"): Operation(
        "Register an actor (201 new, 200 updated)",
        scope="config:write",
        body="ActorRegistration",
        success=201,
        also=(200,),
        response="Actor",
        errors=(409,),
    ),
    ("GET", "/v1/actors/{did}"): Operation("One actor", scope="records:read", response="Actor"),
    ("POST", "/v1/tasks"): Operation(
        "Open a task", scope="records:write", body="TaskCreate", success=201, response="Task", errors=(409,)
    ),
    ("GET", "/v1/tasks"): Operation(
        "Tasks, newest first",
        scope="records:read",
        query=(
            ("status", STRING, False),
            ("assignee", STRING, False),
            ("label", STRING, False),
            LIMIT,
            CURSOR,
        ),
        response="TaskList",
    ),
    ("GET", "/v1/tasks/{key}"): Operation("One task and its thread's fold", scope="records:read", response="Task"),
    ("POST", "/v1/tasks/{key}/events"): Operation(
        "A task event (start, done, comment…)", scope="records:write", body="TaskEvent", response="Task", errors=(409,)
    ),
    ("POST", "/v1/tasks/{key}/fan-out"): Operation(
        "Child tasks", scope="records:write", body="FanOut", success=201, response="Fork", errors=(409,)
    ),
    ("GET", "/v1/tasks/{key}/tree"): Operation("A task's tree", scope="records:read", response="Tree"),
    ("GET", "/v1/tasks/{key}/join"): Operation("A task's join status", scope="records:read", response="Join"),
    ("GET", "/v1/fleet/control"): Operation("The kill switch's state", scope="config:read", response="FleetControl"),
    ("POST", "/v1/fleet/kill"): Operation(
        "Freeze the instance", scope="admin", body="FleetKill", response="FleetControl", errors=(409,)
    ),
    ("POST", "/v1/fleet/unkill"): Operation(
        "Lift the freeze", scope="admin", body="Reason", response="FleetControl", errors=(409,)
    ),
    # Device pairing (docs/pairing.md)
    ("POST", "/v1/pairings"): Operation(
        "Pair a device: a one-time code and deep link (shown once)",
        scope="admin",
        body="PairingCreate",
        success=201,
        errors=(409,),
    ),
    ("GET", "/v1/pairings"): Operation("Device pairings", scope="admin"),
    ("DELETE", "/v1/pairings/{device}"): Operation("Revoke one device", scope="admin", body_required=False),
    ("POST", "/v1/pairing/redeem"): Operation(
        "Redeem a pairing code for the device's own token (open; rate-limited)",
        body="PairingRedeem",
        success=201,
        errors=(409, 410, 429),
    ),
    # Discovery (docs/discovery.md)
    ("GET", "/v1/discovery/mdns"): Operation("Peers seen on mDNS (_syncropel._tcp.local)", scope="federation:manage"),
    ("GET", "/.well-known/did.json"): Operation(
        "This instance's did:web DID document (404 unless [sync.discovery] did_web_domain is set)", errors=(404,)
    ),
    ("POST", "/v1/directory"): Operation(
        "Register in this directory with a signed manifest (open)",
        body="SignedDocument",
        success=201,
        errors=(404, 409),
    ),
    ("GET", "/v1/directory"): Operation(
        "Directory entries, optionally by namespace", query=(("namespace", STRING, False),), errors=(404,)
    ),
    ("GET", "/v1/directory/resolve"): Operation(
        "Resolve a DID to its registered endpoint", query=(("did", STRING, True),), errors=(404,)
    ),
    # The mesh-health page (docs/ui.md)
    ("GET", "/ui"): Operation("The mesh-health page (HTML)", response_media="text/html"),
    ("GET", "/ui/app.js"): Operation("The page's script", response_media="text/javascript"),
    ("GET", "/ui/style.css"): Operation("The page's style sheet", response_media="text/css"),
    ("GET", "/ui/favicon.svg"): Operation("The page's icon", response_media="image/svg+xml"),
    ("GET", "/v1/ui/events"): Operation(
        "The page's data: a server-sent event stream of mesh snapshots",
        scope="metrics:read",
        response_media="text/event-stream",
    ),
    # Identity rotation (docs/identity.md)
    ("POST", "/v1/identity/rotate"): Operation(
        "Rotate the signing key; pairs are kept", scope="admin", body_required=False, errors=(409,)
    ),
    ("GET", "/v1/identity/keys"): Operation("The instance's keys and rotation chain", scope="config:read"),
}

# Request bodies that are not JSON: their schema as OpenAPI describes a byte stream.
BYTE_BODIES = {
    "Bundle": {"type": "string", "contentMediaType": "application/octet-stream"},
    "Snapshot": {"type": "string", "description": "JSON lines: the records as stored, then the manifest line"},
}

ERROR_DESCRIPTIONS = {
    400: "Bad request: a parameter or the body is malformed (the message names the field and the fix)",
    401: "No valid token (AUTH_REQUIRED, TOKEN_EXPIRED, TOKEN_REVOKED)",
    403: "The token lacks the scope, or the thread is reserved (RESERVED_THREAD)",
    404: "Nothing by that name on this instance",
    408: "The upload went silent",
    409: "Conflicts with the current state (the message says which)",
    410: "Gone: it existed but expired or was revoked (a pairing code)",
    413: "The body is larger than the route accepts",
    415: "A write without content-type: application/json (UNSUPPORTED_MEDIA_TYPE)",
    421: "Auth off and the Host header is not a loopback name (HOST_NOT_ALLOWED)",
    422: "The records or the request cannot be processed (e.g. SIGNATURE_REQUIRED)",
    429: "Too many attempts from this address; wait as the message says",
    502: "The peer answered with something this daemon cannot use",
    503: "Unavailable: emergency freeze, federation starting, the store unavailable or full",
}

_CONVERTED = re.compile(r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """A werkzeug rule (``/v1/threads/<thread>``, ``/x/<path:rest>``) as an OpenAPI path (``/v1/threads/{thread}``)."""
    return _CONVERTED.sub(lambda match: "{" + match.group("name") + "}", rule)


def _path_parameters(rule: str) -> list[dict[str, Any]]:
    parameters = []
    for match in _CONVERTED.finditer(rule):
        converter = match.group("converter") or "default"
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if converter == "int":
            schema = {"type": "integer", "minimum": 0}
        parameter: dict[str, Any] = {"name": match.group("name"), "in": "path", "required": True, "schema": schema}
        if converter == "path":
            parameter["description"] = "may contain '/'"
        parameters.append(parameter)
    return parameters


def _error_statuses(method: str, path: str, operation: Operation | None, is_open: bool) -> list[int]:
    statuses = {400, 421, 503}
    if not is_open:
        statuses |= {401, 403}
    if "{" in path:
        statuses.add(404)
    if method in WRITE_METHODS:
        statuses |= {413, 415}
    if operation is None:
        statuses |= {404, 409, 422, 429}  # undescribed: allow what any route may give
    else:
        statuses |= set(operation.errors)
    return sorted(statuses)


def _request_body(method: str, operation: Operation | None) -> dict[str, Any] | None:
    if operation is None:
        if method not in WRITE_METHODS:
            return None
        return {"required": method != "DELETE", "content": {JSON: {"schema": OBJECT}}}
    if operation.body is None:
        return None
    schema = BYTE_BODIES.get(operation.body) or ref(operation.body)
    return {
        "required": operation.body_required,
        "content": {media: {"schema": schema} for media in operation.body_media},
    }


def _success(operation: Operation | None) -> dict[str, Any]:
    if operation is None:
        return {"2XX": {"description": "Success (this route has no detailed entry yet)"}}
    if operation.response is not None:
        content = {operation.response_media: {"schema": ref(operation.response)}}
    else:
        content = {operation.response_media: {}}
    answers = {str(operation.success): {"description": operation.summary, "content": content}}
    for status in operation.also:
        answers[str(status)] = {"description": operation.summary, "content": content}
    return answers


def _operation(
    method: str, path: str, rule: str, endpoint: str, operation: Operation | None, is_open: bool
) -> dict[str, Any]:
    parameters = _path_parameters(rule)
    if operation is not None:
        for name, schema, required in operation.query:
            parameters.append({"name": name, "in": "query", "required": required, "schema": schema})
        for name, schema in operation.headers:
            parameters.append({"name": name, "in": "header", "required": False, "schema": schema})
    answer: dict[str, Any] = {
        "operationId": f"{endpoint}.{method.lower()}",
        "summary": operation.summary if operation is not None else f"{method} {path}",
        "tags": [endpoint.partition(".")[0]],
        "responses": {
            **_success(operation),
            **{
                str(status): {"$ref": f"#/components/responses/E{status}"}
                for status in _error_statuses(method, path, operation, is_open)
            },
        },
    }
    if parameters:
        answer["parameters"] = parameters
    body = _request_body(method, operation)
    if body is not None:
        answer["requestBody"] = body
    if is_open:
        answer["security"] = []  # no token needed, even with auth on
    elif operation is not None and operation.scope is not None:
        needs = "the `admin` scope" if operation.scope == "admin" else f"the `{operation.scope}` scope (or `admin`)"
        answer["description"] = f"Needs {needs}."
    return answer


def _wire_schemas() -> dict[str, Any]:
    """The msgspec wire types' JSON Schema components (refs already pointing into ``components.schemas``)."""
    _, components = msgspec.json.schema_components(WIRE_TYPES, ref_template=REF)
    return components


def build_document(
    routes: Iterable[tuple[str, frozenset[str] | set[str], str]], is_open: Callable[[str], bool]
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``routes`` (``(rule, methods, endpoint)`` as in ``app.url_map``).

    ``is_open`` says whether a concrete path is answered without a token (``transport/app.py``'s gate 4); a
    parameterised path is asked with its template, which no open prefix check mistakes for a concrete one.
    """
    paths: dict[str, dict[str, Any]] = {}
    for rule, methods, endpoint in sorted(routes, key=lambda route: route[0]):
        path = openapi_path(rule)
        entry = paths.setdefault(path, {})
        for method in DOCUMENTED_METHODS:
            if method in methods:
                operation = OPERATIONS.get((method, path))
                entry[method.lower()] = _operation(method, path, rule, endpoint, operation, is_open(path))
    schemas = {**_wire_schemas(), **SCHEMAS}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "spl (Syncropel daemon) HTTP API",
            "version": VERSION,
            "description": (
                "Every error is the ErrorEnvelope; every `*_at` field is an RFC 3339 UTC time. "
                "Writes must send content-type: application/json. Prose reference: docs/api.md. "
                f"Token scopes: {', '.join(tokens.SCOPES)}."
            ),
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer spl_<env>_…"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
            "schemas": schemas,
            "responses": {
                f"E{status}": {"description": text, "content": {JSON: {"schema": ref("ErrorEnvelope")}}}
                for status, text in ERROR_DESCRIPTIONS.items()
            },
        },
    }
