"""``spl thread watch``: a live tail of a thread against a real daemon, started from now and from a cursor."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cli_support import Cli, DaemonLike, FakeDaemon, base_env, ctrl_c_works, run_spl

THREAD = "th_cli_watch"
DEADLINE = 10.0


class Lines:
    """A pipe read line by line on a thread, so a test can wait for the next line with a deadline."""

    def __init__(self, pipe: IO[str]) -> None:
        self._pipe = pipe
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._reader.start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line)
        self._lines.put("")  # end of stream

    def next(self) -> str:
        try:
            return self._lines.get(timeout=DEADLINE)
        except queue.Empty:
            raise AssertionError(f"no line within {DEADLINE}s") from None

    def close(self) -> None:
        """After the process has exited: the reader has met the end of the pipe, which can be closed."""
        self._reader.join(timeout=DEADLINE)
        self._pipe.close()


@contextmanager
def watching(daemon: DaemonLike, *args: str) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    """``spl thread watch THREAD *args`` running; returns once it follows the thread (its stderr says so)."""
    env = dict(daemon.env(), SPL_SERVE_URL=daemon.url, COLUMNS="200")
    command = [sys.executable, "-m", "spl.cli", "thread", "watch", THREAD, *args]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works
    )
    assert process.stdout is not None and process.stderr is not None
    out, err = Lines(process.stdout), Lines(process.stderr)
    try:
        assert err.next() == f"watch: following {THREAD} (Ctrl-C to stop)\n"
        yield process, out, err
    finally:
        process.kill()
        process.wait()
        out.close()
        err.close()


def test_watch_tails_live_then_resumes_after_a_cursor(cli: Cli, daemon: DaemonLike) -> None:
    with watching(daemon, "-o", "json") as (process, out, err):
        for n in range(3):
            cli("know", f"fact {n}", "-t", THREAD).ok()
        records = [json.loads(out.next()) for _ in range(3)]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=DEADLINE) == 130
        assert err.next() == "" and out.next() == ""  # Ctrl-C is a quiet exit: no traceback, no "aborted"
    assert [record["body"]["summary"] for record in records] == ["fact 0", "fact 1", "fact 2"]
    assert records[0]["sequence"] < records[1]["sequence"] < records[2]["sequence"]

    lines = cli("thread", "records", THREAD).ok().out.splitlines()
    with watching(daemon, "--cursor", str(records[1]["sequence"])) as (_, out, _):
        assert out.next() == lines[2] + "\n"  # only the third (text: the `thread records` line), then live
        cli("know", "fact 3", "-t", THREAD).ok()
        assert "fact 3" in out.next()

    started = time.monotonic()
    help_text = cli("thread", "watch", "--help").ok().out
    assert "Example" in help_text and "--cursor" in help_text and time.monotonic() - started < DEADLINE


def _frame(sequence: int) -> bytes:
    record = {"id": f"rec{sequence}", "act": "KNOW", "actor": "did:key:zFake", "thread": THREAD, "clock": sequence}
    data = json.dumps({"id": record["id"], "record": {**record, "sequence": sequence}})
    return f"event: record.created\nid: {sequence}\ndata: {data}\n\n".encode()


def test_watch_resumes_from_its_last_id_and_bounds_lines(tmp_path: Path) -> None:
    """A lagged stream is resumed with Last-Event-ID; an unknown error stops it; an endless line is refused."""
    answers = iter(
        [
            _frame(7) + b': comment\n\nevent: error\ndata: {"code":"lagged","message":"behind"}\n\n',
            _frame(9) + b'event: error\ndata: {"code":"boom","message":"the store\\u001b[31m broke"}\n\n',
        ]
    )
    env = base_env(tmp_path / "home")
    with FakeDaemon(content_type="text/event-stream", answer=lambda _m, _p: (200, next(answers))) as fake:
        # --since-clock: no look-up of the thread's newest sequence first (a live start asks the daemon for it)
        result = run_spl("thread", "watch", THREAD, "-o", "json", "--since-clock", "0", "--url", fake.url, env=env)
    *records, error = [json.loads(line) for line in result.out.splitlines()]
    assert [record["sequence"] for record in records] == [7, 9]
    assert [seen.headers.get("last-event-id") for seen in fake.seen] == [None, "7"]
    assert "lagged); reconnecting in 0.2s, resuming after sequence 7" in result.err
    # Under -o json the error that stops the watch ends the NDJSON stream as one more line, an error object.
    assert result.code == 1 and error == {
        "object": "error",
        "type": "cli_error",
        "code": "CLI_ERROR",
        "message": "the watch stopped: boom: the store\\x1b[31m broke",  # escaped by the CLI, as on stderr
    }
    assert "error:" not in result.err

    with FakeDaemon(content_type="text/event-stream", body=b"data: " + b"x" * (2 * 1024 * 1024)) as fake:
        refused = run_spl("thread", "watch", THREAD, "--cursor", "0", "--url", fake.url, env=env)
    assert refused.code == 1 and refused.out == "" and "Traceback" not in refused.err
    assert "sent a line longer than 1114112 bytes, larger than any record" in refused.err.splitlines()[-1]
