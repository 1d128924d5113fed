"""``spl serve``: the daemon as a tree of supervised actors.

::

    root (one_for_one)
    ├── store-writer   the only write connection; group commit; acks after COMMIT
    ├── thread-folds   lifecycle + participants per thread (LRU over the store)
    ├── sse-hub        fan-out of committed records to live watchers
    ├── http-server    Hypercorn + Quart, stopped first on shutdown
    └── watchdog       systemd WATCHDOG=1 pings (only under systemd)

Children start in that order and stop in reverse. The first SIGINT/SIGTERM is a
graceful stop (watchers get ``server_shutdown``, the writer finishes its batch, the pid
file goes); a second one exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from spl.actors.federation import FederationManager
from spl.actors.folds import FoldClient, ThreadFolds
from spl.actors.hub import Hub, HubClient
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import StoreWriter, WriterClient
from spl.kernel.manifest import federation_manifest
from spl.kernel.store import ReadPool, connect_writer
from spl.runtime import systemd
from spl.runtime.home import Home
from spl.runtime.supervisor import ChildContext, ChildSpec, Supervisor
from spl.transport.app import create_app
from spl.transport.auth import TokenBook, load_tokens
from spl.transport.http_server import HttpServer
from spl.transport.services import Services

__all__ = ["Daemon", "ServeOptions"]

log = logging.getLogger("spl.daemon")


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

    @property
    def auth_required(self) -> bool:
        return self.config.auth_required and not self.options.insecure_localhost

    def request_stop(self) -> None:
        self._stop_requested.set()

    def _prepare_store(self) -> TokenBook:
        connection = connect_writer(self.home.db_path)  # creates the schema on a new home
        try:
            return TokenBook(load_tokens(connection))
        finally:
            connection.close()

    async def run(self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        tokens = await trio.to_thread.run_sync(self._prepare_store)
        pool = ReadPool(self.home.db_path, size=4)
        writer = StoreWriter(self.home.db_path, subscribers=[])
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
                ChildSpec("reconciler", reconciler.run, inbox_size=64, shutdown_budget=5.0),
            ],
        )
        writer._subscribers = [root.inbox("thread-folds"), root.inbox("sse-hub")]
        writer_client = WriterClient(root.inbox("store-writer"))
        reconciler.bind(writer_client)
        host = "127.0.0.1" if self.options.insecure_localhost else self.options.host
        federation = FederationManager(
            self.home,
            self.identity,
            writer_client,
            reconciler,
            ReconcilerClient(root.inbox("reconciler"), reconciler),
            pool,
            bind_host=host,
        )
        services = Services(
            home=self.home,
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
        self.supervisor, self.services = root, services

        def on_bound(urls: list[str]) -> None:
            self.urls = urls
            services.endpoint = public_endpoint(urls[0]) if urls else services.endpoint
            services.manifest = federation_manifest(self.identity, endpoint=services.endpoint)

        http = HttpServer(create_app(services), host, self.options.port, on_bound)
        try:
            async with trio.open_nursery() as nursery:

                async def run_root(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                    try:
                        await root.run(task_status=task_status)
                    finally:
                        nursery.cancel_scope.cancel()  # the tree is down: stop the signal listener too

                await nursery.start(run_root)
                await root.add_child(
                    ChildSpec(
                        "federation",
                        federation.run,
                        inbox_size=1,
                        shutdown_budget=5.0,
                        supervisor=federation.supervisor,
                    )
                )
                await root.add_child(ChildSpec("http-server", http.run, shutdown_budget=5.0))
                interval = systemd.watchdog_interval()
                if interval is not None:
                    await root.add_child(ChildSpec("watchdog", _pinger(interval)))
                self._write_run_files()
                systemd.notify("READY=1")
                log.info(
                    "serving %s as %s (auth %s)", self.urls, self.identity.did, "on" if self.auth_required else "off"
                )
                nursery.start_soon(self._stop_when_asked, root, services)
                if self.options.handle_signals:
                    nursery.start_soon(self._signals)
                task_status.started(self.urls)
        finally:
            self._remove_run_files()
            pool.close()

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

    def _write_run_files(self) -> None:
        if not self.options.write_pid_file:
            return
        self.home.pid_path.parent.mkdir(parents=True, exist_ok=True)
        self.home.pid_path.write_text(f"{os.getpid()}\n")
        self.home.url_path.write_text(f"{self.services.endpoint if self.services else ''}\n")

    def _remove_run_files(self) -> None:
        if not self.options.write_pid_file:
            return
        try:
            if self.home.pid_path.read_text().strip() == str(os.getpid()):
                self.home.pid_path.unlink(missing_ok=True)
                self.home.url_path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass


def _pinger(interval: float) -> Any:
    async def run(ctx: ChildContext) -> None:
        ctx.started()
        await systemd.watchdog_pinger(interval)

    return run
