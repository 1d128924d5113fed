"""A byte-counting TCP relay in front of the source, in its own process (bandwidth per pair).

The pairs pull through it, so it counts exactly the bytes a pair puts on the wire in each
direction (requests to the source, change feeds back) and nothing else — not the emits, not
the samplers. It writes its two counters to a JSON file every quarter second. A separate
process, so relaying does not compete with the emitter for the soak's GIL; it costs one
loopback hop (tens of microseconds) per chunk.

The parent side is :class:`Relay`; the process is ``python -m spl.soak.relay HOST PORT STATS_FILE``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import trio

from spl.soak.config import SoakError

__all__ = ["Relay", "relay_main"]

STATS_PERIOD = 0.25  # seconds between two writes of the counters


class Relay:
    """The parent's handle on a running relay process: its URL, its counters, and how to stop it."""

    def __init__(self, process: subprocess.Popen[str], url: str, stats: Path) -> None:
        self.process = process
        self.url = url
        self.stats = stats

    @classmethod
    def start(cls, target_url: str, stats: Path) -> Relay:
        """Start a relay to ``target_url``; returns once it listens (it prints its port).

        Raises:
            SoakError: the relay process did not start.
        """
        parts = urlsplit(target_url)
        process = subprocess.Popen(
            [sys.executable, "-m", "spl.soak.relay", parts.hostname or "127.0.0.1", str(parts.port), str(stats)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            process.kill()
            process.wait(5)
            raise SoakError(f"the relay did not start (it said {line!r})")
        return cls(process, f"http://127.0.0.1:{line}", stats)

    def counters(self) -> tuple[int, int] | None:
        """(bytes towards the source, bytes from the source) so far; None before the first write."""
        try:
            data = json.loads(self.stats.read_text())
            return int(data["to_source"]), int(data["from_source"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def kill(self) -> None:
        """``kill -9`` at once, without waiting (safe inside a signal handler)."""
        if self.process.returncode is None:
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def _relay(host: str, port: int, stats: Path) -> None:
    counts = {"to_source": 0, "from_source": 0}

    async def pump(source: trio.SocketStream, sink: trio.SocketStream, key: str) -> None:
        try:
            while data := await source.receive_some(65536):
                counts[key] += len(data)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def handle(client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(host, port)
        except OSError:
            await client.aclose()
            return
        async with client, upstream, trio.open_nursery() as nursery:

            async def one_way(a: trio.SocketStream, b: trio.SocketStream, key: str) -> None:
                await pump(a, b, key)
                nursery.cancel_scope.cancel()  # one side closed: close both

            nursery.start_soon(one_way, client, upstream, "to_source")
            nursery.start_soon(one_way, upstream, client, "from_source")

    async def write_stats() -> None:
        temporary = stats.with_suffix(".tmp")
        while True:
            await trio.Path(temporary).write_text(json.dumps(counts))
            await trio.Path(temporary).replace(stats)
            await trio.sleep(STATS_PERIOD)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_stats)
        await trio.serve_listeners(handle, listeners)


def relay_main(argv: list[str]) -> None:
    """Entry point of the relay process: ``HOST PORT STATS_FILE``; SIGTERM ends it."""
    host, port, stats = argv[0], int(argv[1]), Path(argv[2])
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))  # nothing to flush: counters are on disk
    try:
        trio.run(_relay, host, port, stats)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m spl.soak.relay HOST PORT STATS_FILE")
    relay_main(sys.argv[1:])
