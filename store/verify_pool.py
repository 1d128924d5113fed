"""Record verification in worker processes, for imports (issue 11): ids and signatures off the GIL.

An import verifies every record of a bundle: its id recomputed over canonical JSON and its Ed25519 signature
checked, about 80 µs of CPU a record, much of it Python. In threads that work shares the GIL with the thread that
reads the archive and inserts into the store, and an import of a million records spent minutes on it. Here each
worker is a child process (``python -m spl.store.verify_pool``) that runs :func:`spl.core.bundle.check_record_file`
on batches of record files and answers with the verified candidates.

The protocol is length-prefixed msgpack over the child's stdin/stdout (4-byte big-endian length, then the frame):
the request ``[max_bytes, [[path, bytes], …]]``, the answer ``{"ok": [candidate, …]}`` or
``{"error": [kind, detail]}``. Each child is driven by one thread of the parent, which writes a whole request and
then reads the whole answer, so neither side can block on a full pipe while the other waits. The children are
started fresh (not forked from the daemon, whose threads and locks must not be copied) and ended when the pool
closes; a child that dies fails the import, which then writes nothing.
"""

from __future__ import annotations

import concurrent.futures
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

import msgspec

from spl.core.bundle import BundleMalformed, BundleSignatureInvalid, check_record_file
from spl.core.stored import Candidate, stored_json_head

__all__ = ["Verified", "VerifyPool", "main", "verify_files"]

_LENGTH = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a batch is at most a few MiB; this bounds a damaged child's answer


Verified = tuple[Candidate, str | None]  # the candidate and its stored JSON's head (spl.core.stored.stored_json_head)


class _Answer(msgspec.Struct, omit_defaults=True):
    ok: list[Verified] | None = None
    error: tuple[str, str] | None = None


_REQUEST_ENCODER = msgspec.msgpack.Encoder()
_REQUEST_DECODER = msgspec.msgpack.Decoder(tuple[int, list[tuple[str, bytes]]])
_ANSWER_ENCODER = msgspec.msgpack.Encoder()
_ANSWER_DECODER = msgspec.msgpack.Decoder(_Answer)


def _read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if not head:
        return None
    if len(head) != _LENGTH.size:
        raise EOFError("a frame's length was cut short")
    (length,) = _LENGTH.unpack(head)
    if length > MAX_FRAME:
        raise ValueError(f"a frame of {length} bytes")
    data = stream.read(length)
    if len(data) != length:
        raise EOFError("a frame was cut short")
    return data


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def verify_files(files: Sequence[tuple[str, bytes]], max_bytes: int) -> list[Verified]:
    """Each record file verified (:func:`check_record_file`), with the head of the JSON the store will keep.

    The head is built here because a worker has the CPU to spare and the writer's thread has not: it is most of
    what turning a record into its stored form costs.
    """
    verified: list[Verified] = []
    for path, data in files:  # (a head is never None here; the type is the importer's, which also takes None)
        candidate = check_record_file(path, data, max_bytes=max_bytes)
        verified.append((candidate, stored_json_head(candidate.envelope, signer=candidate.signer, sig=candidate.sig)))
    return verified


def _verify(files: list[tuple[str, bytes]], max_bytes: int) -> _Answer:
    try:
        return _Answer(ok=verify_files(files, max_bytes))
    except BundleSignatureInvalid as exc:
        return _Answer(error=("signature", exc.detail))
    except BundleMalformed as exc:
        return _Answer(error=("malformed", exc.detail))


def main() -> None:
    """The child: answer verification requests until stdin closes."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while (frame := _read_frame(source)) is not None:
        max_bytes, files = _REQUEST_DECODER.decode(frame)
        _write_frame(sink, _ANSWER_ENCODER.encode(_verify(files, max_bytes)))


class _Child:
    """One worker process and the lock that gives one thread at a time its pipes."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spl.store.verify_pool"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.lock = threading.Lock()

    def ask(self, files: list[tuple[str, bytes]], max_bytes: int) -> list[Verified]:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self.lock:
            try:
                _write_frame(self.process.stdin, _REQUEST_ENCODER.encode((max_bytes, files)))
                frame = _read_frame(self.process.stdout)
            except (OSError, EOFError, ValueError) as exc:
                raise RuntimeError(f"a verification worker failed ({exc}); run the import again") from None
        if frame is None:
            raise RuntimeError("a verification worker ended; run the import again")
        answer = _ANSWER_DECODER.decode(frame)
        if answer.error is not None:
            kind, detail = answer.error
            raise (BundleSignatureInvalid if kind == "signature" else BundleMalformed)(detail)
        return answer.ok or []

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


class VerifyPool:
    """``workers`` child processes verifying record batches; :meth:`submit` returns a future of the candidates.

    A context manager: leaving it ends the children (after the batches in flight). Batches go to the children in
    turn, each driven by a thread of its own.
    """

    def __init__(self, workers: int = 2) -> None:
        self._children: list[_Child] = []
        try:
            for _ in range(max(1, workers)):
                self._children.append(_Child())
        except BaseException:
            self.close()
            raise
        self._threads = concurrent.futures.ThreadPoolExecutor(len(self._children), thread_name_prefix="spl-verify")
        self._turn = 0

    def submit(self, files: Sequence[tuple[str, bytes]], max_bytes: int) -> concurrent.futures.Future[list[Verified]]:
        child = self._children[self._turn % len(self._children)]
        self._turn += 1
        return self._threads.submit(child.ask, list(files), max_bytes)

    def close(self) -> None:
        threads = getattr(self, "_threads", None)
        if threads is not None:
            threads.shutdown(wait=True, cancel_futures=True)
        for child in self._children:
            child.close()
        self._children = []

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


if __name__ == "__main__":
    main()
