"""What Linux's /proc says about a local process: resident memory, open descriptors, CPU time.

The one reader of these figures for the soak and the benchmarks (the soak's resource samples, the
capacity figures per pair, the federation benchmark's memory per pair, the emit benchmark's CPU per
record). Blocking file reads: call them from a worker thread inside trio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ResourceSample", "cpu_seconds", "open_fds", "resources", "rss_kib"]


@dataclass(frozen=True)
class ResourceSample:
    """One look at a local daemon: resident memory, open fds, and how many of them are sockets."""

    t: float
    role: str  # "source" or "receiver"
    rss_kib: int
    fds: int
    sockets: int


def rss_kib(pid: int) -> int:
    """Resident memory (``VmRSS``) of a process, KiB.

    Raises:
        OSError: the process is gone (or /proc is not there).
        ValueError: its status has no ``VmRSS`` line (a zombie).
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"process {pid} has no resident memory (a zombie?)")


def open_fds(pid: int) -> tuple[int, int]:
    """(open file descriptors, how many of them are sockets) of a process.

    Raises:
        OSError: the process is gone.
    """
    fds = sockets = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        fds += 1
        try:
            if entry.readlink().name.startswith("socket:"):
                sockets += 1
        except OSError:
            pass  # closed while we looked
    return fds, sockets


def resources(pid: int) -> tuple[int, int, int] | None:
    """(VmRSS KiB, open fds, socket fds) of a process; None when it is gone."""
    try:
        return (rss_kib(pid), *open_fds(pid))
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
