"""Record and thread commands: ``spl intend|do|know|learn|emit``, ``spl thread list|show|records|watch|…``.

Emitting fills what the SDK would: the actor defaults to the instance DID and the clock
to the current unix time in milliseconds. Should that clock collide (409
``DUPLICATE_CLOCK``, or an identical record already stored in the same millisecond) the
command retries with the next clock. An explicit ``--clock`` is never changed.

``spl thread records`` prints one line per record made only of content-addressed fields
(id, clock, act, actor, body), sorted by (clock, actor, id): two instances holding the
same records print byte-identical text, whatever order the records arrived in.

Text output shows what any client or peer wrote (actors, thread ids, bodies), so every such
field goes through :func:`spl.cli.output.safe`: no terminal escape and no line of its own.

``spl thread watch`` follows a thread over SSE and resumes after the last record it printed when the stream
ends (see its help).

``spl thread snapshot`` streams ``GET /v1/threads/snapshot`` straight to stdout or a 0600 file (never whole in
memory); ``spl thread restore`` posts one back. The format is :mod:`spl.core.snapshot`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, ClassVar
from urllib.parse import quote

import typer

from spl.cli.answers import (
    Answer,
    ErrorAnswer,
    ForkAnswer,
    Identity,
    RecordAnswer,
    RecordList,
    ThreadDetail,
    ThreadList,
)
from spl.cli.client import CliError, DaemonClient, decode_answer, load_httpx, one_line
from spl.cli.common import (
    OUTPUT,
    URL,
    DaemonError,
    DaemonUnreachable,
    call,
    client_for,
    compact_json,
    new_thread,
    now_ms,
    parse_body,
    wants_json,
)
from spl.cli.output import as_time, emit_item, emit_json, emit_list, safe, table
from spl.cli.tasks import parse_join_option, print_fork
from spl.core.errors import InvalidRequest
from spl.core.record import ACTS, DATA_TYPES, MAX_CLOCK
from spl.core.snapshot import MAX_LINE_BYTES, SnapshotManifest, split_threads

__all__ = ["emit", "intend", "thread_app"]

CLOCK_ATTEMPTS = 3
PAGE = 1000
BODY_WIDTH = 200

thread_app = typer.Typer(help="Threads: list them, show their state, print their records.", no_args_is_help=True)

BODY = typer.Option(None, "--body", "-b", help="Extra body fields: a JSON object, @file.json, or - to read stdin.")
ACTOR = typer.Option(None, "--actor", help="Actor DID (default: the instance DID).")
NAMESPACE = typer.Option(None, "--namespace", "-n", help="Set body.namespace (it must be registered).")
PARENTS = typer.Option(None, "--parent", help="Parent record id (repeatable).")


def _instance_did(client: DaemonClient) -> str:
    did = call(client, "GET", "/v1/identity").into(Identity).did
    if not did:
        raise CliError(f"the daemon at {client.url} did not report its DID; pass --actor")
    return did


def emit_record(
    client: DaemonClient,
    *,
    act: str,
    thread: str,
    body: dict[str, Any],
    actor: str | None = None,
    clock: int | None = None,
    data_type: str | None = None,
    parents: list[str] | None = None,
) -> tuple[dict[str, Any], bool]:
    """POST one record; returns (stored record, created). Auto clocks step past collisions."""
    auto = clock is None
    current = now_ms() if clock is None else clock
    envelope: dict[str, Any] = {
        "act": act,
        "actor": actor or _instance_did(client),
        "thread": thread,
        "body": body,
        "parents": sorted(set(parents or [])),
    }
    if data_type is not None:
        envelope["data_type"] = data_type
    for attempt in range(1, CLOCK_ATTEMPTS + 1):
        envelope["clock"] = current
        try:
            reply = call(client, "POST", "/v1/records", json_body=envelope)
        except DaemonError as exc:
            if auto and exc.code == "DUPLICATE_CLOCK" and attempt < CLOCK_ATTEMPTS:
                current += 1
                continue
            raise
        if auto and reply.status == 200 and attempt < CLOCK_ATTEMPTS:
            # An identical record from another call in the same millisecond: ours is a new one.
            current += 1
            continue
        reply.into(RecordAnswer)  # a stored record, or one error line naming what is missing
        return reply.payload, reply.status == 201
    raise CliError("could not find a free clock; pass --clock explicitly")  # pragma: no cover - loop returns


def _print_emitted(payload: dict[str, Any], created: bool, as_json: bool) -> None:
    if as_json:
        emit_json(payload)
        return
    record = decode_answer(payload, RecordAnswer, "the daemon")  # emit_record checked it already
    note = "" if created else "  (already stored: identical record)"
    typer.echo(f"{safe(record.act)} {safe(record.id)}{note}")
    typer.echo(f"  thread: {safe(record.thread)}")
    typer.echo(f"  clock:  {safe(record.clock)}")


def _with_namespace(body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    if namespace is not None:
        body["namespace"] = namespace
    return body


def intend(
    goal: str = typer.Argument(..., help="The goal, in words."),
    thread: str | None = typer.Option(None, "--thread", "-t", help="Thread id (default: a fresh th_ + 64 hex)."),
    actor: str | None = ACTOR,
    body: str | None = BODY,
    namespace: str | None = NAMESPACE,
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Open a goal: emit an INTEND record (body {goal, kind: core.intent, _v: 1} plus --body).

    Example: spl intend --thread th_federation_demo "hello from A"
    """
    as_json = wants_json(output)
    fields = {"goal": goal, "kind": "core.intent", "_v": 1}
    fields.update(_with_namespace(parse_body(body), namespace))
    record, created = emit_record(
        client_for(url), act="INTEND", thread=thread or new_thread(), body=fields, actor=actor
    )
    _print_emitted(record, created, as_json)


THREAD_REQUIRED = typer.Option(..., "--thread", "-t", help="Thread id.")


def do(
    summary: str = typer.Argument(..., help="What was done."),
    thread: str = THREAD_REQUIRED,
    cancels: str | None = typer.Option(None, "--cancels", help="An INTEND id this DO cancels (closes as cancelled)."),
    actor: str | None = ACTOR,
    body: str | None = BODY,
    namespace: str | None = NAMESPACE,
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Record an action: emit a DO record with body {summary} plus --body.

    Example: spl do "deployed v2" --thread th_deploy_v2
    """
    as_json = wants_json(output)
    fields = _with_namespace({"summary": summary}, namespace)
    if cancels is not None:
        fields["cancels"] = cancels
    fields.update(parse_body(body))
    record, created = emit_record(client_for(url), act="DO", thread=thread, body=fields, actor=actor)
    _print_emitted(record, created, as_json)


def know(
    summary: str = typer.Argument(..., help="The observation or outcome."),
    thread: str = THREAD_REQUIRED,
    fulfills: str | None = typer.Option(None, "--fulfills", help="An INTEND id this KNOW fulfils (closes as done)."),
    verdict: str | None = typer.Option(None, "--verdict", help="accept or reject (reject cancels the thread)."),
    actor: str | None = ACTOR,
    body: str | None = BODY,
    namespace: str | None = NAMESPACE,
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Record an observation: emit a KNOW record with body {summary} plus --body.

    Example: spl know "458/458 tests pass" --thread th_run_tests
    """
    as_json = wants_json(output)
    fields = _with_namespace({"summary": summary}, namespace)
    if fulfills is not None:
        fields["fulfills"] = fulfills
    if verdict is not None:
        if verdict not in ("accept", "reject"):
            raise CliError("--verdict must be accept or reject")
        fields["verdict"] = verdict
    fields.update(parse_body(body))
    record, created = emit_record(client_for(url), act="KNOW", thread=thread, body=fields, actor=actor)
    _print_emitted(record, created, as_json)


def learn(
    summary: str = typer.Argument(..., help="The insight or decision."),
    thread: str = THREAD_REQUIRED,
    actor: str | None = ACTOR,
    body: str | None = BODY,
    namespace: str | None = NAMESPACE,
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Record an insight or lasting decision: emit a LEARN record with body {summary} plus --body.

    Example: spl learn "deploys go out on Tuesdays" --thread th_ops
    """
    as_json = wants_json(output)
    fields = _with_namespace({"summary": summary}, namespace)
    fields.update(parse_body(body))
    record, created = emit_record(client_for(url), act="LEARN", thread=thread, body=fields, actor=actor)
    _print_emitted(record, created, as_json)


def emit(
    act: str = typer.Option(..., "--act", "-a", help=f"One of {', '.join(ACTS)}."),
    thread: str = THREAD_REQUIRED,
    actor: str | None = ACTOR,
    body: str | None = typer.Option(
        None, "--body", "-b", help="The record body: a JSON object, @file.json, or - to read stdin (default {})."
    ),
    clock: int | None = typer.Option(
        None, "--clock", help="Explicit clock (default: now in ms, stepping past collisions)."
    ),
    data_type: str | None = typer.Option(None, "--data-type", help=f"One of {', '.join(DATA_TYPES)} (default SCALAR)."),
    parent: list[str] | None = PARENTS,
    namespace: str | None = NAMESPACE,
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Emit any record (POST /v1/records) with the body taken as-is.

    Example: spl emit --act KNOW --thread th_x --body '{"summary": "ok"}' --parent <id>
    """
    as_json = wants_json(output)
    act = act.upper()
    if act not in ACTS:
        raise CliError(f"--act {act!r} is not an act; use one of {', '.join(ACTS)}")
    if data_type is not None:
        data_type = data_type.upper()
        if data_type not in DATA_TYPES:
            raise CliError(f"--data-type {data_type!r} is not a data type; use one of {', '.join(DATA_TYPES)}")
    if clock is not None and not 0 <= clock <= MAX_CLOCK:
        raise CliError("--clock must be an integer 0 <= clock < 2^63")
    fields = _with_namespace(parse_body(body), namespace)
    record, created = emit_record(
        client_for(url),
        act=act,
        thread=thread,
        body=fields,
        actor=actor,
        clock=clock,
        data_type=data_type,
        parents=parent,
    )
    _print_emitted(record, created, as_json)


# -- threads -----------------------------------------------------------------------------


def _when(value: Any) -> str:
    """A time (Unix seconds or RFC 3339) as ``2026-01-02T03:04:05Z``; empty for none."""
    timestamp = as_time(value)
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _page(payload: dict[str, Any]) -> dict[str, Any]:
    """A list answer's paging fields for :func:`spl.cli.output.emit_list` (none when the daemon sent none)."""
    cursor = payload.get("next_cursor")
    return {"has_more": payload.get("has_more") is True, "next_cursor": cursor if isinstance(cursor, str) else None}


CURSOR = typer.Option(None, "--cursor", help="Start after this page: the next_cursor of the previous page (-o json).")


@thread_app.command("list")
def thread_list(
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, help="At most this many threads."),
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only threads of this namespace."),
    cursor: str | None = CURSOR,
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """List threads, most recently written first (GET /v1/threads).

    Example: spl thread list --namespace acme -o json
    """
    as_json = wants_json(output)
    params = {"limit": limit, "namespace": namespace, "cursor": cursor}
    reply = call(client_for(url), "GET", "/v1/threads", params=params)
    threads = reply.into(ThreadList).data
    if as_json:
        emit_list(reply.payload["data"], **_page(reply.payload))
        return
    table(
        [(t.id, t.namespace, t.record_count, t.last_clock, _when(t.updated_at)) for t in threads],
        ["THREAD", "NAMESPACE", "RECORDS", "LAST_CLOCK", "UPDATED"],
    )


@thread_app.command("show")
def thread_show(
    thread: str = typer.Argument(..., help="Thread id."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Show a thread's state (open, active, observed, done, cancelled) and its participants.

    Example: spl thread show th_deploy_v2
    """
    as_json = wants_json(output)
    reply = call(client_for(url), "GET", f"/v1/threads/{thread}")
    detail = reply.into(ThreadDetail)
    if as_json:
        emit_json(reply.payload)
        return
    typer.echo(f"thread:     {safe(detail.id)}")
    typer.echo(f"namespace:  {safe(detail.namespace)}")
    typer.echo(f"state:      {safe(detail.state)}")
    typer.echo(f"records:    {safe(detail.record_count)}")
    typer.echo(f"last clock: {safe(detail.last_clock)}")
    if detail.opened_by:
        typer.echo(f"opened by:  {safe(detail.opened_by)}")
    if detail.closed_by:
        typer.echo(f"closed by:  {safe(detail.closed_by)}")
    typer.echo(f"anomalies:  {', '.join(safe(a) for a in detail.anomalies) if detail.anomalies else 'none'}")
    typer.echo(f"participants ({len(detail.participants)}):")
    for participant in detail.participants:
        count = participant.record_count
        typer.echo(
            f"  {safe(participant.actor)}  {safe(participant.role)}  {safe(count)} record{'s' if count != 1 else ''}"
        )


@thread_app.command("fork")
def thread_fork(
    parent: str = typer.Argument(..., help="The parent thread id."),
    goals: list[str] = typer.Argument(..., help="One goal per sub-thread (1-64)."),
    join: str | None = typer.Option(
        None, "--join", help="Join predicate: all, any, k_of_n:K, or cel:<expression> (default all)."
    ),
    tasks: bool = typer.Option(False, "--tasks", help="Open each child as a task (with an allocated alias)."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Fork sub-threads from a thread; the parent closes by itself when its join predicate holds (seed 003).

    Example: spl thread fork th_deploy_v2 "build image" "run migrations" --join k_of_n:1
    """
    body: dict[str, Any] = {"goals": goals, "tasks": tasks}
    if join is not None:
        body["join"] = parse_join_option(join)
    reply = call(client_for(url), "POST", f"/v1/threads/{quote(parent, safe='')}/fork", json_body=body)
    fork = reply.into(ForkAnswer)
    if wants_json(output):
        emit_json(reply.payload)
        return
    print_fork(fork)


def fetch_thread_records(
    client: DaemonClient, thread: str, *, limit: int | None = None, since: int | None = None
) -> list[tuple[RecordAnswer, dict[str, Any]]]:
    """A thread's records in sequence order, each typed and as sent (for ``-o json``): all of them, or the
    first ``limit``, paging by sequence."""
    records: list[tuple[RecordAnswer, dict[str, Any]]] = []
    after = 0
    while limit is None or len(records) < limit:
        want = PAGE if limit is None else min(PAGE, limit - len(records))
        params = {"thread": thread, "after_sequence": after or None, "since": since, "limit": want}
        reply = call(client, "GET", "/v1/records", params=params)
        page = reply.into(RecordList).data
        records.extend(zip(page, reply.payload["data"], strict=True))
        if len(page) < want:
            break
        if page[-1].sequence is None:
            raise CliError(f"{reply.where} answered records without a sequence: is it an spl daemon? Check --url")
        after = page[-1].sequence
    return records


def record_line(record: RecordAnswer) -> str:
    """One record as text, from content-addressed fields only (identical on every instance).

    Every field is escaped (:func:`safe`): an actor or a body string is whatever its writer
    chose, and must not reach the terminal as an escape sequence or a line break.
    """
    body = compact_json(record.body)
    body = safe(body, BODY_WIDTH - 1 if len(body) > BODY_WIDTH else BODY_WIDTH)  # cut to 199 + "…" when long
    return f"{safe(record.id)}  {safe(record.clock)}  {safe(record.act):<6}  {safe(record.actor)}  {body}"


@thread_app.command("records")
def thread_records(
    thread: str = typer.Argument(..., help="Thread id."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many records (default: all)."),
    since: int | None = typer.Option(None, "--since", help="Only records with clock > SINCE."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Print a thread's records.

    Text: one line per record (id, clock, act, actor, compact body), sorted by clock,
    with nothing instance-specific, so `spl thread records T | sha256sum` matches across
    instances holding the same records. -o json: the stored records in sequence order.

    Example: spl thread records th_deploy_v2 -o json
    """
    as_json = wants_json(output)
    records = fetch_thread_records(client_for(url), thread, limit=limit, since=since)
    if as_json:
        emit_list([raw for _, raw in records])
        return
    if not records:
        typer.echo(f"no records on thread {safe(thread)}", err=True)
        return
    for record in sorted((typed for typed, _ in records), key=lambda r: (r.clock, r.actor, r.id)):
        typer.echo(record_line(record))


# -- snapshots (issue 11) ------------------------------------------------------------------

MAX_SNAPSHOT_FILE = 64 * 1024 * 1024  # what `POST /v1/threads/restore` reads at most
SNAPSHOT_TIMEOUT = 300.0  # a large thread streams for a while; each read still times out on its own


class RestoreSummary(Answer):
    """``POST /v1/threads/restore``'s answer."""

    what: ClassVar[str] = "a restore summary"
    records_inspected: int
    records_inserted: int
    records_deduplicated: int
    records_failed: int
    refusals_by_reason: dict[str, int]
    threads: list[str]


def _error_from(response: Any, where: str) -> DaemonError:
    """A daemon's 4xx/5xx answer (already read) as the one-line error ``call`` gives."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = decode_answer(payload, ErrorAnswer, where)
        message = one_line(str(response.text if error.message is None else error.message))
        return DaemonError(response.status_code, error.code or error.error or "ERROR", message)
    return DaemonError(response.status_code, f"HTTP {response.status_code}", f"{where} did not answer with spl's JSON")


def stream_snapshot(client: DaemonClient, threads: list[str], sink: IO[bytes]) -> SnapshotManifest:
    """``GET /v1/threads/snapshot`` written to ``sink`` as it arrives; the manifest it ended with.

    Only the tail after the last newline is kept in memory. A stream that does not end with a manifest
    (the daemon stopped, or met an error after it had started answering) is a :class:`CliError`.
    """
    httpx = load_httpx()  # without trio (spl.cli.client)

    headers = {"x-api-key": client.token} if client.token else {}
    where = f"GET {client.url}/v1/threads/snapshot"
    tail = b""
    try:
        with httpx.Client(base_url=client.url, timeout=client.timeout, headers=headers) as http:
            params = {"threads": ",".join(threads)}
            with http.stream("GET", "/v1/threads/snapshot", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    error = _error_from(response, where)
                    if response.status_code == 401 and client.withheld is not None:
                        error = DaemonError(401, error.code, f"{error} ({client.withheld})")
                    raise error
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    tail = (tail + chunk)[-(MAX_LINE_BYTES + 2) :]
    except httpx.ConnectError:
        raise DaemonUnreachable(
            f"no daemon answers at {client.url}: start one with `spl serve --daemon` (or check --url / SPL_SERVE_URL)"
        ) from None
    except httpx.TimeoutException:
        raise CliError(f"the daemon at {client.url} stopped sending within {client.timeout:.0f}s") from None
    except httpx.HTTPError as exc:
        raise CliError(f"{where} failed ({type(exc).__name__}: {one_line(str(exc))})") from None
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        manifest = json.loads(last)
    except ValueError:
        manifest = None
    if isinstance(manifest, dict) and manifest.get("object") == "error":
        raise CliError(f"the snapshot stopped short: {safe(manifest.get('code'))}: {safe(manifest.get('message'))}")
    if not isinstance(manifest, dict) or manifest.get("object") != "thread_snapshot":
        raise CliError(f"{where} ended without a manifest line: the snapshot is incomplete; take it again")
    return SnapshotManifest(
        tuple(str(t) for t in manifest.get("threads") or ()),
        int(manifest.get("record_count") or 0),
        str(manifest.get("records_sha256")),
        str(manifest.get("created_at")),
        str(manifest.get("source_did")),
    )


@thread_app.command("snapshot")
def thread_snapshot(
    threads: list[str] = typer.Argument(..., help="Thread ids (at most 100)."),
    out: Path | None = typer.Option(None, "--out", help="Write here (mode 0600) instead of stdout."),
    url: str | None = URL,
) -> None:
    """Write threads' records as a .snap.jsonl snapshot (GET /v1/threads/snapshot).

    One record per line, exactly as the daemon stores it, then a manifest line (thread list, record
    count, SHA-256 over the sorted record ids). Reserved threads such as th_federation_pairs need the
    admin credential (the home's, used by default). With --out, a summary goes to stderr.

    Example (seed 001, whole-pair recovery): spl thread snapshot th_federation_pairs > /tmp/local-pairs.snap.jsonl
    """
    try:
        names = split_threads(",".join(threads))
    except InvalidRequest as exc:
        raise CliError(exc.message) from None
    client = client_for(url)
    client.timeout = SNAPSHOT_TIMEOUT
    if out is None:
        stream_snapshot(client, names, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    partial = out.with_name(out.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(descriptor, "wb") as sink:
            manifest = stream_snapshot(client, names, sink)
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    typer.echo(
        f"wrote {manifest.record_count} record{'s' if manifest.record_count != 1 else ''} of "
        f"{len(manifest.threads)} thread{'s' if len(manifest.threads) != 1 else ''} to {safe(str(out))}",
        err=True,
    )


@thread_app.command("restore")
def thread_restore(
    file: Path = typer.Argument(..., help="A .snap.jsonl written by `spl thread snapshot`."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Restore a snapshot into the daemon (POST /v1/threads/restore, admin).

    Everything is verified first (every record's id and signature, the manifest's count and hash):
    any failure refuses the whole file and writes nothing. Records already stored are de-duplicated,
    so restoring twice is harmless. Reserved threads are refused: configuration moves with
    `spl export` / `spl import`.

    Example: spl thread restore /tmp/th_orders.snap.jsonl
    """
    httpx = load_httpx()  # without trio (spl.cli.client)

    as_json = wants_json(output)
    try:
        size = file.stat().st_size
        if size > MAX_SNAPSHOT_FILE:
            raise CliError(
                f"{safe(str(file))} is larger than {MAX_SNAPSHOT_FILE} bytes; snapshot fewer threads at a time"
            )
        data = file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {safe(str(file))}: {safe(exc.strerror or exc)}") from None
    client = client_for(url)
    headers = {"content-type": "application/x-ndjson", **({"x-api-key": client.token} if client.token else {})}
    where = f"POST {client.url}/v1/threads/restore"
    try:
        with httpx.Client(base_url=client.url, timeout=SNAPSHOT_TIMEOUT, headers=headers) as http:
            response = http.post("/v1/threads/restore", content=data)
    except httpx.ConnectError:
        raise DaemonUnreachable(
            f"no daemon answers at {client.url}: start one with `spl serve --daemon` (or check --url / SPL_SERVE_URL)"
        ) from None
    except httpx.HTTPError as exc:
        raise CliError(f"{where} failed ({type(exc).__name__}: {one_line(str(exc))})") from None
    if response.status_code >= 400:
        raise _error_from(response, where)
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise CliError(f"{where} did not answer with spl's JSON: is it an spl daemon? Check --url")
    summary = decode_answer(payload, RestoreSummary, where)
    if as_json:
        emit_json(payload)
        return
    typer.echo(f"restored {safe(str(file))}")
    typer.echo(f"  threads:      {', '.join(safe(thread) for thread in summary.threads)}")
    typer.echo(f"  inspected:    {summary.records_inspected}")
    typer.echo(f"  inserted:     {summary.records_inserted}")
    typer.echo(f"  deduplicated: {summary.records_deduplicated}")
    typer.echo(f"  failed:       {summary.records_failed}")
    for code, count in sorted(summary.refusals_by_reason.items()):
        typer.echo(f"    {safe(code)}: {count}")


# -- watch (issue 13) ----------------------------------------------------------------------

# The daemon sends a heartbeat every `serve.heartbeat_seconds` (15 s by default): a read that waits four times
# that long has lost the daemon, and the watch reconnects.
WATCH_READ_TIMEOUT = 60.0
WATCH_CONNECT_TIMEOUT = 10.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0
# A stored record's line: the largest body the daemon takes plus room for its envelope (the same bound
# `spl thread snapshot` reads a record line with). A longer line is not a record this daemon sent.
WATCH_MAX_LINE = MAX_LINE_BYTES


class _StreamEnded(Exception):
    """The stream stopped in a way the watch resumes from (``reason`` goes to the stderr line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _live_start(client: DaemonClient, thread: str) -> int:
    """Where a live watch starts: after the thread's newest record (0 for a thread with none yet).

    Starting from an explicit sequence rather than "whatever comes next" makes even the first reconnection
    exact: a stream that drops before its first record resumes after this sequence, and nothing committed in
    between is missed.
    """
    try:
        reply = call(client, "GET", f"/v1/threads/{quote(thread, safe='')}")
    except DaemonError as exc:
        if exc.status == 404 and exc.code != "ROUTE_NOT_FOUND":
            return 0  # no record yet: everything committed from now on is after sequence 0
        raise
    return int(reply.payload.get("last_sequence") or 0)


class _Watch:
    """One ``spl thread watch``: the cursor it resumes from and how it prints.

    ``last`` is the sequence of the last record printed (the SSE ``id:``); each reconnection sends it as
    ``Last-Event-ID``, so the daemon replays what was committed while the watch was away and nothing is
    printed twice. Before any record was printed the watch resumes as it started (``--cursor``,
    ``--from-start``, ``--since-clock``, or live only).
    """

    def __init__(self, client: DaemonClient, thread: str, *, cursor: int | None, since_clock: int | None) -> None:
        self.client = client
        self.path = f"/v1/threads/{quote(thread, safe='')}/watch"
        self.where = f"GET {client.url}{self.path}"
        self.last = cursor
        self.since_clock = since_clock
        self.as_json = False
        self.thread = thread
        self.announced = False
        self.connected = False  # the current attempt got a stream (200) from the daemon

    def _request(self) -> tuple[dict[str, str], dict[str, int]]:
        # identity: the bytes are read raw, so that a compressed answer cannot expand past the line bound
        headers = {"accept": "text/event-stream", "accept-encoding": "identity"}
        if self.client.token:
            headers["x-api-key"] = self.client.token
        if self.last is not None:
            headers["last-event-id"] = str(self.last)
            return headers, {}
        return headers, ({} if self.since_clock is None else {"since_clock": self.since_clock})

    def stream(self, http: Any) -> None:
        """Read one connection to its end; returns only by raising.

        Raises:
            _StreamEnded: The daemon ended the stream (lagged, shutting down, closed): resume.
            CliError: The daemon refused the watch, or sent something no spl daemon sends: stop.
        """
        from spl.transport.sse import SseParser

        headers, params = self._request()
        with http.stream("GET", self.path, headers=headers, params=params) as response:
            if response.status_code >= 400:
                response.read()
                error = _error_from(response, self.where)
                if response.status_code == 401 and self.client.withheld is not None:
                    error = DaemonError(401, error.code, f"{error} ({self.client.withheld})")
                raise error
            kind = response.headers.get("content-type", "")
            if not kind.startswith("text/event-stream"):
                raise CliError(f"{self.where} answered {safe(one_line(kind, 60))}, not an event stream: check --url")
            self.connected = True
            if not self.announced:  # once: the watch is subscribed, every later commit will be printed
                self.announced = True
                typer.echo(f"watch: following {safe(self.thread)} (Ctrl-C to stop)", err=True)
            parser = SseParser(WATCH_MAX_LINE, max_line=WATCH_MAX_LINE)
            for chunk in response.iter_raw():
                try:
                    events = parser.feed(chunk)
                except ValueError:
                    raise CliError(
                        f"{self.where} sent a line longer than {WATCH_MAX_LINE} bytes, larger than any record: "
                        "is it an spl daemon? Check --url"
                    ) from None
                for event in events:
                    self._event(event.event, event.id, event.data)
        raise _StreamEnded("the daemon closed the stream")

    def _event(self, name: str, sequence: str | None, data: str) -> None:
        if name == "record.created":
            self._record(sequence, data)
        elif name == "server_shutdown":
            raise _StreamEnded("the daemon is shutting down")
        elif name == "error":
            try:
                error = json.loads(data)
            except ValueError:
                error = None
            if not isinstance(error, dict):
                raise CliError(f"{self.where} sent an error event that is not a JSON object: check --url")
            code, message = safe(error.get("code"), 60), safe(one_line(str(error.get("message")), 200))
            if error.get("code") == "lagged":
                raise _StreamEnded("this watch fell behind the daemon (lagged)")
            raise CliError(f"the watch stopped: {code}: {message}")
        # heartbeats and events this version does not know: nothing to print, the cursor stays

    def _record(self, sequence: str | None, data: str) -> None:
        from spl.transport.sse import parse_cursor

        try:
            frame = json.loads(data)
        except ValueError:
            frame = None
        raw = frame.get("record") if isinstance(frame, dict) else None
        if not isinstance(raw, dict):
            raise CliError(f"{self.where} sent a record event without a record object: is it an spl daemon?")
        record = decode_answer(raw, RecordAnswer, self.where)
        position = parse_cursor(sequence)
        if position is None:
            raise CliError(f"{self.where} sent a record without a sequence id: is it an spl daemon? Check --url")
        if self.as_json:
            emit_item(raw)
        else:
            typer.echo(record_line(record))
        self.last = position


@thread_app.command("watch")
def thread_watch(
    thread: str = typer.Argument(..., help="Thread id."),
    since_clock: int | None = typer.Option(
        None, "--since-clock", min=0, help="First replay the records with clock > N, then follow."
    ),
    from_start: bool = typer.Option(False, "--from-start", help="First replay the whole thread, then follow."),
    cursor: int | None = typer.Option(
        None, "--cursor", min=0, help="Start after this sequence (a record's `sequence`, e.g. the last one printed)."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Follow a thread live: print each record as it is committed (GET /v1/threads/{thread}/watch, SSE).

    Text: the line `spl thread records` prints; -o json: one record object per line (NDJSON), with its
    `sequence` (-o yaml: one YAML document per record). Without an option only new records are printed.
    When the stream ends (the watch fell behind, the daemon restarted, the connection dropped) it reconnects
    after a short pause (0.2 s doubling to 5 s) and resumes after the last record printed: nothing is skipped
    or printed twice. Ctrl-C stops it (exit 130).

    Example: spl thread watch th_orders --from-start -o json | jq -r .act
    """
    httpx = load_httpx()  # without trio (spl.cli.client)

    as_json = wants_json(output)
    if sum((from_start, cursor is not None, since_clock is not None)) > 1:
        raise typer.BadParameter("pass at most one of --from-start, --cursor and --since-clock")
    client = client_for(url)
    if not from_start and cursor is None and since_clock is None:
        cursor = _live_start(client, thread)
    watch = _Watch(client, thread, cursor=0 if from_start else cursor, since_clock=since_clock)
    watch.as_json = as_json
    timeout = httpx.Timeout(WATCH_CONNECT_TIMEOUT, read=WATCH_READ_TIMEOUT)
    pause = BACKOFF_FIRST  # the wait before the next attempt after one that never got an answer
    first = True
    try:
        with httpx.Client(base_url=watch.client.url, timeout=timeout) as http:
            while True:
                watch.connected = False
                try:
                    watch.stream(http)
                except _StreamEnded as ended:
                    reason = ended.reason
                except httpx.ConnectError:
                    if first:  # a wrong URL or no daemon at all: say so now rather than retry forever
                        raise DaemonUnreachable(
                            f"no daemon answers at {watch.client.url}: start one with `spl serve --daemon` "
                            "(or check --url / SPL_SERVE_URL)"
                        ) from None
                    reason = "the daemon does not answer"
                except httpx.TimeoutException:
                    reason = f"nothing arrived within {WATCH_READ_TIMEOUT:.0f}s"
                except httpx.HTTPError as exc:
                    reason = f"the connection broke ({type(exc).__name__})"
                first = False
                delay = BACKOFF_FIRST if watch.connected else pause  # an answered attempt resets the backoff
                pause = min(delay * 2, BACKOFF_MAX)
                where = "as it started" if watch.last is None else f"after sequence {watch.last}"
                typer.echo(f"watch: {reason}; reconnecting in {delay:g}s, resuming {where}", err=True)
                time.sleep(delay)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
