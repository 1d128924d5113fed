"""Start test daemons as forks of a process that has already imported the daemon (the "zygote").

Each ``spl serve`` child used to start an interpreter and import Quart, Hypercorn, trio, httpx and the whole
daemon again (about 0.5 s of CPU; a test run starts a few hundred). The zygote imports them once and forks a
child per daemon; the child takes the request's argv, environment and log file and runs the same entry point
as the ``spl`` console script. A daemon is still a process of its own (real signals, ``kill -9``, its own
``/proc/<pid>``), only its interpreter start is shared. The zygote is single-threaded, so forking is safe; it
reaps its children and reports their exit status when asked.

Protocol, one JSON object per line: ``{"op": "spawn", "args", "env", "log"}`` → ``{"pid"}``;
``{"op": "poll", "pid"}`` → ``{"code": int | null}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback


def _run_daemon(request: dict[str, object]) -> int:
    os.setpgid(0, 0)  # like a process of its own: a signal to the test's group does not reach it
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(str(request["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's own streams
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False, buffering=1)  # noqa: SIM115
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
    sys.argv = ["spl", *[str(a) for a in request["args"]]]  # type: ignore[union-attr]
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from spl.cli.main import run

    try:
        run()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def serve() -> None:
    import zeroconf  # noqa: F401  (the discovery child's; ~0.2 s, imported once rather than in each daemon that listens)

    import spl.cli.main  # noqa: F401
    import spl.cli.server  # noqa: F401
    import spl.daemon.assembly  # noqa: F401  (Quart, Hypercorn, trio, httpx: imported once for every daemon)

    finished: dict[int, int] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _run_daemon(request)
                finally:
                    os._exit(code)
            answer: dict[str, object] = {"pid": pid}
        else:
            pid = int(request["pid"])
            if pid not in finished:
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if done:
                    finished[pid] = os.waitstatus_to_exitcode(status)
            answer = {"code": finished.get(pid)}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
