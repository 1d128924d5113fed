"""Portability routes: ``POST /v1/portability/export`` and ``POST /v1/portability/import`` (spec §9, issue 11).

Both are ``admin``: a bundle is the whole instance, private key included.

Export streams: a worker thread writes the bundle (:func:`spl.store.portability.export_bundle`, one read
transaction) into a bounded channel the response body drains, so memory stays flat whatever the store's size
and a client that goes away stops the export at its next write.

Import takes the upload as a stream too, into a private spool file under ``<home>/run/`` (bounded by
:data:`MAX_UPLOAD_BYTES`), then runs the two passes of :mod:`spl.store.portability` — verify everything, then
commit in one writer transaction — and finally hands the verified identity to the daemon, which adopts it
without a restart (``Services.adopt_import``). One import at a time; the spool file is removed however the
request ends.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import outcome
import trio
from quart import Blueprint, Response, request

from spl.core.errors import InvalidRequest, PayloadTooLarge, Unavailable
from spl.core.portability import (
    ForeignTokens,
    ImportInProgress,
    ImportRefused,
    ImportSummary,
    applies_instance_state,
)
from spl.store.portability import (
    ExportOptions,
    VerifiedBundle,
    bundle_config,
    export_bundle,
    fill_counts,
    limits_for,
    own_record_count,
    verify_bundle,
)
from spl.transport.auth import require
from spl.transport.context import caller, services
from spl.transport.requests import body_bytes
from spl.transport.responses import json_response
from spl.transport.services import Services

__all__ = ["BUNDLE_MEDIA_TYPES", "MAX_UPLOAD_BYTES", "PASSPHRASE_HEADER", "blueprint"]

log = logging.getLogger("spl.portability")

blueprint = Blueprint("portability", __name__)

MAX_UPLOAD_BYTES = 64 * 1024**3  # a bundle of ~300 million records; the spool is on the store's own volume
MAX_PASSPHRASE = 1024
PASSPHRASE_HEADER = "spl-bundle-passphrase"  # a header, never a query parameter: URLs end up in logs
# The upload is a bundle, not JSON: these media types are accepted on the import route (none of them is one a
# browser may send cross-origin without a preflight, so the CSRF reasoning of the JSON-only gate still holds).
BUNDLE_MEDIA_TYPES = frozenset({"application/zstd", "application/x-tar", "application/octet-stream"})
UPLOAD_IDLE_SECONDS = 60.0  # an upload silent this long is refused (it holds the one import slot)
_EXPORT_CHUNKS = 4  # 256 KiB writes queued at most between the exporting thread and the response


class _ExportRequest(msgspec.Struct, forbid_unknown_fields=True):
    identity: bool = True
    carry_tokens: bool = False
    compress: bool = True
    passphrase: str | None = None


_EXPORT_DECODER = msgspec.json.Decoder(_ExportRequest)


def _passphrase(text: str | None, *, from_header: bool = False) -> bytes | None:
    """The passphrase's bytes (UTF-8), bounded; None when none was given.

    A header value reaches us decoded as latin-1 (HTTP headers are bytes; Quart maps each byte to one
    character), so the bytes the client sent are recovered by encoding it back, then checked to be UTF-8.
    """
    if text is None or text == "":
        return None
    try:
        data = text.encode("latin-1" if from_header else "utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("the passphrase header holds characters beyond bytes", code="INVALID_PASSPHRASE") from None
    if len(data) > MAX_PASSPHRASE:
        raise InvalidRequest(f"the passphrase is longer than {MAX_PASSPHRASE} bytes", code="INVALID_PASSPHRASE")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "the passphrase is not UTF-8; send the passphrase file's bytes as they are", code="INVALID_PASSPHRASE"
        ) from None
    return data


def _export_options(raw: bytes) -> ExportOptions:
    try:
        parsed = _EXPORT_DECODER.decode(raw or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequest(
            f"export options: {str(exc)[:200]}; send a JSON object with identity, carry_tokens, compress, "
            "passphrase (all optional)"
        ) from None
    return ExportOptions(parsed.identity, parsed.carry_tokens, parsed.compress, _passphrase(parsed.passphrase))


class _ChannelWriter:
    """A file-like ``write`` for the exporting thread: each chunk goes through a bounded trio channel."""

    def __init__(self, send: trio.MemorySendChannel[bytes], token: trio.lowlevel.TrioToken) -> None:
        self._send = send
        self._token = token

    def write(self, data: bytes) -> int:
        trio.from_thread.run(self._send.send, bytes(data), trio_token=self._token)
        return len(data)

    def flush(self) -> None:
        return None


async def _export_stream(
    work: Callable[[_ChannelWriter], object], done: Callable[[outcome.Outcome[object]], None]
) -> AsyncIterator[bytes]:
    """The response body: chunks the exporting thread writes, until it ends.

    No nursery or cancel scope is held across a ``yield`` (runtime.md): the thread is started with
    ``start_thread_soon`` and tells the channel's end when it finishes, however it finishes. A client that
    leaves closes the generator, hence the receiving end, and the thread's next write fails and ends it.
    """
    send, receive = trio.open_memory_channel[bytes](_EXPORT_CHUNKS)
    token = trio.lowlevel.current_trio_token()

    def finished(result: outcome.Outcome[object]) -> None:  # in the worker thread
        token.run_sync_soon(send.close)
        done(result)

    trio.lowlevel.start_thread_soon(functools.partial(work, _ChannelWriter(send, token)), finished)
    with receive:
        async for chunk in receive:
            yield chunk


@blueprint.post("/v1/portability/export")
async def export() -> Response:
    require(caller(), "admin")
    svc = services()
    options = _export_options(await body_bytes(64 * 1024))
    config = bundle_config(svc.config)
    db_path = _paths(svc)[0]
    identity = svc.identity

    def work(sink: _ChannelWriter) -> object:
        return export_bundle(db_path, identity, sink, options, config=config)  # type: ignore[arg-type]

    def done(result: outcome.Outcome[object]) -> None:
        if isinstance(result, outcome.Error) and not isinstance(
            result.error, trio.BrokenResourceError | trio.ClosedResourceError | trio.RunFinishedError
        ):
            log.error("export failed; the client received a cut-short bundle", exc_info=result.error)

    response = Response(
        _export_stream(work, done),
        content_type="application/zstd" if options.compress else "application/x-tar",
        headers={
            "cache-control": "no-store",
            "content-disposition": f'attachment; filename="spl-export.{"tar.zst" if options.compress else "tar"}"',
        },
    )
    response.timeout = None  # a large export takes minutes
    return response


def _paths(svc: Services) -> tuple[Path, Path]:
    """The store and the spool folder the daemon gave (``Services.store_path``, ``spool_dir``)."""
    if svc.store_path is None or svc.spool_dir is None:
        raise Unavailable("this steward was started without its store's paths; restart it with `spl serve`")
    return svc.store_path, svc.spool_dir


def _flag(name: str) -> bool:
    value = request.args.get(name, "")
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise InvalidRequest(f"{name} must be true or false (got {value[:20]!r})")


async def _spool(path: Path) -> int:
    """Write the request body to ``path`` (0600 from its first byte), at most :data:`MAX_UPLOAD_BYTES`.

    An upload that stops sending for :data:`UPLOAD_IDLE_SECONDS` is refused: it would hold the import lock
    (one import at a time) for as long as its client liked.
    """
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    chunks = aiter(request.body)
    with os.fdopen(fd, "wb") as out:
        while True:
            with trio.move_on_after(UPLOAD_IDLE_SECONDS) as idle:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
            if idle.cancelled_caught:
                raise InvalidRequest(
                    f"the upload sent nothing for {UPLOAD_IDLE_SECONDS:g} s; send the bundle again",
                    code="REQUEST_TIMEOUT",
                    status=408,
                )
            written += len(chunk)
            if written > MAX_UPLOAD_BYTES:
                raise PayloadTooLarge(f"the bundle is larger than {MAX_UPLOAD_BYTES} bytes")
            await trio.to_thread.run_sync(out.write, chunk)
        await trio.to_thread.run_sync(out.flush)
    return written


def _clear_spools(run_dir: Path) -> None:
    """Spools of imports that did not end (a killed daemon's): only one import runs at a time, so none is live."""
    for stale in run_dir.glob("import-*.part"):
        stale.unlink(missing_ok=True)


@blueprint.post("/v1/portability/import")
async def import_bundle() -> Response:
    require(caller(), "admin")
    svc = services()
    dry_run, force = _flag("dry_run"), _flag("force_overwrite")
    passphrase = _passphrase(request.headers.get(PASSPHRASE_HEADER), from_header=True)
    frozen = None if dry_run else svc.fleet().error()
    if frozen is not None:
        raise frozen  # the kill switch (any level), before the upload: a dry run writes nothing and stays allowed
    if svc.import_lock.locked():
        raise ImportInProgress()
    async with svc.import_lock:
        if not dry_run and not force:
            own = await svc.read(own_record_count)
            if own:
                raise ImportRefused(own)  # before the upload: a refused import costs nothing
        run_dir = _paths(svc)[1]
        await trio.to_thread.run_sync(_clear_spools, run_dir)
        spool = run_dir / f"import-{secrets.token_hex(8)}.part"
        try:
            size = await _spool(spool)
            if dry_run:
                summary = await _dry_run(svc, spool, size, passphrase)
            else:
                # One pass in one writer transaction: verified and inserted together, committed only if all of
                # it checks out. Shielded: once it runs, the identity step must follow it even if the client
                # leaves (a store holding the bundle under the old identity would need the import run again).
                with trio.CancelScope(shield=True):
                    summary, verified = await svc.writer.import_bundle(
                        spool, passphrase=passphrase, force=force, limits=limits_for(size)
                    )
                    summary.identity, summary.identity_note = await svc.adopt_import(verified.identity)
                summary.instance_did = svc.identity.did
        finally:
            await trio.to_thread.run_sync(functools.partial(spool.unlink, missing_ok=True))
    log.info(
        "import of %s: %d inserted, %d deduplicated, %d skipped; identity %s",
        summary.source_did,
        summary.records_inserted,
        summary.records_deduplicated,
        summary.records_skipped,
        summary.identity,
    )
    return json_response(summary.to_wire())


async def _dry_run(svc: Services, spool: Path, size: int, passphrase: bytes | None) -> ImportSummary:
    """Check the whole bundle and count what an import would do, writing nothing."""
    stop = threading.Event()

    def verify() -> VerifiedBundle:
        with spool.open("rb") as src:
            return verify_bundle(
                src,
                passphrase=passphrase,
                limits=limits_for(size),
                dry_run_store=_paths(svc)[0],
                should_stop=stop.is_set,
            )

    # About a minute per million records: a request cancelled meanwhile (the client left, the daemon stops)
    # returns at once, and the thread, told by ``stop``, ends within a MiB of reading.
    try:
        verified = await trio.to_thread.run_sync(verify, abandon_on_cancel=True)
    finally:
        stop.set()
    source_did = verified.manifest.source_did
    if verified.tokens and not applies_instance_state(
        carries_identity=verified.identity is not None, source_did=source_did, local_did=svc.identity.did
    ):
        raise ForeignTokens(source_did, svc.identity.did)
    return _dry_run_summary(verified, svc)


def _dry_run_summary(verified: VerifiedBundle, svc: Services) -> ImportSummary:
    manifest = verified.manifest
    counts = verified.dry_run_counts
    summary = ImportSummary(
        manifest.source_did,
        manifest.bundle_sha256,
        dry_run=True,
        records_inspected=manifest.record_count,
        records_inserted=counts.get("inserted", 0),
        records_deduplicated=counts.get("deduplicated", 0),
        records_skipped=counts.get("skipped", 0),
        refusals_by_reason={"DUPLICATE_CLOCK": counts["skipped"]} if counts.get("skipped") else {},
        tokens=len(verified.tokens),
        cursors=len(verified.cursors),
    )
    fill_counts(summary, manifest)
    if verified.identity is None:
        summary.identity, summary.identity_note = "kept", "the bundle carries no private key (--no-identity)"
    elif manifest.source_did == svc.identity.did:
        summary.identity, summary.identity_note = "adopted", "the bundle's identity is already this steward's"
    else:
        summary.identity = "would be adopted"
        summary.identity_note = f"this steward would sign as {manifest.source_did} instead of {svc.identity.did}"
    summary.instance_did = svc.identity.did
    return summary
