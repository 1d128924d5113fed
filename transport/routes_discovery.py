"""Discovery routes (issue 14): the mDNS peers heard, this instance's did:web document, a did:sync directory.

- ``GET /v1/discovery/mdns`` (``federation:manage``): what the LAN announced (``actors/discovery.py``),
  unverified; ``spl fleet sync peers discover`` fetches and verifies each peer's manifest.
- ``GET /.well-known/did.json`` (open, like all of ``/.well-known/``): the W3C DID document of
  ``did:web:<sync.discovery.did_web_domain>`` (or the host of ``serve.public_url``), naming this instance's key
  and its ``syncropel`` endpoint.
- ``/v1/directory`` (open, on only with ``[sync.discovery] serve_directory = true``): ``POST`` registers a signed
  federation manifest (the signature is the authentication: only the key holder can have made it), ``GET``
  lists registrations (``?namespace=``), ``GET /v1/directory/resolve?did=`` resolves a DID to its endpoint.
  Held in memory, bounded (10,000 registrations), each expiring unless refreshed (``spl.core.discovery``).
"""

from __future__ import annotations

import functools
import time
from typing import Any
from urllib.parse import urlsplit

import trio
from quart import Blueprint, Response, request

from spl.core.discovery import Directory, did_document, is_did, manifest_key_list, verify_registration
from spl.core.errors import InvalidRequest, NotFound
from spl.core.manifest import rfc3339
from spl.transport.auth import require
from spl.transport.context import caller, services
from spl.transport.requests import body_bytes
from spl.transport.responses import json_response

__all__ = ["OPEN_ROUTES", "blueprint"]

blueprint = Blueprint("discovery", __name__)

# Paths of this module answered without a token even when auth is on (transport/app.py gate 4): a directory's
# registrations authenticate by their signature, and its lookups are public, like the manifests they came from.
OPEN_ROUTES: frozenset[str] = frozenset({"/v1/directory", "/v1/directory/resolve"})

MAX_REGISTRATION_BYTES = 64 * 1024  # a signed manifest is ~2 KiB; the /.well-known/syncropel envelope ~4 KiB
MAX_LISTED = 1000


@blueprint.get("/v1/discovery/mdns")
async def mdns_peers() -> Response:
    require(caller(), "federation:manage")
    discovery = services().discovery
    if discovery is None:
        listener: dict[str, Any] = {"listening": False, "broadcasting": False, "error": "discovery is not running"}
        return json_response({"object": "list", "data": [], "listener": listener})
    return json_response({"object": "list", "data": discovery.peers(), "listener": discovery.status()})


@blueprint.get("/.well-known/did.json")
async def did_json() -> Response:
    config = services().config
    domain = config.sync.discovery.did_web_domain
    if domain is None and config.public_url:
        parts = urlsplit(config.public_url)
        domain = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if not domain:
        raise NotFound(
            "this instance has no did:web domain; set [sync.discovery] did_web_domain (or serve.public_url), "
            "or publish the document elsewhere with `spl identity publish-did-web --domain D`",
            code="DID_WEB_UNCONFIGURED",
        )
    identity = services().identity
    valid_from = config.created_at or rfc3339(services().started_at)
    # Every key of the instance (current and rotated-out ones, spl.core.rotation), as its manifest lists them.
    keys = manifest_key_list(services().manifest, did=identity.did, created_at=valid_from)
    return json_response(did_document(domain, keys, services().endpoint, identifier=identity.did))


def _directory() -> Directory:
    discovery = services().discovery
    directory = getattr(discovery, "directory", None)
    if directory is None:
        raise NotFound(
            "this daemon does not serve a did:sync directory; its operator turns it on with "
            "[sync.discovery] serve_directory = true",
            code="DIRECTORY_DISABLED",
        )
    assert isinstance(directory, Directory)
    return directory


@blueprint.post("/v1/directory")
async def register() -> Response:
    directory = _directory()
    body = await body_bytes(MAX_REGISTRATION_BYTES)
    now = time.time()
    # The signature checks (a rotated instance's chain: up to 65) run in a worker thread, off the event loop that
    # every other request shares; the directory itself is changed here, where its readers are.
    registration = await trio.to_thread.run_sync(functools.partial(verify_registration, body, now=now))
    entry = directory.record(registration, now=now)
    return json_response(entry.to_wire(), 201)


@blueprint.get("/v1/directory")
async def listing() -> Response:
    directory = _directory()
    namespace = request.args.get("namespace") or None
    if namespace is not None and len(namespace) > 256:
        raise InvalidRequest("query parameter 'namespace' is longer than 256 characters", code="INVALID_PARAMETER")
    entries = directory.listing(namespace, now=time.time(), limit=MAX_LISTED)
    return json_response(
        {"object": "list", "data": [entry.to_wire() for entry in entries], "has_more": len(entries) == MAX_LISTED}
    )


@blueprint.get("/v1/directory/resolve")
async def resolve() -> Response:
    directory = _directory()
    did = request.args.get("did", "")
    if not is_did(did):
        raise InvalidRequest("query parameter 'did' must be a DID such as did:key:z6Mk…", code="INVALID_PARAMETER")
    entry = directory.resolve(did, now=time.time())
    if entry is None:
        raise NotFound(f"{did} is not registered here (or its registration expired)", code="DID_NOT_REGISTERED")
    return json_response(entry.to_wire())
