"""``spl serve``: the daemon as a tree of supervised actors.

Start-up, in this order, each step refusing with one line (``ServeError`` / ``HomeBusy``) rather than a traceback:

1. umask 0077 and the home's run lock (``run/spl.lock``, see ``runtime/home.py``): one daemon per home, held
   until the process exits. Nothing is opened or written before it: a second ``spl serve`` touches nothing of the
   first one's. Then ``run/spl.pid``, and the home's modes are tightened (0700 / 0600).
2. The store: a missing or empty ``hub.db`` in a home that has an identity is a lost store, not a new one, so
   the daemon refuses rather than start empty; ``check_store`` refuses a damaged one.
3. The tree, then the HTTP server. Only once it listens are ``run/spl.url`` written and READY=1 sent, so
   ``spl serve --daemon`` and systemd never report a daemon that cannot serve.

::

    root (one_for_one)                                        essential?
    ├── thread-folds   lifecycle + participants per thread    yes  (see below)
    ├── sse-hub        fan-out of committed records           yes  (see below)
    ├── store-writer   the only write connection; acks after COMMIT   yes
    ├── reconciler     verifies pulled pages for the writer   no   only federation uses it
    ├── federation     the pair supervisor (one child per pair)   no
    ├── http-server    Hypercorn + Quart                      yes
    └── watchdog       systemd WATCHDOG=1 pings (only under systemd)  no: systemd acts on missing pings

Children start in that order and stop in reverse. The root gives up, and the process exits 1 with one line,
only when an *essential* child goes over the restart intensity. A non-essential one is left down instead, and
``/health`` reports it (``Services.problems``) while everything else keeps serving. thread-folds and sse-hub
count as essential because the writer hands every commit to their bounded inboxes and waits while one is full:
with either down for good, writes would stall.

The first SIGINT/SIGTERM is a graceful stop (watchers get ``server_shutdown``, the writer finishes its batch, the
run files go, the lock is released by the exit); a second one exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from spl.actors.folds import FoldClient, ThreadFolds
from spl.actors.hub import Hub, HubClient
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import StoreWriter, WriterClient
from spl.core.manifest import federation_manifest
from spl.daemon import systemd
from spl.daemon.home import DaemonLock, Home
from spl.daemon.wiring import build_federation
from spl.runtime.child import RESTARTING
from spl.runtime.supervisor import ChildContext, ChildSpec, Supervisor, SupervisorGaveUp
from spl.store.database import ReadPool, StoreDamaged, check_store, connect_writer
from spl.transport.app import create_app
from spl.transport.auth import TokenBook, load_tokens
from spl.transport.http_server import HttpServer
from spl.transport.services import Services

__all__ = ["Daemon", "ServeError", "ServeOptions", "describe_problems"]

log = logging.getLogger("spl.daemon")

PRIVATE_UMASK = 0o077


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


def public_endpoint(url: str) -> str:
    """A URL peers can use: a wildcard bind is reported as loopback."""
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")


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
        self.identity = home.load_identity()
        self.urls: list[str] = []
        self.supervisor: Supervisor | None = None
        self.services: Services | None = None
        self._stop_requested = trio.Event()
        self._lock = DaemonLock(home)
        self._failure: ServeError | None = None

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
                await self._serve(task_status)
            finally:
                self._remove_run_files()
                self._lock.release()
        finally:
            os.umask(previous_umask)

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
        tokens = await trio.to_thread.run_sync(self._open_store)
        pool = ReadPool(self.home.db_path, size=4)
        try:
            await self._run_tree(pool, tokens, task_status)
        finally:
            pool.close()
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
        connection = connect_writer(db)
        try:
            return TokenBook(load_tokens(connection))
        finally:
            connection.close()

    async def _run_tree(self, pool: ReadPool, tokens: TokenBook, task_status: trio.TaskStatus[list[str]]) -> None:
        writer = StoreWriter(
            self.home.db_path, subscribers=[], own_did=self.identity.did, max_bytes=self.config.store_max_bytes
        )
        folds = ThreadFolds(pool)
        hub = Hub()
        reconciler = Reconciler()
        root = Supervisor(
            "root",
            [
                # Start order = dependency order; stop runs in reverse, so the writer stops
                # right after the HTTP server and can still publish to folds and the hub.
                ChildSpec("thread-folds", folds.run, inbox_size=4096, shutdown_budget=2.0),
                ChildSpec("sse-hub", hub.run, inbox_size=8192, shutdown_budget=2.0),
                ChildSpec("store-writer", writer.run, inbox_size=4096, shutdown_budget=10.0),
                ChildSpec("reconciler", reconciler.run, inbox_size=64, shutdown_budget=5.0, essential=False),
            ],
        )
        writer._subscribers = [root.inbox("thread-folds"), root.inbox("sse-hub")]
        writer_client = WriterClient(root.inbox("store-writer"))
        reconciler.bind(writer_client)
        host = "127.0.0.1" if self.options.insecure_localhost else self.options.host
        federation = build_federation(
            self.home,
            self.identity,
            writer_client,
            reconciler,
            ReconcilerClient(root.inbox("reconciler"), reconciler),
            pool,
            bind_host=host,
        )
        services = Services(
            home_root=self.home.root,
            config=self.config,
            identity=self.identity,
            pool=pool,
            writer=writer_client,
            hub=HubClient(root.inbox("sse-hub"), self.config.sse_buffer),
            folds=FoldClient(root.inbox("thread-folds")),
            tokens=tokens,
            auth_required=self.auth_required,
            snapshot=lambda: msgspec.to_builtins(root.snapshot()),
            head_sequence=lambda: writer.head_sequence,
            federation=federation,
            bind_host=host,
        )
        services.problems = lambda: describe_problems(root, stopping=services.stopping.is_set(), more=[writer.problem])
        self.supervisor, self.services = root, services

        def on_bound(urls: list[str]) -> None:
            self.urls = urls
            services.endpoint = public_endpoint(urls[0]) if urls else services.endpoint
            services.manifest = federation_manifest(self.identity, endpoint=services.endpoint)

        http = HttpServer(create_app(services), host, self.options.port, on_bound)
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
                shutdown_budget=5.0,
                supervisor=federation.supervisor,
                essential=False,
            )
            await add(federation_spec)
            await add(ChildSpec("http-server", http.run, shutdown_budget=5.0))
            if not self.urls:
                self._failure = self._cannot_listen(root, host)
                root.shutdown()  # a graceful stop of what did start; run_root then ends the nursery
                return
            interval = systemd.watchdog_interval()
            if interval is not None:
                await add(ChildSpec("watchdog", _pinger(interval), essential=False))
            self._write_url_file()
            systemd.notify("READY=1")
            log.info("serving %s as %s (auth %s)", self.urls, self.identity.did, "on" if self.auth_required else "off")
            nursery.start_soon(self._stop_when_asked, root, services)
            if self.options.handle_signals:
                nursery.start_soon(self._signals)
            task_status.started(self.urls)

    def _cannot_listen(self, root: Supervisor, host: str) -> ServeError:
        """The HTTP server's first start failed (port taken, not allowed, out of range): say so in one line."""
        error = next((c.last_error for c in root.snapshot().children if c.id == "http-server"), None)
        return ServeError(
            f"cannot listen on {host}:{self.options.port} ({error or 'unknown error'}); "
            "choose another port with --port, or stop what uses it"
        )

    async def _stop_when_asked(self, root: Supervisor, services: Services) -> None:
        await self._stop_requested.wait()
        log.info("stopping: closing streams, draining the writer")
        systemd.notify("STOPPING=1")
        services.stopping.set()
        await services.hub.close_all()
        root.shutdown()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self._stop_requested.is_set():
                    log.warning("second signal (%s): exiting at once", signal.Signals(signum).name)
                    os._exit(1)
                log.info("received %s: graceful stop (send it again to exit at once)", signal.Signals(signum).name)
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
        _write_run_file(self.home.url_path, f"{self.services.endpoint if self.services else ''}\n")

    def _remove_run_files(self) -> None:
        if not self.options.write_pid_file or not self._lock.held:
            return  # without the lock the run files belong to another daemon
        self.home.pid_path.unlink(missing_ok=True)
        self.home.url_path.unlink(missing_ok=True)


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
