"""The test side of ``daemon_zygote.py``: a ``DaemonProcess.spawner`` and the process handle it returns."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["ZygoteProcess", "spawn_from_zygote"]


class _Zygote:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def ask(self, request: dict[str, object]) -> dict[str, object]:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("daemon_zygote.py"))],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                atexit.register(self._process.kill)
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(json.dumps(request) + "\n")
            self._process.stdin.flush()
            answer: dict[str, object] = json.loads(self._process.stdout.readline())
            return answer


_ZYGOTE = _Zygote()


class ZygoteProcess:
    """A daemon forked by the zygote: signals go straight to its pid, its exit status comes from the zygote."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            code = _ZYGOTE.ask({"op": "poll", "pid": self.pid})["code"]
            self.returncode = None if code is None else int(str(code))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"spl serve (pid {self.pid})", timeout or 0.0)
            time.sleep(0.005)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(9)


def spawn_from_zygote(arguments: list[str], env: dict[str, str], log_path: Path) -> ZygoteProcess:
    pid = _ZYGOTE.ask({"op": "spawn", "args": arguments, "env": env, "log": str(log_path)})["pid"]
    return ZygoteProcess(int(str(pid)))
