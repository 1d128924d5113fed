"""A minimal HTTP/1.1 keep-alive client for the soak's emits.

The SDK (and httpx) cost about 0.9 ms of CPU per emit and this machine has 2 cores: at the rates
the soak drives, the client would compete with the daemons it measures. This client does one
thing: send a request already encoded as bytes on a kept-alive connection and read back the
status and a ``content-length`` body. No chunked bodies, no TLS, no redirects.
"""

from __future__ import annotations

import trio

__all__ = ["KeepAliveConnection", "ProtocolError"]


class ProtocolError(Exception):
    """The server's answer was not the HTTP/1.1 this client reads, or it closed the connection."""


class KeepAliveConnection:
    """One keep-alive HTTP/1.1 connection; one request in flight."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> KeepAliveConnection:
        return cls(await trio.open_tcp_stream(host, port))

    async def round_trip(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request; returns (status, body, server keeps the connection)."""
        await self.stream.send_all(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return int(parts[1]), body, headers.get("connection", "").lower() != "close"

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ProtocolError("connection closed by the server")
        self.buffer.extend(data)

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()
