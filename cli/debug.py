"""``spl debug …``: forensic tools (issue 11: ``thread-diff``; issue 12: ``replay``).

``spl debug replay ALIAS|THREAD`` walks a thread's records in order through the folds
(:mod:`spl.core.replay`) and prints the transition each caused, with the join decisions on a parent.

``spl debug thread-diff A B`` compares two copies of a thread (:mod:`spl.core.thread_diff`). Each side is
resolved, in this order, from what it looks like:

1. a path that exists: a snapshot file (``spl thread snapshot``), verified whole;
2. ``URL#thread``: that thread on another daemon (``GET URL/v1/records?thread=``), each record verified
   (id and signature), with ``--peer-token`` / ``$SPL_PEER_TOKEN`` if given (never the home's admin token);
3. a record id (64 lowercase hex): its thread, from the local daemon if it holds the record, else from the
   first snapshot file that does (``--snapshot`` files, then ``*.snap.jsonl`` in the current directory, then
   in the temp directory, newest first): seed 001's recovery procedure writes snapshots to /tmp and then
   names a record of the peer's, which the local daemon never holds;
4. anything else: a thread id on the local daemon.

Everything a side holds is hostile until verified, and every string printed goes through ``safe``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import typer

from spl.cli.answers import RecordAnswer, TaskAnswer
from spl.cli.client import CliError, DaemonClient, DaemonError, call, checked_url
from spl.cli.common import OUTPUT, URL, client_for, wants_json
from spl.cli.output import emit_json, emit_list, safe
from spl.core import joins
from spl.core import tasks as task_fold
from spl.core.errors import InvalidRequest
from spl.core.record import RECORD_ID, THREAD
from spl.core.replay import ReplayStep, replay
from spl.core.snapshot import Snapshot, parse_snapshot
from spl.core.stored import Candidate
from spl.core.thread_diff import ThreadDiff, diff_threads
from spl.core.verify import verify_pulled

__all__ = ["debug_app"]

debug_app = typer.Typer(
    help="Forensic tools: compare threads across snapshots, instances and peers.", no_args_is_help=True
)

PAGE = 1000
MAX_SIDE_RECORDS = 100_000
"""The most records one side may hold: a diff holds both sides in memory."""
MAX_SNAPSHOT_FILE = 64 * 1024 * 1024
SNAPSHOT_GLOB = "*.snap.jsonl"
EXIT_SAME, EXIT_DIFFER, EXIT_USAGE = 0, 1, 2


class Unresolvable(CliError):
    """A side that names nothing this command can read; exit status 2."""


@dataclass
class Side:
    """One side of the comparison: what it is (for the operator) and its records, in its own log order."""

    label: str
    records: list[dict[str, Any]]


def _read_snapshot(path: Path) -> Snapshot:
    """A snapshot file, verified; :class:`Unresolvable` naming the file when it is not one."""
    try:
        if path.stat().st_size > MAX_SNAPSHOT_FILE:
            raise Unresolvable(f"{safe(str(path))} is larger than {MAX_SNAPSHOT_FILE} bytes; it is not a snapshot")
        data = path.read_bytes()
    except OSError as exc:
        raise Unresolvable(f"cannot read {safe(str(path))}: {safe(exc.strerror or exc)}") from None
    try:
        return parse_snapshot(data)
    except InvalidRequest as exc:
        raise Unresolvable(f"{safe(str(path))}: {safe(exc.message, 400)}") from None


def _fetch(client: DaemonClient, thread: str) -> list[dict[str, Any]]:
    """A thread's records from a daemon, paged by sequence, each verified (a peer is hostile)."""
    records: list[dict[str, Any]] = []
    after = 0
    while True:
        params = {"thread": thread, "after_sequence": after or None, "limit": PAGE}
        reply = call(client, "GET", "/v1/records", params=params)
        page = reply.payload.get("data")
        if not isinstance(page, list):
            raise CliError(f"{reply.where} answered without a list of records: is it an spl daemon?")
        for raw in page:
            outcome = verify_pulled(raw)
            if not isinstance(outcome, Candidate) or outcome.envelope.thread != thread:
                reason = outcome.reason if not isinstance(outcome, Candidate) else "a record of another thread"
                raise CliError(f"{reply.where} served a record that does not verify: {safe(reason)}")
            records.append(raw)
        if len(records) > MAX_SIDE_RECORDS:
            raise CliError(f"thread {safe(thread)} holds more than {MAX_SIDE_RECORDS} records; compare snapshots")
        if len(page) < PAGE:
            return records
        sequence = page[-1].get("sequence") if isinstance(page[-1], dict) else None
        if not isinstance(sequence, int) or sequence <= after:
            raise CliError(f"{reply.where} answered records without increasing sequences: is it an spl daemon?")
        after = sequence


def _snapshot_files(named: list[Path]) -> list[Path]:
    """Where a record id is looked for: ``--snapshot`` files, then the current and temp dirs (newest first)."""
    found: list[Path] = list(named)
    for directory in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            matches = [path for path in directory.glob(SNAPSHOT_GLOB) if path.is_file()]
            matches.sort(key=lambda path: path.stat().st_mtime, reverse=True)
        except OSError:
            continue
        found.extend(path for path in matches if path not in found)
    return found


def _by_record(record_id: str, url: str | None, named: list[Path], tried: list[str]) -> Side | None:
    try:
        client = client_for(url)
        reply = call(client, "GET", f"/v1/records/{record_id}")
        thread = reply.into(RecordAnswer).thread
        return Side(f"thread {safe(thread)} on {safe(client.url)} (holds record {record_id})", _fetch(client, thread))
    except DaemonError as exc:
        tried.append(f"the local daemon ({safe(exc.code)})")
    except CliError as exc:
        tried.append(f"the local daemon ({safe(str(exc), 120)})")
    for path in _snapshot_files(named):
        try:
            snap = _read_snapshot(path)
        except Unresolvable as exc:
            tried.append(f"{safe(str(path))} (unreadable: {safe(str(exc), 160)})")
            continue
        for record in snap.records:
            if record.get("id") == record_id:
                found = record.get("thread")
                records = [r for r in snap.records if r.get("thread") == found]
                label = f"thread {safe(found)} in snapshot {safe(str(path))} (holds record {record_id})"
                return Side(label, records)
        tried.append(f"{safe(str(path))} (not in it)")
    return None


def resolve_side(text: str, url: str | None, peer_token: str | None, named: list[Path]) -> Side:
    """One side, from what ``text`` looks like (module docstring); :class:`Unresolvable` says what was tried."""
    path = Path(text)
    if path.exists():
        snap = _read_snapshot(path)
        threads = ", ".join(safe(t) for t in snap.manifest.threads)
        return Side(f"snapshot {safe(text)} ({threads}; {len(snap.records)} records)", list(snap.records))
    if "#" in text and text.lower().startswith(("http://", "https://")):
        base, _, thread = text.rpartition("#")
        if not THREAD.fullmatch(thread):
            raise Unresolvable(f"{safe(text)}: after '#' comes a thread id (A-Z a-z 0-9 _ . : @ -, 1-256)")
        peer = DaemonClient(checked_url(base, "the side"), peer_token or os.environ.get("SPL_PEER_TOKEN") or None)
        return Side(f"thread {safe(thread)} on {safe(peer.url)}", _fetch(peer, thread))
    if RECORD_ID.fullmatch(text):
        tried: list[str] = []
        side = _by_record(text, url, named, tried)
        if side is None:
            raise Unresolvable(
                f"record {text} was found nowhere; tried {'; '.join(tried) or 'nothing'}. Name the snapshot "
                "that holds it with --snapshot FILE"
            )
        return side
    if THREAD.fullmatch(text):
        client = client_for(url)
        return Side(f"thread {safe(text)} on {safe(client.url)}", _fetch(client, text))
    raise Unresolvable(
        f"{safe(text)} is not a snapshot file that exists, a URL#thread, a record id (64 lowercase hex) or a thread id"
    )


def _print(a: Side, b: Side, diff: ThreadDiff) -> None:
    typer.echo(f"A: {a.label}")
    typer.echo(f"B: {b.label}")
    for name, only in (("A", diff.only_in_a), ("B", diff.only_in_b)):
        typer.echo(f"only in {name} ({len(only)}):")
        for record in only:
            typer.echo(
                f"  {safe(record.id)}  {safe(record.clock)}  {safe(record.act):<6}  {safe(record.actor)}"
                f"  {safe(record.thread)}"
            )
    typer.echo(f"fold differences ({len(diff.fold)}):")
    for difference in diff.fold:
        typer.echo(f"  {safe(difference.text(), 400)}")
    typer.echo("differ" if diff.differs else "same")


@debug_app.command("thread-diff")
def thread_diff(
    a: str = typer.Argument(..., help="Side A: a snapshot file, URL#thread, a record id or a thread id."),
    b: str = typer.Argument(..., help="Side B: as side A."),
    snapshot: list[Path] | None = typer.Option(
        None, "--snapshot", help="A snapshot file to look record ids up in (repeatable); searched first."
    ),
    peer_token: str | None = typer.Option(
        None,
        "--peer-token",
        help="Token for a URL#thread side (default $SPL_PEER_TOKEN; the admin token never). "
        r"\[env var: SPL_PEER_TOKEN]",
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Compare two copies of a thread: records only in A, only in B, and fold differences.

    Each side is a snapshot file, URL#thread (a thread on another daemon), a record id (its thread is
    compared) or a thread id on the local daemon. A record id is looked up on the local daemon, then in
    snapshot files: --snapshot ones, then *.snap.jsonl in the current directory and in the temp
    directory (/tmp), where seed 001's recovery procedure writes them. For th_federation_pairs each pair
    is also compared field by field (e.g. state paused (A) vs active (B)).

    Exit status: 0 same, 1 differ, 2 a side could not be resolved.

    Example (seed 001, whole-pair recovery):

      spl federation pause <pair_id>

      spl thread snapshot th_federation_pairs > /tmp/local-pairs.snap.jsonl

      ssh bob 'spl thread snapshot th_federation_pairs' > /tmp/bob-pairs.snap.jsonl

      spl debug thread-diff <local-pair-record-id> <bob-pair-record-id>
    """
    as_json = wants_json(output)
    named = list(snapshot or [])
    try:
        side_a = resolve_side(a, url, peer_token, named)
        side_b = resolve_side(b, url, peer_token, named)
    except Unresolvable as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.stderr.flush()
        raise SystemExit(EXIT_USAGE) from None
    diff = diff_threads(side_a.records, side_b.records)
    if as_json:
        emit_json({"a": side_a.label, "b": side_b.label, **diff.to_wire()})
    else:
        _print(side_a, side_b, diff)
    if diff.differs:
        sys.stdout.flush()
        raise SystemExit(EXIT_DIFFER)  # typer.Exit would be swallowed under standalone_mode=False


def _replay_thread(client: DaemonClient, target: str) -> tuple[str, str | None]:
    """(thread, alias) of ``target``: a task's alias or thread, or any thread id."""
    if task_fold.ALIAS.fullmatch(target) or THREAD.fullmatch(target):
        try:
            reply = call(client, "GET", f"/v1/tasks/{quote(target, safe='')}")
        except DaemonError as exc:
            if exc.status != 404 or not THREAD.fullmatch(target):
                raise
        else:
            task = reply.into(TaskAnswer)
            return task.thread, task.alias
        return target, None
    raise Unresolvable(f"{safe(target)} is neither a task alias (TASK-0042) nor a thread id (th_ + 64 hex)")


def _transition(step: ReplayStep) -> str:
    parts = []
    if step.thread_changed:
        parts.append(f"{step.thread_before} → {step.thread_after}")
    if step.task_changed:
        parts.append(f"task: {step.task_before or '-'} → {step.task_after}")
    if step.role is not None:
        parts.append(f"{step.role}")
    return "; ".join(parts) or "-"


def _join_text(join: dict[str, Any]) -> str:
    kind = str(join.get("kind", ""))
    if kind == joins.SYNTHESIS_KIND:
        return str(join.get("summary") or f"child {join.get('child')} {join.get('outcome')}")
    if kind == joins.CLOSED_KIND:
        return f"join {join.get('join')} satisfied ({join.get('accepted')} of {join.get('total')})"
    return f"join {join.get('join')} failed: {join.get('reason') or ''}"


@debug_app.command("replay")
def replay_thread(
    target: str = typer.Argument(..., help="A task alias (TASK-0042) or a thread id."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Walk a thread's records in order, each with the state transition it caused (and join decisions).

    Each record goes through the same fold the store runs (the thread's state and, for a task, its status);
    a parent's join records show the decision they carry. Records are verified as they arrive.

    Example: spl debug replay TASK-0042 -o json | jq '.data[] | select(.task.before != .task.after)'
    """
    client = client_for(url)
    try:
        thread, alias = _replay_thread(client, target)
    except Unresolvable as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.stderr.flush()
        raise SystemExit(EXIT_USAGE) from None
    steps = replay(_fetch(client, thread))
    if wants_json(output):
        emit_list([step.to_wire() for step in steps])
        return
    typer.echo(f"thread {safe(thread)}" + (f" (task {safe(alias)})" if alias else "") + f": {len(steps)} records")
    for step in steps:
        what = step.kind or step.event or (f"fork {step.forks[:16]}…" if step.forks else "")
        typer.echo(
            f"{safe(step.sequence if step.sequence is not None else '-'):>6}  {safe(step.act):<6}  "
            f"{safe(step.actor, 60)}  {safe(step.id[:12])}  {safe(what, 40) or '-'}  {safe(_transition(step))}"
        )
        if step.join is not None:
            typer.echo(f"        {safe(_join_text(step.join), 400)}")
    if steps:
        last = steps[-1]
        final = f"final: thread {last.thread_after}" + (f", task {last.task_after}" if last.task_after else "")
        typer.echo(safe(final))
