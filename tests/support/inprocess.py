"""An spl daemon inside the test's own trio run: real home, real actors, the real Quart app, no socket.

Most HTTP behaviour (bad input, auth and scopes, the Host gate, CORS, media types, body limits, error
envelopes, the record/thread/namespace/token routes) is decided by the Quart application and the actors behind
it, not by Hypercorn. Checking it through ``app.test_client()`` costs milliseconds instead of a ``spl serve``
subprocess per module, and a failure shows the route's traceback in the test's own output.

What this cannot show, and keeps ``DaemonProcess`` tests under ``tests/e2e/``: anything on the wire (early
answers and keep-alive, connection caps, header timeouts, chunked bodies), endless SSE streams (quart-trio's
test client hangs when leaving one, see ``design/runtime.md``), durability across ``kill -9``, signals, and the
official SDK, which needs a real URL.

The tree mirrors ``spl.daemon.assembly.Daemon._run_tree`` (sse-hub, store-writer, reconciler and
federation under one ``Supervisor``) without the parts that are about a process: no run lock or run files, no
bound socket, no signal handling, no watchdog.
"""

from __future__ import annotations

import json as jsonlib
import shutil
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from quart_trio import QuartTrio

from spl.actors.hub import Hub, HubClient
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import StoreWriter, WriterClient
from spl.core.manifest import federation_manifest
from spl.daemon.assembly import describe_problems
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import quiet_discovery
from spl.daemon.wiring import build_federation
from spl.runtime.supervisor import ChildSpec, Supervisor
from spl.store.database import ReadPool, connect_writer
from spl.store.tokens import load_tokens
from spl.transport.app import create_app
from spl.transport.auth import TokenBook
from spl.transport.services import Services

__all__ = ["ENDPOINT", "InProcessDaemon", "copy_home", "run_in_process"]

# What the in-process daemon says it is reachable at. Nothing listens there: requests go through the test client,
# whose default ``Host`` is ``localhost`` (a loopback name, so the auth-off Host gate lets it through).
ENDPOINT = "http://127.0.0.1:9"


def copy_home(template: Path, destination: Path) -> Home:
    """A home for one test: a copy of an initialised ``template`` (``initialise`` costs ~40 ms, a copy ~2 ms).

    Copies share the template's identity, which no in-process test can tell apart: each has its own store.
    """
    if not Home.resolve(template).exists():
        initialise(Home.resolve(template))
        quiet_discovery(Home.resolve(template))
    shutil.copytree(template, destination)
    return Home.resolve(destination)


@dataclass
class InProcessDaemon:
    """One in-process daemon: its home, its ``Services`` and app, and a client that answers ``httpx.Response``.

    Answers are ``httpx.Response`` objects so the helpers written for real daemons (``e2e_support.assert_error``)
    check both alike.
    """

    home: Home
    services: Services
    app: QuartTrio
    root: Supervisor

    @property
    def admin_token(self) -> str:
        token = self.home.read_secret(self.home.admin_token_path)
        assert token is not None, "the home has no admin token (spl init writes one)"
        return token

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request through the app, as httpx would send it to a real daemon.

        ``json`` (None: no JSON body, as in httpx; send a literal ``null`` with ``content``) also sets
        ``content-type: application/json``; ``content`` is sent as given, with only the headers passed.
        """
        sent = dict(headers or {})
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("content-type", "application/json")
        elif content is not None:
            body = content.encode() if isinstance(content, str) else content
        client = self.app.test_client()
        query = dict(params) if params is not None else None
        # No ``json=`` here: Quart sends any value given there (None included) as a JSON body.
        answer = await client.open(  # type: ignore[call-arg]
            path, method=method, headers=sent, data=body, query_string=query
        )
        data = await answer.get_data()
        assert isinstance(data, bytes)
        return httpx.Response(
            answer.status_code,
            headers=list(answer.headers.items()),
            content=data,
            request=httpx.Request(method, ENDPOINT + path),
        )

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def mint_token(self, scopes: list[str], label: str) -> str:
        """A token minted through ``POST /v1/tokens`` with the admin credential (as ``spl token mint`` does)."""
        response = await self.post(
            "/v1/tokens", json={"scopes": scopes, "label": label}, headers={"x-api-key": self.admin_token}
        )
        assert response.status_code == 201, response.text
        token = response.json()["token"]
        assert isinstance(token, str) and token.startswith("spl_")
        return token

    async def revoke_token(self, label: str) -> None:
        """Revoke the (only) token with this label through ``DELETE /v1/tokens/<id>``."""
        admin = {"x-api-key": self.admin_token}
        listing = await self.get("/v1/tokens", headers=admin)
        token_id = next(t["token_id"] for t in listing.json()["data"] if t["label"] == label)
        revoked = await self.delete(f"/v1/tokens/{token_id}", headers={**admin, "content-type": "application/json"})
        assert revoked.status_code == 200, revoked.text


@asynccontextmanager
async def run_in_process(home: Home, *, insecure: bool = True, **config_fields: Any) -> AsyncIterator[InProcessDaemon]:
    """Run ``home``'s daemon in the caller's trio run until the block ends, then stop it gracefully.

    ``insecure`` is ``--insecure-localhost`` (auth off); ``config_fields`` are set on the home's ``Config`` (and
    saved) first, e.g. ``cors_origins=[...]`` or ``max_body_bytes=...``.
    """
    config = home.load_config()
    if config_fields:
        for name, value in config_fields.items():
            setattr(config, name, value)
        home.save_config(config)
    identity = home.load_identity()
    tokens = await trio.to_thread.run_sync(_load_token_book, home.db_path)
    pool = ReadPool(home.db_path, size=2)
    try:
        writer = StoreWriter(home.db_path, subscribers=[], own_did=identity.did, max_bytes=config.store_max_bytes)
        hub, reconciler = Hub(), Reconciler()
        root = Supervisor(
            "root",
            [
                ChildSpec("sse-hub", hub.run, inbox_size=8192),
                ChildSpec("store-writer", writer.run, inbox_size=4096),
                ChildSpec("reconciler", reconciler.run, inbox_size=64, essential=False),
            ],
        )
        # As in the assembly: the writer hands every commit to the hub's inbox, which exists only once the
        # supervisor has registered that child.
        writer._subscribers = [root.inbox("sse-hub")]
        writer_client = WriterClient(root.inbox("store-writer"))
        reconciler.bind(writer_client)
        federation = build_federation(
            home,
            identity,
            writer_client,
            reconciler,
            ReconcilerClient(root.inbox("reconciler"), reconciler),
            pool,
            bind_host="127.0.0.1",
            peer_transport=httpx.MockTransport(_no_network),
            config=config,
            tokens=tokens,
            endpoint=lambda: ENDPOINT,
        )
        services = Services(
            home_root=home.root,
            store_path=home.db_path,
            spool_dir=home.root / "run",
            config=config,
            identity=identity,
            pool=pool,
            writer=writer_client,
            hub=HubClient(root.inbox("sse-hub"), config.sse_buffer),
            tokens=tokens,
            auth_required=config.auth_required and not insecure,
            snapshot=lambda: msgspec.to_builtins(root.snapshot()),
            head_sequence=lambda: writer.head_sequence,
            federation=federation,
            endpoint=ENDPOINT,
            manifest=federation_manifest(identity, endpoint=ENDPOINT),
        )
        services.problems = lambda: describe_problems(root, stopping=services.stopping.is_set(), more=[writer.problem])
        async with trio.open_nursery() as nursery:
            await nursery.start(root.run)
            await root.add_child(
                ChildSpec("federation", federation.run, inbox_size=1, supervisor=federation.supervisor, essential=False)
            )
            try:
                yield InProcessDaemon(home, services, create_app(services), root)
            finally:
                services.stopping.set()
                await services.hub.close_all()
                root.shutdown()  # the graceful stop: children in reverse order, the writer answers what it holds
    finally:
        pool.close()


def _no_network(request: httpx.Request) -> httpx.Response:
    """The federation's peer transport: an in-process daemon has no network (and skips building TLS contexts,
    ~40 ms each). A test that pairs needs real daemons."""
    raise httpx.ConnectError(f"in-process daemons reach no peer (asked for {request.url})", request=request)


def _load_token_book(db_path: Path) -> TokenBook:
    connection = connect_writer(db_path)
    try:
        return TokenBook(load_tokens(connection))
    finally:
        connection.close()
