"""Peer discovery commands (issue 14): ``spl discover``, ``spl fleet sync peers …``, ``spl identity publish-did-web``.

``spl fleet sync peers discover`` gathers peers from four methods (docs/discovery.md) and checks each one the
same way: it fetches the peer's ``/.well-known/syncropel`` and verifies the signed manifest. A peer whose manifest
does not verify, or is signed by another DID than the one it was found under, is listed as unverified with the
reason: never hidden, never trusted. Nothing here creates a pair; the operator reviews the list and runs
``spl fleet sync add`` or ``spl federation pair`` for the peers they want.

- ``mdns``: what the local daemon's listener heard (``GET /v1/discovery/mdns``);
- ``did-web``: ``https://<domain>/.well-known/did.json`` (HTTPS only, certificates verified against the system's
  CAs plus ``federation.ca_file``, no redirects), then the endpoint its ``syncropel`` service names;
- ``did-sync``: a directory's ``GET /v1/directory?namespace=`` (``--directory`` or ``sync.discovery.directory_url``);
- ``static``: the ``[[sync.peers]]`` of this home's config.

Every fetch is bounded in size and time, and every value from a peer or a directory is validated again here
(:mod:`spl.core.discovery`) and escaped in text output.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from spl.cli.client import CliError, DaemonUnreachable, load_httpx
from spl.cli.common import OUTPUT, URL, client_for, home, wants_json
from spl.cli.output import emit_json, emit_list, safe, table
from spl.core.config import Config
from spl.core.discovery import (
    FoundPeer,
    did_document,
    did_web_url,
    is_endpoint,
    listed_peer,
    manifest_key_list,
    parse_did_document,
)
from spl.core.errors import InvalidRequest
from spl.core.feed import ManifestInvalid
from spl.core.manifest import signed_manifest_did
from spl.core.text import printable

if TYPE_CHECKING:
    import httpx

__all__ = ["discover", "peers_app", "publish_did_web"]

METHODS = ("mdns", "did-web", "did-sync", "static")
MAX_MANIFEST_BYTES = 256 * 1024
MAX_DID_DOCUMENT_BYTES = 64 * 1024
MAX_LISTING_BYTES = 4 * 1024 * 1024
MAX_VERIFIED = 512  # peers checked in one run (a directory lists at most 1000; a LAN table holds 256)
FETCH_DEADLINE = 10.0  # seconds for one whole fetch: connect, headers and body

peers_app = typer.Typer(
    help="Peers found by discovery (mDNS, did:web, a did:sync directory, static config).", no_args_is_help=True
)


# -- bounded fetches ---------------------------------------------------------------------------------


def _http(ca_file: str | None) -> httpx.Client:
    """A client that never follows redirects (a did:web answer must come from the domain itself, over HTTPS)
    and verifies certificates against the system's CAs plus ``federation.ca_file``; never sends a credential."""
    from spl.transport.peer import tls_context  # the daemon's own rule for peers' TLS; heavy, so only here

    lib = load_httpx()
    client: httpx.Client = lib.Client(
        timeout=lib.Timeout(FETCH_DEADLINE, connect=5.0),
        follow_redirects=False,
        verify=tls_context(ca_file),
        headers={"accept-encoding": "identity"},
    )
    return client


def _fetch(client: httpx.Client, url: str, cap: int, what: str) -> bytes:
    """GET ``url``: a 200 whose body is at most ``cap`` bytes, whole within :data:`FETCH_DEADLINE`.

    Raises:
        CliError: Unreachable, a status other than 200, compressed, too large or too slow; the message says which.
    """
    httpx = load_httpx()
    deadline = time.monotonic() + FETCH_DEADLINE
    shown = printable(url, 160)
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise CliError(f"{shown} answered {response.status_code} instead of the {what}")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                raise CliError(f"{shown} sent a compressed {what} although identity was asked for")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > cap:
                    raise CliError(f"{shown}: the {what} is larger than {cap} bytes; refused")
                if time.monotonic() > deadline:
                    raise CliError(f"{shown} did not deliver the {what} within {FETCH_DEADLINE:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        raise CliError(f"{shown} is unreachable ({type(exc).__name__}: {printable(exc, 120)})") from None


def _settings() -> tuple[Config | None, str | None]:
    """This home's config (None without a home) and its ``federation.ca_file``."""
    try:
        config = home().load_config()
    except Exception:
        return None, None
    return config, config.federation.ca_file


# -- verification ------------------------------------------------------------------------------------


def verify_peer(client: httpx.Client, peer: FoundPeer) -> dict[str, Any]:
    """``peer`` as a row, with whether its endpoint's signed manifest verifies and names the DID it was found under."""
    row = peer.to_wire()
    row.update(verified=False, reason=None, manifest_did=None)
    try:
        body = _fetch(client, f"{peer.endpoint}/.well-known/syncropel", MAX_MANIFEST_BYTES, "manifest")
        did, _manifest = signed_manifest_did(body, where=peer.endpoint, now=time.time())
    except (CliError, ManifestInvalid) as exc:
        row["reason"] = str(exc)
        return row
    row["manifest_did"] = did
    if peer.expect_dids and did not in peer.expect_dids:
        row["reason"] = f"the manifest is signed by {did}, which {peer.did} does not list as its key"
    elif peer.did is not None and not peer.expect_dids and did != peer.did:
        row["reason"] = f"the manifest is signed by {did}, not by {peer.did} as announced"
    else:
        row["verified"] = True
        row["did"] = row["did"] or did
    return row


# -- the four methods ----------------------------------------------------------------------------------


def _from_mdns(url: str | None) -> tuple[list[FoundPeer], list[str]]:
    try:
        answer = client_for(url).get("/v1/discovery/mdns")
    except DaemonUnreachable as exc:
        return [], [f"mdns: {exc} (its listener collects the LAN's announcements)"]
    notes = []
    listener = answer.get("listener") if isinstance(answer, dict) else None
    if isinstance(listener, dict) and listener.get("error"):
        notes.append(f"mdns: {printable(listener['error'], 200)}")
    elif isinstance(listener, dict) and not listener.get("listening"):
        notes.append("mdns: the daemon's listener is off ([sync.discovery] mdns_listen = false)")
    return _listed(answer, "mdns", notes)


def _listed(answer: Any, method: str, notes: list[str]) -> tuple[list[FoundPeer], list[str]]:
    data = answer.get("data") if isinstance(answer, dict) else None
    found = []
    for entry in data if isinstance(data, list) else []:
        try:
            found.append(listed_peer(entry if isinstance(entry, dict) else {}, method))
        except ValueError as exc:
            notes.append(f"{method}: skipped {exc}")
    return found, notes


def _from_did_web(client: httpx.Client, domain: str) -> FoundPeer:
    try:
        url = did_web_url(domain)
    except InvalidRequest as exc:
        raise CliError(exc.message) from None
    body = _fetch(client, url, MAX_DID_DOCUMENT_BYTES, "DID document")
    try:
        return parse_did_document(json.loads(body), domain, now=time.time())
    except (ValueError, RecursionError) as exc:
        raise CliError(f"did-web: {exc}") from None


def _from_directory(client: httpx.Client, directory: str, namespace: str | None) -> tuple[list[FoundPeer], list[str]]:
    httpx = load_httpx()
    if not is_endpoint(directory):
        raise CliError(f"--directory {printable(directory, 80)} is not an http(s) URL such as https://dir.example")
    query = "?" + httpx.QueryParams({"namespace": namespace}).__str__() if namespace else ""
    body = _fetch(client, f"{directory.rstrip('/')}/v1/directory{query}", MAX_LISTING_BYTES, "directory listing")
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise CliError(f"{printable(directory, 80)} answered with something that is not JSON") from None
    return _listed(answer, "did-sync", [])


def _from_config(config: Config | None) -> list[FoundPeer]:
    if config is None:
        return []
    return [
        FoundPeer("static", peer.url.rstrip("/"), peer.did, list(peer.namespaces), None, peer.name)
        for peer in config.sync.peers
    ]


def _method(value: str) -> str:
    if value not in METHODS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(METHODS)}")
    return value


@peers_app.command("discover")
def discover_peers(
    method: str = typer.Option(
        None, "--method", parser=_method, metavar="[" + "|".join(METHODS) + "]", help="One method (default: all)."
    ),
    domain: str = typer.Option(None, "--domain", help="did-web: the domain whose did.json to resolve."),
    namespace: str = typer.Option(None, "--namespace", help="did-sync: list only peers advertising it."),
    directory: str = typer.Option(
        None, "--directory", help="did-sync: the directory's URL (default: sync.discovery.directory_url)."
    ),
    url: str = URL,
    output: str = OUTPUT,
) -> None:
    """Find peers (mDNS, did:web, a did:sync directory, static config) and verify each one's signed manifest.

    Lists what was found; never pairs. Pair with the ones you want (`spl federation pair URL`).

    Example: spl fleet sync peers discover --method did-sync --directory https://dir.example --namespace default
    """
    as_json = wants_json(output)
    config, ca_file = _settings()
    methods = (method,) if method else METHODS
    found: list[FoundPeer] = []
    notes: list[str] = []
    with _http(ca_file) as client:
        if "mdns" in methods:
            peers, said = _from_mdns(url)
            found += peers
            notes += said
        if "did-web" in methods:
            if domain:
                try:
                    found.append(_from_did_web(client, domain))
                except CliError as exc:
                    if method:
                        raise
                    notes.append(f"did-web: {exc}")
            elif method:
                raise CliError("--method did-web needs --domain D (the domain whose /.well-known/did.json to read)")
            else:
                notes.append("did-web: skipped (no --domain)")
        if "did-sync" in methods:
            where = directory or (config.sync.discovery.directory_url if config else None)
            if where:
                try:
                    peers, said = _from_directory(client, where, namespace)
                except CliError as exc:
                    if method:
                        raise
                    peers, said = [], [f"did-sync: {exc}"]
                found += peers
                notes += said
            elif method:
                raise CliError("--method did-sync needs --directory URL (or sync.discovery.directory_url set)")
            else:
                notes.append("did-sync: skipped (no --directory and no sync.discovery.directory_url)")
        if "static" in methods:
            found += _from_config(config)
        if len(found) > MAX_VERIFIED:
            notes.append(f"{len(found) - MAX_VERIFIED} more peer(s) not checked (at most {MAX_VERIFIED} per run)")
            found = found[:MAX_VERIFIED]
        with ThreadPoolExecutor(max_workers=16) as pool:
            rows = list(pool.map(lambda peer: verify_peer(client, peer), found))
    for note in notes:
        typer.echo(f"note: {safe(note, 300)}", err=True)
    if as_json:
        emit_list(rows)
        return
    if not rows:
        typer.echo("no peers found")
        return
    table(
        [
            [
                row["did"] or "-",
                row["endpoint"],
                ",".join(row["namespaces"]) or "-",
                row["method"],
                row["last_seen"] or "-",
                "yes" if row["verified"] else f"NO: {row['reason']}",
            ]
            for row in rows
        ],
        ["DID", "ENDPOINT", "NAMESPACES", "METHOD", "LAST SEEN", "VERIFIED"],
    )


@peers_app.command("register")
def register(
    directory: str = typer.Option(
        None, "--directory", help="The directory's URL (default: sync.discovery.directory_url)."
    ),
    url: str = URL,
    output: str = OUTPUT,
) -> None:
    """Register this instance in a did:sync directory with its signed manifest (re-run to refresh it).

    Example: spl fleet sync peers register --directory https://dir.example
    """
    httpx = load_httpx()
    as_json = wants_json(output)
    config, ca_file = _settings()
    where = directory or (config.sync.discovery.directory_url if config else None)
    if not where or not is_endpoint(where):
        raise CliError("pass --directory URL (an http(s) URL), or set sync.discovery.directory_url")
    manifest = client_for(url).get("/.well-known/syncropel")
    with _http(ca_file) as client:
        try:
            response = client.post(f"{where.rstrip('/')}/v1/directory", json=manifest)
        except httpx.HTTPError as exc:
            raise CliError(f"{printable(where, 80)} is unreachable ({type(exc).__name__})") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 201 or not isinstance(answer, dict):
        detail = answer.get("message") if isinstance(answer, dict) else None
        raise CliError(f"the directory refused the registration ({response.status_code}: {printable(detail, 200)})")
    if as_json:
        emit_json(answer)
        return
    typer.echo(
        f"registered {safe(answer.get('did'))} at {safe(answer.get('endpoint'))} "
        f"until {safe(answer.get('expires_at'))}; re-run before then to stay listed"
    )


def discover(
    peer_url: str = typer.Option(..., "--peer-url", help="The peer's base URL, e.g. https://peer.example:9100."),
    output: str = OUTPUT,
) -> None:
    """Fetch and verify a peer's manifest.

    Example: spl discover --peer-url https://peer.example:9100
    """
    as_json = wants_json(output)
    if not is_endpoint(peer_url):
        raise CliError(f"--peer-url {printable(peer_url, 80)} is not an http(s) URL such as http://10.0.0.2:9100")
    endpoint = peer_url.rstrip("/")
    _, ca_file = _settings()
    with _http(ca_file) as client:
        body = _fetch(client, f"{endpoint}/.well-known/syncropel", MAX_MANIFEST_BYTES, "manifest")
    try:
        did, manifest = signed_manifest_did(body, where=endpoint, now=time.time())
    except ManifestInvalid as exc:
        raise CliError(f"not verified: {exc}") from None
    envelope = json.loads(body)
    capabilities = envelope.get("capabilities_manifest", {}) if isinstance(envelope, dict) else {}
    flags = capabilities.get("capabilities") if isinstance(capabilities, dict) else None
    federation, advertises, consent = (
        _object(manifest.get(key)) for key in ("federation", "advertises", "consent_policy")
    )
    result = {
        "object": "discovered_peer",
        "did": did,
        "verified": True,
        "endpoint": federation.get("endpoint"),
        "namespaces": advertises.get("namespaces", []),
        "capabilities": sorted(name for name, on in flags.items() if on is True) if isinstance(flags, dict) else [],
        "consent_posture": consent.get("default_posture"),
        "expires_at": manifest["signature"].get("expires_at"),
    }
    if as_json:
        emit_json(result)
        return
    namespaces = result["namespaces"] if isinstance(result["namespaces"], list) else []
    for label, value in (
        ("did", did),
        ("verified", "yes (signature checked, not expired)"),
        ("endpoint", result["endpoint"]),
        ("namespaces", ", ".join(str(name) for name in namespaces[:16]) or "-"),
        ("capabilities", ", ".join(result["capabilities"]) or "-"),
        ("consent", result["consent_posture"] or "-"),
        ("expires_at", result["expires_at"]),
    ):
        typer.echo(f"{label:<13} {safe(value, 300)}")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def publish_did_web(
    domain: str = typer.Option(..., "--domain", help="The domain that will serve /.well-known/did.json."),
    out: Path = typer.Option(None, "--out", help="Write the document to this file (default: print it)."),
    endpoint: str = typer.Option(
        None, "--endpoint", help="The URL peers reach this instance at (default: serve.public_url, else the daemon's)."
    ),
) -> None:
    """Write this instance's did:web DID document.

    Serve it at https://DOMAIN/.well-known/did.json (the daemon itself serves it there when
    sync.discovery.did_web_domain is set).

    Example: spl identity publish-did-web --domain alice.dev
    """
    h = home()
    try:
        config = h.load_config()
    except Exception as exc:
        raise CliError(f"cannot read this home's config ({printable(exc, 160)}); run `spl init` first") from None
    target = endpoint or config.public_url
    if target is None:
        running = h.running()
        target = running.url if running is not None else None
    if not target or not is_endpoint(target):
        raise CliError(
            "no endpoint to publish: pass --endpoint URL, set serve.public_url, or start the daemon (`spl serve`)"
        )
    manifest: Any = None
    running = h.running()
    if running is not None and running.url:  # its manifest lists every key after a rotation (current and past)
        try:
            manifest = client_for(running.url).get("/.well-known/syncropel").get("federation_manifest")
        except CliError:
            manifest = None
    keys = manifest_key_list(manifest, did=config.did, created_at=config.created_at)
    try:
        document = did_document(domain, keys, target, identifier=config.did)
    except InvalidRequest as exc:
        raise CliError(exc.message) from None
    text = json.dumps(document, indent=2)
    if out is None:
        typer.echo(text)
        return
    out.write_text(text + "\n")
    typer.echo(f"wrote {out}: serve it at {did_web_url(domain)}", err=True)
