"""``spl export`` and ``spl import``: move a whole instance, identity included (spec §9, issue 11).

``spl export --out FILE`` asks the running daemon for a bundle (``POST /v1/portability/export``, streamed) or,
with ``--offline``, builds it straight from the home while no daemon runs. ``spl import FILE`` streams a bundle
to a daemon (``POST /v1/portability/import``), which verifies all of it before it writes anything. Both talk to
whichever daemon ``--url`` / ``$SPL_SERVE_URL`` names, with the usual credential, so the seed's migration
(export here, import on a hosted steward) is two commands.

What this module guarantees on the client side:

- The bundle file is private from its first byte and never half-written: it is written to a temporary file
  (``mkstemp``: mode 0600) in the destination's folder, checked (its signed manifest must verify), then renamed
  over ``FILE``. A failed or interrupted export leaves ``FILE`` as it was.
- A bundle is never read into memory: downloads go to disk chunk by chunk, uploads are sent from a file iterator.
- A passphrase travels only in the JSON body (export) or the ``Spl-Bundle-Passphrase`` header (import), never in
  a URL (URLs end up in logs), and is never printed.
- Every string that came from a daemon or a bundle (DIDs, notes, refusal codes) is printed through
  :func:`spl.cli.output.safe`: a hostile bundle cannot drive the operator's terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, NoReturn

import msgspec
import typer

from spl.cli.answers import Answer, ErrorAnswer
from spl.cli.client import CliError, DaemonClient, DaemonError, DaemonUnreachable, decode_answer, load_httpx, one_line
from spl.cli.common import OUTPUT, URL, client_for, home, wants_json
from spl.cli.output import emit_json, safe

if TYPE_CHECKING:
    import httpx


__all__ = ["ImportSummary", "Progress", "export", "import_", "private_output", "read_passphrase", "shown_path"]

EXPORT_PATH = "/v1/portability/export"
IMPORT_PATH = "/v1/portability/import"
PASSPHRASE_HEADER = "Spl-Bundle-Passphrase"
BUNDLE_TYPES = ("application/zstd", "application/x-tar")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # the first bytes of every zstd frame: how an upload's content type is chosen
CHUNK = 256 * 1024
MAX_PASSPHRASE_BYTES = 4096  # a passphrase, not a key file: anything longer is the wrong file
MAX_ANSWER_BYTES = 1024 * 1024  # an error envelope or an import summary is a few hundred bytes
# Between two chunks of a download the daemon may pause while it pages through the log; after an upload it answers
# once every record is verified and committed (a million records take a minute or two), so its read timeout is long.
DOWNLOAD_READ_TIMEOUT = 120.0
IMPORT_READ_TIMEOUT = 900.0
PROGRESS_INTERVAL = 0.25  # seconds between two redraws of the progress line


# -- what the daemon answers -------------------------------------------------------------------------------------


class ImportSummary(Answer):
    """``POST /v1/portability/import``'s answer: what the import (or the dry run) did. Other keys are ignored."""

    what: ClassVar[str] = "an spl import summary"
    dry_run: bool
    source_did: str
    signature: str
    records_inspected: int
    records_inserted: int
    records_deduplicated: int
    records_skipped: int = 0
    records_failed: int = 0
    refusals_by_reason: dict[str, int] = msgspec.field(default_factory=dict)
    threads: int = 0
    federation_pairs: int = 0
    sync_pairs: int = 0
    consent_grants: int = 0
    namespaces: int = 0
    tokens: int = 0
    identity: str = "not included"
    identity_note: str = ""
    instance_did: str | None = None


# -- local files ---------------------------------------------------------------------------------------------------


def read_passphrase(path: Path) -> bytes:
    """The passphrase in ``path``: its bytes without one trailing newline; never empty, never echoed.

    It must be UTF-8 text without control characters: it travels in a JSON string (export) and in an HTTP header
    (import), where a stray ``\\r`` or NUL would be refused or, worse, cut the passphrase short.

    Raises:
        CliError: The file cannot be read, is empty, too long, not UTF-8 or holds a control character.
    """
    shown = safe(str(path))
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_PASSPHRASE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"--passphrase-file: cannot read {shown}: {exc.strerror or exc}") from None
    if len(data) > MAX_PASSPHRASE_BYTES:
        raise CliError(f"--passphrase-file: {shown} is over {MAX_PASSPHRASE_BYTES} bytes; is it the right file?")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise CliError(f"--passphrase-file: {shown} is empty; write the passphrase into it (one line)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"--passphrase-file: {shown} is not UTF-8 text; save the passphrase as UTF-8") from None
    if not all(char.isprintable() or char == " " for char in text):
        raise CliError(
            f"--passphrase-file: {shown} holds a control character or a second line; "
            "keep the passphrase on one line of printable text"
        )
    return data


@contextlib.contextmanager
def private_output(out: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file beside ``out``, mode 0600 from its creation, renamed over ``out`` if the block succeeds.

    Yields the open file and its path (to check the bundle before it takes ``out``'s name). On any exception,
    ``KeyboardInterrupt`` included, the temporary file is removed and ``out`` is left as it was.

    Raises:
        CliError: ``out`` is a folder, or its folder does not exist or cannot be written.
    """
    shown = safe(str(out))
    if out.is_dir():
        raise CliError(f"--out {shown} is a folder; name the bundle file, e.g. --out {shown}/migration.tar.zst")
    folder = out.parent
    if not folder.is_dir():
        raise CliError(f"--out {shown}: the folder {safe(str(folder))} does not exist; create it first")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=folder)
    except OSError as exc:
        raise CliError(f"--out {shown}: cannot write in {safe(str(folder))}: {exc.strerror or exc}") from None
    temporary = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file, temporary
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class Progress:
    """``downloading 12.5 MB (31.2 MB/s)`` redrawn in place on stderr, only when stderr is a terminal.

    A pipe or a log file gets nothing: a progress line there is noise, and carriage returns garble it. Nor does a
    transfer over within :data:`PROGRESS_INTERVAL`: the line is for bundles large enough to make one wait.
    """

    def __init__(self, verb: str, total: int | None = None, *, enabled: bool | None = None) -> None:
        self.verb, self.total = verb, total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.done = 0
        self.drawn = False
        self._started = self._last = time.monotonic()

    def line(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-6)
        of = f" of {_size(self.total)}" if self.total else ""
        return f"{self.verb} {_size(self.done)}{of} ({_size(self.done / elapsed)}/s)"

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._last >= PROGRESS_INTERVAL:
            self._last, self.drawn = now, True
            typer.echo(f"\r\x1b[K{self.line(now)}", err=True, nl=False)

    def finish(self) -> None:
        """The last figures, and the line ended, when a line was drawn at all."""
        if self.drawn:
            typer.echo(f"\r\x1b[K{self.line(time.monotonic())}", err=True)


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"  # pragma: no cover - the loop returns


# -- HTTP --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _http(client: DaemonClient, read_timeout: float) -> Iterator[httpx.Client]:
    """An httpx client for ``client``'s daemon; transport failures become the same one-line errors as ``call``'s."""
    httpx = load_httpx()  # without trio (spl.cli.client)

    headers = {"x-api-key": client.token} if client.token else {}
    timeout = httpx.Timeout(client.timeout, read=read_timeout)
    try:
        with httpx.Client(base_url=client.url, timeout=timeout, headers=headers) as http:
            yield http
    except httpx.ConnectError:
        raise DaemonUnreachable(
            f"no daemon answers at {client.url}: start one with `spl serve --daemon` (or check --url / SPL_SERVE_URL)"
        ) from None
    except httpx.TimeoutException:
        raise CliError(f"the daemon at {client.url} stopped answering (no data for {read_timeout:.0f}s)") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CliError(f"request to {client.url} failed ({type(exc).__name__}: {one_line(str(exc))})") from None


def _read_bounded(response: httpx.Response) -> bytes:
    """At most :data:`MAX_ANSWER_BYTES` of a streamed answer: a daemon's JSON answer is small, a hostile one is not."""
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            raise CliError(
                f"{response.request.method} {response.request.url} answered with over {MAX_ANSWER_BYTES} bytes "
                "where a short JSON answer belongs: is it an spl daemon? Check --url / SPL_SERVE_URL"
            )
    return bytes(data)


def _json_answer(response: httpx.Response) -> Any:
    try:
        return msgspec.json.decode(_read_bounded(response))
    except msgspec.DecodeError:
        return None


def _where(client: DaemonClient, response: httpx.Response) -> str:
    return f"{response.request.method} {client.url}{response.request.url.path}"


def _refused(client: DaemonClient, response: httpx.Response) -> NoReturn:
    """Raise the daemon's error envelope as a :class:`DaemonError` (as ``call`` does), or say it is not spl."""
    payload = _json_answer(response)
    status = response.status_code
    if isinstance(payload, dict):
        error = decode_answer(payload, ErrorAnswer, _where(client, response))
        code = one_line(error.code or error.error or "ERROR", 64)
        message = one_line(str(error.message if error.message is not None else f"HTTP {status}"))
        if status == 401 and client.withheld is not None:
            message += f" ({client.withheld}; set SPL_TOKEN or `spl token save` a token for this URL)"
        raise DaemonError(status, code, message)
    raise DaemonError(status, f"HTTP {status}", _not_spl(client, response))


def _not_spl(client: DaemonClient, response: httpx.Response) -> str:
    kind = one_line(response.headers.get("content-type") or "no content type", 60)
    return (
        f"{client.url} answered {response.request.method} {response.request.url.path} with {kind}, "
        "not what an spl daemon sends: is it an spl daemon? Check --url / SPL_SERVE_URL"
    )


# -- spl export --------------------------------------------------------------------------------------------------


def export(
    out: Path = typer.Option(..., "--out", help="The bundle file to write (mode 0600), e.g. ~/migration.tar.zst."),
    no_identity: bool = typer.Option(
        False, "--no-identity", help="Leave the private key out: the importer keeps its own DID (inspection only)."
    ),
    carry_tokens: bool = typer.Option(
        False, "--carry-tokens", help="Carry bearer tokens (hashes only) so they stay valid on the importer."
    ),
    uncompressed: bool = typer.Option(False, "--uncompressed", help="Write a plain tar instead of tar.zst."),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="Seal the private key with the passphrase in this file (one line)."
    ),
    offline: bool = typer.Option(
        False, "--offline", help="Read this home directly instead of asking its daemon (which must not run)."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Export this instance (records, threads, pairs, grants, identity) into one signed bundle file.

    The file is written 0600, through a temporary file renamed at the end: a failed export leaves nothing.
    Without --passphrase-file the private key is stored plain in the bundle: keep the file private.

    Example: spl export --out ~/migration.tar.zst --passphrase-file ~/.bundle-passphrase
    """
    as_json = wants_json(output)
    out = out.expanduser()
    passphrase = read_passphrase(passphrase_file.expanduser()) if passphrase_file is not None else None
    if offline and url:
        raise CliError("--offline reads this home directly and talks to no daemon; drop --url (or --offline)")
    with private_output(out) as (file, temporary):
        if offline:
            _export_offline(
                file, identity=not no_identity, tokens=carry_tokens, compress=not uncompressed, passphrase=passphrase
            )
        else:
            body: dict[str, Any] = {
                "identity": not no_identity,
                "carry_tokens": carry_tokens,
                "compress": not uncompressed,
            }
            if passphrase is not None:
                body["passphrase"] = passphrase.decode("utf-8")
            _download(client_for(url), body, file)
        file.flush()
        manifest = _verified_manifest(temporary)
    size = out.stat().st_size
    if as_json:
        emit_json(_export_summary(out, size, manifest))
        return
    _print_export(out, manifest)


def _export_offline(file: BinaryIO, *, identity: bool, tokens: bool, compress: bool, passphrase: bytes | None) -> None:
    """Build the bundle from the home's store while holding the home's run lock, so no daemon starts meanwhile."""
    from spl.core.errors import SplError
    from spl.daemon.home import DaemonLock, HomeBusy
    from spl.store.portability import ExportOptions, bundle_config, export_bundle

    h = home()
    config = h.load_config()
    lock = DaemonLock(h)
    try:
        lock.acquire()
    except HomeBusy as exc:
        raise CliError(f"{exc}, or export through it: run `spl export` without --offline") from None
    try:
        options = ExportOptions(identity=identity, carry_tokens=tokens, compress=compress, passphrase=passphrase)
        instance, problem = h.load_instance_identity(config.did)  # key and rotation chain (docs/identity.md)
        if problem is not None:
            raise CliError(f"cannot export: {problem}")
        export_bundle(h.db_path, instance, file, options, config=bundle_config(config))
    except SplError as exc:
        raise CliError(f"{exc.code}: {exc.message}") from None
    finally:
        lock.release()


def _download(client: DaemonClient, body: dict[str, Any], file: BinaryIO) -> None:
    """Stream the daemon's bundle into ``file``; an error answer becomes its one-line error."""
    progress = Progress("downloading")
    with _http(client, DOWNLOAD_READ_TIMEOUT) as http, http.stream("POST", EXPORT_PATH, json=body) as response:
        if response.status_code != 200:
            _refused(client, response)
        kind = (response.headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind not in BUNDLE_TYPES:
            raise CliError(_not_spl(client, response))
        for chunk in response.iter_bytes(CHUNK):
            file.write(chunk)
            progress.advance(len(chunk))
    progress.finish()


def _verified_manifest(path: Path) -> dict[str, Any]:
    """The bundle's signed manifest, verified; a bundle that does not verify never takes the --out name."""
    from spl.core.errors import SplError
    from spl.store.portability import read_bundle_manifest

    try:
        return read_bundle_manifest(path)
    except SplError as exc:
        raise CliError(
            f"{exc.code}: the exported bundle does not verify ({exc.message}); nothing was written"
        ) from None


def shown_path(path: Path) -> str:
    """``path`` as the seed shows it: under the home folder as ``~/…``, as typed before the shell expanded it."""
    try:
        return f"~/{path.relative_to(Path.home())}"
    except (ValueError, RuntimeError):  # elsewhere, or no home directory
        return str(path)


def _count(manifest: dict[str, Any], kind: str) -> str:
    counts = manifest.get("counts")
    value = counts.get(kind, 0) if isinstance(counts, dict) else "?"
    return safe(value, 32)


def _identity_line(manifest: dict[str, Any]) -> str:
    if not manifest.get("identity_included"):
        return "not included"
    if manifest.get("identity_sealed"):
        return "included, sealed with your passphrase"
    return f"included ({safe(manifest.get('source_did'), 256)})"


def _print_export(out: Path, manifest: dict[str, Any]) -> None:
    """The seed's lines (004, step 2), spaced as the seed spaces them."""
    typer.echo(f"✓ Bundle written to {safe(shown_path(out))}")
    typer.echo(f"  records:       {_count(manifest, 'records')}")
    typer.echo(f"  threads:       {_count(manifest, 'threads')}")
    typer.echo(f"  federation pairs: {_count(manifest, 'federation_pairs')}")
    typer.echo(f"  consent grants:   {_count(manifest, 'consent_grants')}")
    if manifest.get("carries_tokens"):
        typer.echo(f"  tokens:           {_count(manifest, 'tokens')} (hashes: valid on the importer)")
    typer.echo(f"  identity:      {_identity_line(manifest)}")
    typer.echo("  signed:        yes")
    if manifest.get("identity_included") and not manifest.get("identity_sealed"):
        typer.echo(
            "warning: the bundle holds the instance's private key unencrypted (the file is written 0600); "
            "keep it private, or export with --passphrase-file FILE to seal the key",
            err=True,
        )


def _export_summary(out: Path, size: int, manifest: dict[str, Any]) -> dict[str, Any]:
    keys = ("source_did", "record_count", "counts", "identity_included", "identity_sealed", "carries_tokens")
    return {
        "object": "export_summary",
        "path": str(out),
        "bytes": size,
        **{key: manifest.get(key) for key in keys},
        "signed": True,
        "bundle_sha256": manifest.get("bundle_sha256"),
        "created_at": manifest.get("created_at"),
    }


# -- spl import --------------------------------------------------------------------------------------------------


def import_(
    bundle: Path = typer.Argument(..., help="The bundle file (tar.zst or tar) written by `spl export`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Verify and count everything, write nothing."),
    force_overwrite: bool = typer.Option(
        False, "--force-overwrite", help="Import into a store that already holds records of its own."
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="The passphrase the bundle's private key was sealed with (one line)."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Import a bundle into the daemon: everything is verified before anything is written; re-running is a no-op.

    Example: spl import ~/migration.tar.zst --dry-run
    """
    as_json = wants_json(output)
    bundle = bundle.expanduser()
    passphrase = read_passphrase(passphrase_file.expanduser()) if passphrase_file is not None else None
    client = client_for(url)
    payload = _upload(client, bundle, passphrase, dry_run=dry_run, force_overwrite=force_overwrite)
    summary = decode_answer(payload, ImportSummary, f"POST {client.url}{IMPORT_PATH}")
    if as_json:
        emit_json(payload)
        return
    _print_import(summary)


# typer names a command after its function; ``import`` is a Python keyword, so the function is ``import_``.
import_.__name__ = "import"


def _upload(
    client: DaemonClient, bundle: Path, passphrase: bytes | None, *, dry_run: bool, force_overwrite: bool
) -> Any:
    """Stream ``bundle`` to the daemon from disk, chunk by chunk; returns its JSON answer."""
    shown = safe(str(bundle))
    try:
        file = open(bundle, "rb")  # noqa: SIM115 - closed below, after the upload that reads it
    except IsADirectoryError:
        raise CliError(f"{shown} is a folder; pass the bundle file written by `spl export`") from None
    except OSError as exc:
        raise CliError(f"cannot read {shown}: {exc.strerror or exc}") from None
    with file:
        size = os.fstat(file.fileno()).st_size
        kind = "application/zstd" if file.read(len(ZSTD_MAGIC)) == ZSTD_MAGIC else "application/x-tar"
        file.seek(0)
        headers: dict[str, Any] = {"content-type": kind, "content-length": str(size)}
        if passphrase is not None:
            headers[PASSPHRASE_HEADER] = passphrase  # bytes: UTF-8 on the wire, never in the URL
        params = {"dry_run": "true" if dry_run else None, "force_overwrite": "true" if force_overwrite else None}
        progress = Progress("uploading", size)

        def chunks() -> Iterator[bytes]:
            while chunk := file.read(CHUNK):
                progress.advance(len(chunk))
                yield chunk

        query = {key: value for key, value in params.items() if value is not None}
        with (
            _http(client, IMPORT_READ_TIMEOUT) as http,
            http.stream("POST", IMPORT_PATH, params=query, content=chunks(), headers=headers) as response,
        ):
            progress.finish()
            if response.status_code != 200:
                _refused(client, response)
            payload = _json_answer(response)
    if not isinstance(payload, dict):
        raise CliError(_not_spl(client, response))
    return payload


def _print_import(summary: ImportSummary) -> None:
    """The seed's lines (004, step 5); skipped, failed and refused records only when there are any."""
    typer.echo("✓ Bundle verified")
    typer.echo(f"  signature:     {safe(summary.signature, 64)}")
    typer.echo(f"  source DID:    {safe(summary.source_did, 256)}")
    typer.echo("")
    typer.echo("→ Checking (dry run: nothing is written)..." if summary.dry_run else "→ Importing...")
    rows: list[tuple[str, object]] = [
        ("records inserted:", summary.records_inserted),
        ("records deduplicated:", summary.records_deduplicated),
    ]
    if summary.records_skipped:
        rows.append(("records skipped:", summary.records_skipped))
    if summary.records_failed:
        rows.append(("records failed:", summary.records_failed))
    if summary.refusals_by_reason:
        reasons = sorted(summary.refusals_by_reason.items())
        rows.append(("refused:", ", ".join(f"{safe(code, 64)} {count}" for code, count in reasons)))
    rows += [("threads:", summary.threads), ("federation pairs:", summary.federation_pairs)]
    note = f" ({safe(summary.identity_note)})" if summary.identity_note else ""
    rows.append(("identity:", f"{safe(summary.identity, 64)}{note}"))
    for label, value in rows:
        typer.echo(f"  {label:<20} {value}")
    typer.echo("")
    if summary.dry_run:
        typer.echo("✓ Dry run complete: nothing was written; run again without --dry-run to import")
    else:
        typer.echo("✓ Import complete")
