"""systemd's notify protocol: READY=1, STOPPING=1 and watchdog pings via ``$NOTIFY_SOCKET``.

Does nothing when the daemon is not run by systemd (no ``$NOTIFY_SOCKET``).
"""

from __future__ import annotations

import os
import socket

import trio

__all__ = ["notify", "watchdog_interval", "watchdog_pinger"]


def notify(state: str) -> bool:
    """Send one notify datagram; returns False when not under systemd or on failure."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("ascii"))
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's ``WatchdogSec`` (``$WATCHDOG_USEC``), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 1_000_000 / 2, 0.5)
    except ValueError:
        return None


async def watchdog_pinger(interval: float, stop: trio.Event) -> None:
    """Ping the watchdog every ``interval`` seconds until ``stop`` is set.

    Runs as a supervised child of the daemon, so a wedged trio loop stops pinging and systemd restarts the
    service. It returns as soon as the graceful stop begins, instead of holding the shutdown for its budget.
    """
    while not stop.is_set():
        notify("WATCHDOG=1")
        with trio.move_on_after(interval):
            await stop.wait()
