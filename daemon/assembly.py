"""``spl serve``: the daemon as a tree of supervised actors.

Start-up, in this order, each step refusing with one line (``ServeError`` / ``HomeBusy``) rather than a traceback:

1. umask 0077 and the home's run lock (``run/spl.lock``, see ``daemon/home.py``): one daemon per home, held
   until the process exits. Nothing is opened or written before it: a second ``spl serve`` touches nothing of the
   first one's. Then ``run/spl.pid``, and the home's modes are tightened (0700 / 0600).
2. The store: a missing or empty ``hub.db`` in a home that has an identity is a lost store, not a new one, so
   the daemon refuses rather than start empty; ``check_store`` refuses a damaged one.
3. The HTTP socket is bound (``HttpServer.bind``) before anything else starts: a port that is taken, out of
   range or not allowed, or a ``--host`` that is not an address of this machine, is one ``ServeError`` line.
4. The tree, then the HTTP server serving that socket. Only once it serves are ``run/spl.url`` written and
   READY=1 sent, so ``spl serve --daemon`` and systemd never report a daemon that cannot serve.

systemd hears ``STATUS=`` lines along the way (starting, "serving on <url>", each shutdown phase).

::

    root (one_for_one)                                        essential?
    ├── sse-hub        fan-out of committed records           yes  (see below)
    ├── store-writer   the only write connection; acks after COMMIT   yes
    ├── reconciler     verifies pulled pages for the writer   no   only federation uses it
    ├── federation     the pair supervisor (one child per pair)   no
    ├── http-server    Hypercorn + Quart                      yes
    └── watchdog       systemd WATCHDOG=1 pings (only under systemd)  no: systemd acts on missing pings

Children start in that order. The root gives up, and the process exits 1 with one line,
only when an *essential* child goes over the restart intensity. A non-essential one is left down instead, and
``/health`` reports it (``Services.problems``) while everything else keeps serving. sse-hub counts as essential
because the writer hands every commit to its bounded inbox and waits while it is full: with the hub down for good,
writes would stall. Thread folds are no task of their own: the writer keeps each thread's fold current inside the
commit (``spl.store.threads``), so reading one is a query on the read pool like any other.

The first SIGINT/SIGTERM is a graceful stop in named phases (``SHUTDOWN_PLAN``), each logged when it starts,
cut at its budget and reported when it overran; the budgets add up to 9 s, under the 10 s promised to operators
and well under the unit's ``TimeoutStopSec``:

==================  ======  ==========================================================================
phase               budget  what
==================  ======  ==========================================================================
stop accepting      0.5 s   /health says "stopping", STOPPING=1, listeners closed, watchdog pings end
end streams         2 s     every SSE stream gets ``server_shutdown``; in-flight exchanges finish (1 s)
stop pairs          2.5 s   federation (every pair) and the reconciler
flush writer        3 s     the writer commits and answers what it holds, then the hub
release home        1 s     read pool closed, run files removed, the home's lock released
==================  ======  ==========================================================================

A second signal exits at once. SIGHUP reopens the log file (logrotate's ``postrotate kill -HUP``).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from spl.actors.discovery import Discovery
from spl.actors.hub import Hub, HubClient
from spl.actors.joiner import Joiner
from spl.actors.local import LocalRecords
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import StoreWriter, WriterClient
from spl.core.config import advertised_endpoint
from spl.core.errors import InvalidRequest
from spl.core.genesis import INSTANCE_REGISTRY
from spl.core.identity import Identity
from spl.core.manifest import federation_manifest
from spl.daemon import logs, systemd
from spl.daemon.bootstrap import (
    plan_rotation,
    rotation_envelope_body,
    write_missing_genesis,
    write_missing_rotations,
)
from spl.daemon.home import DaemonLock, Home
from spl.daemon.wiring import build_federation
from spl.runtime.child import RESTARTING
from spl.runtime.shutdown import Phase, ShutdownPlan, ShutdownTimeline
from spl.runtime.supervisor import ChildContext, ChildSpec, Supervisor, SupervisorGaveUp
from spl.store.database import ReadPool, StoreDamaged, check_store, connect_writer
from spl.store.tokens import load_tokens
from spl.transport.app import create_app
from spl.transport.auth import TokenBook
from spl.transport.http_server import HttpServer
from spl.transport.metrics_server import MetricsListener
from spl.transport.routes_actors import reload_actor_registry
from spl.transport.services import Services

__all__ = ["SHUTDOWN_PLAN", "Daemon", "ServeError", "ServeOptions", "describe_bind_failure", "describe_problems"]

log = logging.getLogger("spl.daemon")

PRIVATE_UMASK = 0o077
STOP_LIMIT = 10.0  # seconds from SIGTERM to exit that operators are promised (docs/operations.md)

# The graceful stop, phase by phase (see the module docstring). Every child of the root is stopped by exactly
# one phase, and its ChildSpec's shutdown budget is the one given here; 1 s of STOP_LIMIT is left for the
# interpreter's own exit.
SHUTDOWN_PLAN = ShutdownPlan(
    (
        Phase("stop accepting", 0.5, (("watchdog", 0.1), ("discovery", 0.2), ("metrics-http", 0.2))),
        Phase("end streams", 2.0, (("http-server", 1.5),)),
        Phase("stop pairs", 2.75, (("federation", 2.0), ("joiner", 0.25), ("reconciler", 0.5))),
        Phase("flush writer", 2.75, (("store-writer", 2.0), ("sse-hub", 0.5))),
        Phase("release home", 1.0),
    ),
    limit=STOP_LIMIT - 1.0,
)


class ServeError(Exception):
    """The daemon cannot start, or cannot go on; ``str()`` is one line naming the cause and the fix.

    ``Daemon.run`` raises it instead of logging it: ``spl serve`` prints it as its one ``error:`` line (to the
    terminal, the journal, or ``logs/spl.log`` under ``--daemon``).
    """


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 9100
    insecure_localhost: bool = False
    write_pid_file: bool = True
    heartbeat_seconds: float | None = None
    handle_signals: bool = True


def describe_bind_failure(host: str, port: int, error: OSError) -> str:
    """The one line a failed bind is refused with, naming the fix for the cause at hand."""
    where = f"cannot listen on {host}:{port}"
    if isinstance(error, socket.gaierror):
        return (
            f"{where}: {host!r} is not an IP address or a known host name ({error.strerror}); "
            "give --host an address of this machine (127.0.0.1, 0.0.0.0 or ::)"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return (
            f"{where}: {host} is not an address of this machine; "
            "give --host one of its addresses, or 0.0.0.0 (all IPv4) or :: (all IPv6)"
        )
    if error.errno == errno.EACCES:
        return f"{where}: ports below 1024 need privileges; choose a port from 1024 to 65535 with --port"
    reason = f"OSError: {error}"
    if error.errno == errno.EADDRINUSE:
        return f"{where} ({reason}); choose another port with --port, or stop what uses it"
    return f"{where} ({reason}); check --host and --port"


def describe_problems(root: Supervisor, *, stopping: bool, more: Sequence[str | None] = ()) -> list[str]:
    """What is degraded, one line each, for ``/health`` (503 while the list is not empty).

    ``stopping`` during a graceful stop; a child of the root waiting to be restarted; a non-essential child the
    root left down, e.g. ``federation: stopped after 5 restarts in 30 s (last error: …)``; then ``more``, what
    actors report about themselves (the writer's "store full"), None meaning nothing to report.
    """
    problems = ["stopping"] if stopping else []
    for child in root.snapshot().children:
        if child.state == RESTARTING:
            problems.append(f"{child.id}: restarting (last error: {child.last_error or 'none'})")
    for down in root.left_down():
        problems.append(
            f"{down.child_id}: stopped after {down.restarts} restarts in {down.period:g} s "
            f"(last error: {down.last_error})"
        )
    problems.extend(problem for problem in more if problem)
    return problems


class Daemon:
    def __init__(self, home: Home, options: ServeOptions) -> None:
        self.home = home
        self.options = options
        self.config = home.load_config()
        if options.heartbeat_seconds is not None:
            self.config.heartbeat_seconds = options.heartbeat_seconds
        # One object for the daemon's whole life: an import that carries an identity swaps the key inside it
        # (``InstanceIdentity.adopt``), and every actor and route holding it signs as the new DID at once.
        # Its identifier is config ``instance.did`` (the inception key); ``spl identity rotate`` swaps the signing key
        # inside it and extends its chain (keys/rotations.json), and a home whose key is not the chain's current one
        # still serves, with the problem logged at start (peers will refuse its manifest).
        self.identity, self._identity_problem = home.load_instance_identity(self.config.did)
        self._incoming_key: str | None = None  # a rotation's new key, own to the writer just before it signs
        self._rotation_lock = trio.Lock()
        self.urls: list[str] = []
        self.local_url = ""  # the URL this process serves on, for this home's CLI (run/spl.url)
        self.supervisor: Supervisor | None = None
        self.services: Services | None = None
        self._stop_requested = trio.Event()
        self._lock = DaemonLock(home)
        self._failure: ServeError | None = None
        self._pool: ReadPool | None = None
        self._timeline: ShutdownTimeline | None = None  # set once a graceful stop begins

    @property
    def auth_required(self) -> bool:
        return self.config.auth_required and not self.options.insecure_localhost

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until asked to stop.

        Raises:
            HomeBusy: Another daemon holds this home.
            ServeError: The store is missing or damaged, the server cannot listen, or an essential child went
                over the restart intensity.
        """
        previous_umask = os.umask(PRIVATE_UMASK)  # everything the daemon creates is private from the start
        try:
            self._lock.acquire()
            try:
                systemd.notify("STATUS=starting")
                await self._serve(task_status)
            finally:
                if self._timeline is not None:
                    with self._timeline.phase("release home"):
                        self._release_home()
                    log.info("stopped")
                else:
                    self._release_home()
        finally:
            os.umask(previous_umask)

    def _release_home(self) -> None:
        """The last phase of a stop: nothing of this daemon stays open or claimed in the home."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._remove_run_files()
        self._lock.release()

    async def _serve(self, task_status: trio.TaskStatus[list[str]]) -> None:
        self._claim_run_files()
        for entry in self.home.tighten():
            log.warning("%s was %04o: set to %04o (the home is private)", entry.path, entry.mode, entry.wanted)
        if self.config.obsolete_keys:
            log.warning(
                "config.toml: %s ignored (obsolete: loopback callers are no longer trusted, spec §15.19); "
                "remove it and give local callers a token",
                ", ".join(self.config.obsolete_keys),
            )
        if self._identity_problem is not None:
            log.error("identity: %s", self._identity_problem)
        tokens = await trio.to_thread.run_sync(self._open_store)
        self._pool = ReadPool(self.home.db_path, size=4)
        await self._run_tree(self._pool, tokens, task_status)
        if self._failure is not None:
            raise self._failure

    def _open_store(self) -> TokenBook:
        """Check ``hub.db`` before anything uses it, then read the token book.

        Raises:
            ServeError: The store is missing, empty or damaged.
        """
        db = self.home.db_path
        size = db.stat().st_size if db.exists() else None
        if not size:
            state = "missing" if size is None else "empty"
            raise ServeError(
                f"{db} is {state} while the home has an identity: restore it from a backup "
                "or run `spl init --force` to start an empty store"
            )
        try:
            check_store(db)
        except StoreDamaged as exc:
            raise ServeError(str(exc)) from None
        connection = connect_writer(db, upgrade_progress=_upgrade_reporter(), own_did=self.identity.did)
        try:
            write_missing_genesis(connection, self.identity)  # a home from an older spl, or a new identity
            write_missing_rotations(connection, self.identity)  # a rotation whose record a crash cut
            return TokenBook(load_tokens(connection))
        finally:
            connection.close()

    async def _run_tree(self, pool: ReadPool, tokens: TokenBook, task_status: trio.TaskStatus[list[str]]) -> None:
        writer = StoreWriter(
            self.home.db_path,
            subscribers=[],
            own_did=self.identity.did,
            own_keys=self._own_keys,
            max_bytes=self.config.store_max_bytes,
        )

        async def run_joiner(ctx: ChildContext) -> None:
            await joiner.run(ctx)  # built below, once the writer's client exists

        hub = Hub()
        reconciler = Reconciler()
        root = Supervisor(
            "root",
            [
                # Start order = dependency order; stop runs in reverse, so the writer stops
                # right after the HTTP server and can still publish to the hub.
                ChildSpec("sse-hub", hub.run, inbox_size=8192, shutdown_budget=_budget("sse-hub")),
                ChildSpec("store-writer", writer.run, inbox_size=4096, shutdown_budget=_budget("store-writer")),
                ChildSpec(
                    "reconciler", reconciler.run, inbox_size=64, shutdown_budget=_budget("reconciler"), essential=False
                ),
                # Child closes become their parents' synthesising records (seed 003); nudged by the writer after
                # commits that may close or fork a thread. After the reconciler: it stops before the writer.
                ChildSpec("joiner", run_joiner, inbox_size=1, shutdown_budget=_budget("joiner"), essential=False),
            ],
        )
        writer._subscribers = [root.inbox("sse-hub")]
        writer_client = WriterClient(root.inbox("store-writer"))
        reconciler.bind(writer_client)
        reconciler_client = ReconcilerClient(root.inbox("reconciler"), reconciler)
        local = LocalRecords(self.identity, writer_client)  # the one way a record of this instance is accepted
        # Services.read, late-bound: the joiner runs only once the tree does, after `services` below exists.
        joiner = Joiner(lambda query, *args: services.read(query, *args), local, writer_client)
        writer.nudges = [root.inbox("joiner")]
        host = "127.0.0.1" if self.options.insecure_localhost else self.options.host
        federation = build_federation(
            self.home,
            self.identity,
            writer_client,
            reconciler,
            reconciler_client,
            pool,
            bind_host=host,
            local=local,
            config=self.config,
            tokens=tokens,
            endpoint=lambda: services.endpoint,
        )
        services = Services(
            home_root=self.home.root,
            store_path=self.home.db_path,
            spool_dir=self.home.root / "run",
            config=self.config,
            identity=self.identity,
            pool=pool,
            writer=writer_client,
            hub=HubClient(root.inbox("sse-hub"), self.config.sse_buffer),
            tokens=tokens,
            auth_required=self.auth_required,
            snapshot=lambda: msgspec.to_builtins(root.snapshot()),
            head_sequence=lambda: writer.head_sequence,
            fleet=lambda: writer.fleet,
            records_committed=lambda: writer.records_committed,
            joiner=lambda: {
                "synthesised": joiner.synthesised,
                "closed": joiner.closed,
                "failing": joiner.last_error is not None,
            },
            federation=federation,
            bind_host=host,
            local_records=local,
            reconciler=reconciler_client,
        )
        services.problems = lambda: describe_problems(root, stopping=services.stopping.is_set(), more=[writer.problem])

        async def adopt_import(identity: Identity | None) -> tuple[str, str]:
            return await self._adopt_import(services, writer_client, federation, identity)

        services.adopt_import = adopt_import

        async def rotate_identity() -> dict[str, Any]:
            return await self._rotate_identity(services, writer_client, local)

        services.rotate_identity = rotate_identity
        self.supervisor, self.services = root, services

        def on_bound(urls: list[str]) -> None:
            self.urls = urls
            # Peers are told the public URL; this home's CLI (run/spl.url) gets the one this process serves on.
            self.local_url = advertised_endpoint(None, urls[0]) if urls else ""
            services.endpoint = advertised_endpoint(self.config.public_url, urls[0]) if urls else services.endpoint
            services.manifest = federation_manifest(
                self.identity,
                endpoint=services.endpoint,
                pair_approval=self.config.federation.pair_approval,
                namespaces=self.config.sync.discovery.advertise_namespaces,
            )
            federation.endpoint_known()  # pairs whose peer knows another URL of ours are told this one

        app = create_app(services)
        http = HttpServer(app, host, self.options.port, on_bound)
        try:
            http.bind()  # before any child starts: a refused bind is one line, not a failing child
        except OSError as exc:
            raise ServeError(describe_bind_failure(host, self.options.port, exc)) from None
        metrics_http: MetricsListener | None = None
        if self.config.metrics.port is not None:  # [metrics] port: /metrics without a token on its own listener
            metrics_http = MetricsListener(services, app, self.config.metrics.host, self.config.metrics.port)
            try:
                metrics_http.bind()
            except OSError as exc:
                raise ServeError(
                    "[metrics] " + describe_bind_failure(self.config.metrics.host, self.config.metrics.port, exc)
                ) from None
        discovery = Discovery(services)
        services.discovery = discovery
        async with trio.open_nursery() as nursery:

            async def run_root(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                status = _StartedOnce(task_status)
                try:
                    await root.run(task_status=status)
                except SupervisorGaveUp as exc:
                    self._failure = ServeError(f"stopped: {exc}")
                    status.started()  # a root that gave up while starting: let nursery.start return
                finally:
                    nursery.cancel_scope.cancel()  # the tree is down: stop the signal listener too

            async def add(spec: ChildSpec) -> None:
                try:
                    await root.add_child(spec)
                except RuntimeError:
                    # The root stopped before it ran the command: it gave up, and run_root is ending the
                    # nursery (which cancels this wait) with the reason in self._failure.
                    await trio.sleep_forever()

            await nursery.start(run_root)
            if self._failure is not None:
                return
            federation_spec = ChildSpec(
                "federation",
                federation.run,
                inbox_size=1,
                shutdown_budget=_budget("federation"),
                supervisor=federation.supervisor,
                essential=False,
            )
            await add(federation_spec)
            await add(ChildSpec("http-server", http.run, shutdown_budget=_budget("http-server")))
            if metrics_http is not None:
                await add(
                    ChildSpec(
                        "metrics-http", metrics_http.run, essential=False, shutdown_budget=_budget("metrics-http")
                    )
                )
            await add(ChildSpec("discovery", discovery.run, essential=False, shutdown_budget=_budget("discovery")))
            if not self.urls:
                self._failure = self._cannot_listen(root, host)
                root.shutdown()  # a graceful stop of what did start; run_root then ends the nursery
                return
            interval = systemd.watchdog_interval()
            if interval is not None:
                await add(
                    ChildSpec("watchdog", _pinger(interval), essential=False, shutdown_budget=_budget("watchdog"))
                )
            self._write_url_file()
            systemd.notify(f"READY=1\nSTATUS=serving on {services.endpoint}")
            log.info("serving %s as %s (auth %s)", self.urls, self.identity.did, "on" if self.auth_required else "off")
            nursery.start_soon(self._stop_when_asked, root, services, http, nursery)
            if self.options.handle_signals:
                nursery.start_soon(self._signals)
            task_status.started(self.urls)

    def _cannot_listen(self, root: Supervisor, host: str) -> ServeError:
        """The HTTP server failed to start on the socket it had bound (its app did not start): one line."""
        error = next((c.last_error for c in root.snapshot().children if c.id == "http-server"), None)
        return ServeError(
            f"cannot listen on {host}:{self.options.port} ({error or 'unknown error'}); "
            "choose another port with --port, or stop what uses it"
        )

    async def _adopt_import(
        self, services: Services, writer: WriterClient, federation: Any, identity: Identity | None
    ) -> tuple[str, str]:
        """After an import committed: sign as the bundle's identity from now on (no restart), and rebuild
        everything folded from the one before — the writer's registries, the token book, the manifest, the
        federation and sync pairs and consent (their peers are told our new endpoint by the pairs actor).

        The key file is written before ``config.toml`` (the key is the truth; ``spl doctor`` flags a config that
        names another DID), each atomically; if the daemon dies between the import's COMMIT and here, running
        the import again de-duplicates every record and ends here again.
        """
        if identity is None:
            status = (
                "kept",
                f"the bundle carries no private key (exported with --no-identity): this steward keeps signing as "
                f"{self.identity.did}",
            )
        else:
            if identity.did != self.identity.did:
                await trio.to_thread.run_sync(self._save_identity, identity)
                self.identity.adopt(identity)
                log.warning("import: identity adopted, now signing as %s", identity.did)
            status = ("adopted", "private key matches incoming bundle")
        await writer.adopt_did(self.identity.did)
        await reload_actor_registry(services)
        services.tokens.reload(await services.read(load_tokens))
        services.manifest = federation_manifest(
            self.identity,
            endpoint=services.endpoint,
            pair_approval=self.config.federation.pair_approval,
            namespaces=self.config.sync.discovery.advertise_namespaces,
        )
        await federation.reload_after_import()
        return status

    def _own_keys(self) -> frozenset[str]:
        """What the store writer counts as this instance's signature: its chain, and a rotation's incoming key."""
        keys = self.identity.own_keys
        return keys | {self._incoming_key} if self._incoming_key else keys

    async def _rotate_identity(self, services: Services, writer: WriterClient, local: LocalRecords) -> dict[str, Any]:
        """``spl identity rotate`` on the running daemon: a new signing key, the same identifier, every pair kept.

        In this order, so a failure at any step leaves a daemon that signs with a key its peers accept:

        1. the statement naming the new key is signed by the current one (``plan_rotation``);
        2. the writer counts the new key as ours before anything is signed with it (the kill switch, the
           namespace registry and joins keep folding);
        3. keys/ is written (``Home.save_rotation``: a crash there is finished or undone at the next start);
        4. every component signs with the new key from the next record on (``InstanceIdentity.rotate``), and the
           manifest is re-signed, listing both keys and the chain, which peers verify from the identifier they
           pinned: their pairs need no change;
        5. the statement is committed as a record on ``th_instance_registry``, signed by the retired key (held
           in memory until then), so exports carry it. keys/ before the record: a failure in between loses no
           key and writes no second statement for one key (a fork), and the next start records it.
        """
        async with self._rotation_lock, services.import_lock:
            if self._identity_problem is not None:
                raise InvalidRequest(f"cannot rotate: {self._identity_problem}", code="ROTATION_REFUSED")
            plan = plan_rotation(self.identity)
            self._incoming_key = plan.new.did
            try:
                await writer.adopt_did(self.identity.did)
                statements = [*self.identity.statements, plan.statement]
                await trio.to_thread.run_sync(self.home.save_rotation, plan.new, statements)
                self.identity.rotate(plan.new, plan.statement)
            finally:
                self._incoming_key = None
            services.manifest = federation_manifest(
                self.identity,
                endpoint=services.endpoint,
                pair_approval=self.config.federation.pair_approval,
                namespaces=self.config.sync.discovery.advertise_namespaces,
            )
            if services.actor_registry is not None:  # registrations the new key signs apply too
                services.actor_registry.own_keys = self.identity.own_keys
            log.warning(
                "identity rotated: %s now signs with %s (was %s)", self.identity.did, plan.new.did, plan.retiring.did
            )
            # Last: the statement's record (exports carry it). Should it fail, the rotation stands (keys/ holds it)
            # and the next start writes the record (bootstrap.write_missing_rotations).
            await local.record_system_signed_by(
                plan.retiring, INSTANCE_REGISTRY, rotation_envelope_body(plan.statement)
            )
            return plan.summary(self.identity)

    def _save_identity(self, identity: Identity) -> None:
        self.home.save_identity(identity)
        statements = getattr(identity, "statements", ())
        if statements:  # a rotated instance's bundle: its chain too, so its identifier stays what peers pinned
            self.home.save_rotation(Identity(identity.seed), statements)
        config = self.home.load_config()  # the file as written: this run's overrides stay out of it
        config.did = identity.did
        self.home.save_config(config)
        self.config.did = identity.did

    async def _stop_when_asked(
        self, root: Supervisor, services: Services, http: HttpServer, nursery: trio.Nursery
    ) -> None:
        """The graceful stop, phase by phase (``SHUTDOWN_PLAN``); "release home" follows when ``run`` unwinds."""
        await self._stop_requested.wait()
        log.info("stopping (at most %g s)", SHUTDOWN_PLAN.total)
        if self.options.handle_signals:  # the process is ours to end
            nursery.start_soon(self._exit_when_the_stop_overruns)
        timeline = self._timeline = ShutdownTimeline(
            SHUTDOWN_PLAN, on_phase=lambda name: systemd.notify(f"STATUS=stopping: {name}")
        )
        running = {child.id for child in root.snapshot().children}

        async def stop_children_of(phase: str) -> None:
            for child_id in SHUTDOWN_PLAN.phase(phase).child_ids:
                if child_id in running:
                    try:
                        await root.stop_child(child_id)
                    except RuntimeError:
                        return  # the root itself stopped (it gave up): ``run_root`` ends the daemon

        with timeline.phase("stop accepting"):
            systemd.notify("STOPPING=1")
            services.stopping.set()  # /health answers 503 "stopping" to whoever is still connected
            http.stop_accepting()
            await stop_children_of("stop accepting")
        with timeline.phase("end streams"):
            await services.hub.close_all()
            await stop_children_of("end streams")
        with timeline.phase("stop pairs"):
            await stop_children_of("stop pairs")
        with timeline.phase("flush writer"):
            await stop_children_of("flush writer")
        root.shutdown()  # nothing is left running; the root returns and ``run`` releases the home

    async def _exit_when_the_stop_overruns(self) -> None:
        """The backstop of the 10 s promise: a phase cut at its budget cannot cut a child that ignores
        cancellation (shielded or blocking work), so once every phase had its whole budget the process exits.

        Cancelled, with the nursery, as soon as the tree is down.
        """
        await trio.sleep(SHUTDOWN_PLAN.total - SHUTDOWN_PLAN.phases[-1].budget)
        log.error(
            "the graceful stop overran its %g s (phases done: %s): exiting at once",
            SHUTDOWN_PLAN.total,
            ", ".join(self._timeline.names()) if self._timeline else "none",
        )
        logging.shutdown()
        os._exit(1)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if signum == signal.SIGHUP:
                    reopened = logs.reopen_log_files()
                    log.info("received SIGHUP: %s", f"reopened {', '.join(reopened)}" if reopened else "no log file")
                    continue
                if self._stop_requested.is_set():
                    log.warning("second signal (%s): exiting at once", name)
                    os._exit(1)
                log.info("received %s: graceful stop (send it again to exit at once)", name)
                self.request_stop()
                # keep listening: a second signal must still be seen

    # -- run files: only ever touched while this process holds the home's lock ----------------

    def _claim_run_files(self) -> None:
        """Remove a dead daemon's URL, then write our pid (``Home.running`` relies on this order)."""
        if not self.options.write_pid_file:
            return
        self.home.url_path.unlink(missing_ok=True)
        _write_run_file(self.home.pid_path, f"{os.getpid()}\n")

    def _write_url_file(self) -> None:
        if not self.options.write_pid_file:
            return
        _write_run_file(self.home.url_path, f"{self.local_url}\n")

    def _remove_run_files(self) -> None:
        if not self.options.write_pid_file or not self._lock.held:
            return  # without the lock the run files belong to another daemon
        self.home.pid_path.unlink(missing_ok=True)
        self.home.url_path.unlink(missing_ok=True)


UPGRADE_EXTEND_SECONDS = 60  # more start-up time asked of systemd at each report of a store upgrade
UPGRADE_REPORT_EVERY = 5.0  # seconds between two reports (log line + systemd STATUS)


def _upgrade_reporter() -> Callable[[int], None]:
    """Progress of a store upgrade: keeps systemd from timing the start out (``TimeoutStartSec``) and says why.

    Without it, a big store's one-time upgrade would be killed at the unit's start timeout,
    rolled back, and started again for ever.
    """
    last = -UPGRADE_REPORT_EVERY

    def report(folded: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < UPGRADE_REPORT_EVERY:
            return
        last = now
        log.info("upgrading the store (records folded so far: %d)", folded)
        systemd.notify(
            f"EXTEND_TIMEOUT_USEC={UPGRADE_EXTEND_SECONDS * 1_000_000}\n"
            f"STATUS=upgrading the store (records folded: {folded})"
        )

    return report


def _budget(child_id: str) -> float:
    return SHUTDOWN_PLAN.child_budget(child_id)


def _write_run_file(path: Path, text: str) -> None:
    """Write a run file whole (a reader never sees half a URL), mode 0600."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


class _StartedOnce:
    """A ``trio.TaskStatus`` that passes on only the first ``started()``, so a failure path may call it too."""

    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self._status = status
        self._done = False

    def started(self, value: None = None) -> None:
        if not self._done:
            self._done = True
            self._status.started()


def _pinger(interval: float) -> Any:
    async def run(ctx: ChildContext) -> None:
        ctx.started()
        await systemd.watchdog_pinger(interval, ctx.stop_requested)

    return run
