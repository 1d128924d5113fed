"""Run ``spl`` invocations for the tests as forks of one process that has already imported the CLI.

Each test call used to start a fresh interpreter and import typer, rich, httpx and the command modules again
(0.3–0.6 s of CPU per call, hundreds of calls). This server imports them once; every request forks a child
that takes the request's argv, environment, stdin, stdout and stderr and runs the same entry point as the
``spl`` console script (``spl.cli.main.run``), then exits with its status. A child is a whole process, as
before: state never leaks from one call to the next, and exit codes, streams and signals are real. The server
is single-threaded, so forking it is safe.

Protocol, one JSON object per line: request ``{"args", "env", "stdin", "out", "err", "timeout"}`` (paths of
files), answer ``{"code": int}`` or ``{"timeout": true}`` after the child was killed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback


def _run_child(request: dict[str, object]) -> int:
    stdin = os.open(str(request["stdin"]), os.O_RDONLY)
    out = os.open(str(request["out"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(str(request["err"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for source, target in ((stdin, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
        os.close(source)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - the process's own streams
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
    sys.argv = ["spl", *[str(a) for a in request["args"]]]  # type: ignore[union-attr]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from spl.cli.main import run

    code = 0
    try:
        run()
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # what the interpreter would do with an uncaught exception
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve() -> None:
    # The client imports these lazily, so every forked child would import them again (~0.16 s a call,
    # 600+ calls in the suite); imported here once, each child still runs as its own process.
    import anyio  # noqa: F401
    import h11  # noqa: F401
    import httpcore  # noqa: F401
    import httpcore._sync.connection_pool  # noqa: F401
    import httpx  # noqa: F401
    import trio  # noqa: F401

    import spl.cli.client  # noqa: F401  (what the client commands need, imported once)
    import spl.cli.main

    # The CLI imports a command's module only when that command runs (cli/main.py LazyGroup); the fork server
    # imports them all once here, so each forked call starts with every command ready.
    spl.cli.main.whole_app()

    answers = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        answers.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_child(request)
            finally:
                os._exit(code)
        deadline = time.monotonic() + float(request["timeout"])
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                answers.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n")
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                answers.write(json.dumps({"timeout": True}) + "\n")
                break
            time.sleep(0.002)
        answers.flush()


if __name__ == "__main__":
    serve()
