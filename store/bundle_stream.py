"""Streaming a bundle's files into and out of a tar (zstd-compressed or plain), and reading the log for export.

A bundle (spec §9, issue 11) is a tar of small files: a manifest, the identity, one JSON file per record. Both
ends stream, so exporting or importing a million records holds one entry in memory at a time, never the archive:

* :func:`write_tar_zst` turns ``(path, bytes)`` pairs into a tar with deterministic headers (two exports of the same
  store are byte-identical) and returns each path's SHA-256 for the manifest.
* :func:`read_tar_zst` yields ``(path, bytes)`` back from an upload. Every byte of it is hostile: it accepts
  regular files with plain relative paths only, and bounds each entry, the entry count and the decompressed total
  (a zip bomb meets ``max_total``, not the machine's memory). The tar headers are parsed here, one 512-byte block
  at a time, rather than by ``tarfile``'s reader, which reads an extended header of any declared size into memory
  before a caller could look at it.
* :func:`export_entries` reads every record in sequence order inside one read transaction, so the bundle is a
  consistent prefix of the log even while the writer keeps committing.

What goes in the files (paths, manifest, signatures) is ``spl.core.bundle``'s business; this module only moves
bytes, so the two meet through ``(path, bytes)`` pairs, a per-entry digest callback and
:class:`~spl.core.bundle.BundleMalformed` (400 ``BUNDLE_MALFORMED``), raised before the offending entry is handed
out, so an importer that verifies everything before writing writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Literal, NamedTuple, cast

import apsw
import zstandard

from spl.core.bundle import (
    BundleMalformed,
    is_record_path,
)  # the format's error: one class for every "bundle malformed: …"
from spl.core.errors import Unavailable

__all__ = [
    "MAX_PATH",
    "ZSTD_MAGIC",
    "BundleMalformed",
    "ExportedRecord",
    "check_path",
    "export_entries",
    "read_tar_zst",
    "write_tar_zst",
]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BLOCK = tarfile.BLOCKSIZE  # 512
MAX_PATH = 4096  # bytes of UTF-8 in one entry's path
MAX_PAX = 64 * 1024  # an extended (pax) header's payload: a path and a few numbers, never more
# The largest zstd window a bundle may need. Level 19 uses 8 MiB; a frame asking for more is refused rather than
# allowed to make the decompressor allocate it.
MAX_WINDOW = 32 * 1024 * 1024
# Compressed bytes fed to the decompressor per step. zstd can expand a few bytes into a 128 KiB block, so one KiB in
# is at most ~32 MiB out before the running total is checked against ``max_total``.
_FEED = 1024
_TRAILING_CHUNK = 64 * 1024
MAX_TRAILER = 1024 * 1024  # zero bytes accepted after the end-of-archive marker (tar itself writes < 10 KiB)
_STOP_CHECK = 1024 * 1024  # decompressed bytes between two questions to ``should_stop``
_WRITE_CHUNK = 256 * 1024  # entries are gathered into writes of this size: one zstd call per few hundred
_ZERO_BLOCK = bytes(BLOCK)
_BAD_CHARACTER = re.compile(r"[\x00-\x1f\x7f\\]")
_BAD_SEGMENT = re.compile(r"(?:^|/)\.{0,2}(?:/|$)")  # an empty, "." or ".." segment
# Keys an extended header may carry. ``path`` and ``size`` are applied; the rest are what common tar writers add
# and are ignored. Anything else (sparse files, global headers, link targets on a file) is refused.
_PAX_APPLIED = frozenset({"path", "size"})
_PAX_IGNORED = frozenset({"mtime", "atime", "ctime", "uid", "gid", "uname", "gname", "hdrcharset", "comment"})
_KIND = {
    tarfile.LNKTYPE: "a hard link",
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.DIRTYPE: "a directory",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.CONTTYPE: "a contiguous file",
    tarfile.XGLTYPE: "a global pax header",
    tarfile.GNUTYPE_LONGLINK: "a GNU long link name",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}


def check_path(path: str) -> str:
    """``path`` when it is a plain relative POSIX path, else :class:`BundleMalformed` naming what is wrong.

    A bundle entry must never name a place outside the folder it could be unpacked into, nor two spellings of one
    file: no leading ``/``, no ``..`` or ``.`` segment, no empty segment, no backslash, no control character.
    """
    if is_record_path(path):  # the common case, and a shape that passes every check below
        return path
    shown = ascii(path[:80])
    if not path:
        raise BundleMalformed("an entry has an empty path")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise BundleMalformed(f"entry path longer than {MAX_PATH} bytes: {shown}…")
    if path.startswith("/"):
        raise BundleMalformed(f"absolute entry path {shown}: entries must be relative")
    if _BAD_CHARACTER.search(path):
        raise BundleMalformed(f"entry path {shown} holds a backslash or a control character")
    if _BAD_SEGMENT.search(path):
        raise BundleMalformed(f"entry path {shown} has an empty, '.' or '..' segment")
    return path


# -- writing ---------------------------------------------------------------------------------------------------


def _tarfile_header(path: str, size: int, tar_format: Literal[0, 1, 2] = tarfile.PAX_FORMAT) -> bytes:
    """The deterministic header block(s) of one regular file, encoded by ``tarfile`` (pax when the path needs it)."""
    info = tarfile.TarInfo(path)
    info.size = size
    info.mtime = 0
    info.mode = 0o600
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tar_format, "utf-8", "strict")


# A ustar header differs between two of our entries only in its name (bytes 0-99), size (124-135), checksum
# (148-155) and name prefix (345-499), so the common case is a template with those spliced in: ``tobuf`` costs
# more than all the rest of writing an entry. The template comes from ``tarfile`` itself, and a test checks that
# each header is byte for byte what ``tarfile`` writes in ustar format.
_TEMPLATE = _tarfile_header("x", 0)
_MIDDLE = _TEMPLATE[100:124]  # mode, uid, gid
_BEFORE_CHECKSUM = _TEMPLATE[136:148]  # mtime
_TAIL = _TEMPLATE[156:345]  # type, link name, magic, user and group names, device numbers
_END = _TEMPLATE[500:BLOCK]
_FIXED_SUM = sum(_MIDDLE) + sum(_BEFORE_CHECKSUM) + sum(_TAIL) + sum(_END) + 8 * ord(" ")  # checksum counts as spaces
_NAME_FIELD = 100
_PREFIX_FIELD = 155
_MAX_USTAR_SIZE = 8**11 - 1  # eleven octal digits


def _ustar_split(path: str) -> tuple[str, str] | None:
    """``(prefix, name)`` as ustar stores a path of up to 256 characters, or None when it does not fit.

    A record path (``records/<hex of thread>/<id>.json``) is over 100 characters for any thread longer than 11;
    the ustar prefix field holds its folder, which spares each entry a pax header (two more blocks).
    """
    if len(path) <= _NAME_FIELD:
        return "", path
    at = path.find("/")
    while at != -1:
        if at <= _PREFIX_FIELD and len(path) - at - 1 <= _NAME_FIELD:
            return path[:at], path[at + 1 :]
        at = path.find("/", at + 1)
    return None


def _header(path: str, size: int) -> bytes:
    split = _ustar_split(path) if path.isascii() and size <= _MAX_USTAR_SIZE else None
    if split is None:
        return _tarfile_header(path, size)  # a pax header carries the long or non-ASCII path (or huge size)
    name = split[1].encode("ascii").ljust(_NAME_FIELD, b"\0")
    prefix = split[0].encode("ascii").ljust(_PREFIX_FIELD, b"\0")
    size_field = b"%011o\0" % size
    checksum = b"%06o\0 " % (_FIXED_SUM + sum(name) + sum(size_field) + sum(prefix))
    return b"".join((name, _MIDDLE, size_field, _BEFORE_CHECKSUM, checksum, _TAIL, prefix, _END))


def write_tar_zst(
    out: BinaryIO,
    entries: Iterable[tuple[str, bytes]],
    *,
    compress: bool = True,
    level: int = 3,
    keep_digests: bool = True,
    on_entry: Callable[[str, str], None] | None = None,
) -> dict[str, str]:
    """Write ``entries`` to ``out`` as a tar (zstd-compressed unless ``compress`` is false); ``{path: sha256 hex}``.

    Entries are written in the order given, one at a time: memory does not grow with their number except for the
    returned digest table (about 250 bytes a path). A caller that builds the manifest as it goes passes
    ``keep_digests=False`` and hears each ``(path, digest)`` through ``on_entry`` instead — which also lets the
    entries generator emit the manifest as its last entry. Headers are deterministic (mtime 0, uid/gid 0, mode
    0o600, no user or group names) and the zstd frame carries a content checksum, so one flipped byte of a
    compressed bundle fails decompression rather than slipping through. ``out`` is flushed, not closed.

    Each header is what ``tarfile`` writes for the entry: ustar when the path fits (a path over 100 characters is
    split into ustar's folder prefix, sparing a record path a pax header), pax otherwise; a test checks it byte for
    byte. Headers come from a ``tarfile``-made template (:func:`_header`) and the data is appended here, because
    ``tarfile``'s ``addfile`` costs more per entry, in copies and small writes, than the rest of an export.
    """
    digests: dict[str, str] = {}
    compressor: zstandard.ZstdCompressionWriter | None = None
    sink: BinaryIO = out
    if compress:
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).stream_writer(out, closefd=False)
        sink = compressor  # type: ignore[assignment]
    pending = bytearray()
    written = 0
    for path, data in entries:
        check_path(path)
        pending += _header(path, len(data))
        pending += data
        pending += bytes(_padding(len(data)))
        digest = hashlib.sha256(data).hexdigest()
        if keep_digests:
            if path in digests:
                raise ValueError(f"duplicate bundle path {path!r}: every entry needs its own path")
            digests[path] = digest
        if on_entry is not None:
            on_entry(path, digest)
        if len(pending) >= _WRITE_CHUNK:
            sink.write(pending)
            written += len(pending)
            pending.clear()
    # The end of the archive, as tarfile writes it: two zero blocks, then zeros up to a whole tar record.
    pending += bytes(2 * BLOCK)
    pending += bytes(-(written + len(pending)) % tarfile.RECORDSIZE)
    sink.write(pending)
    if compressor is not None:
        compressor.flush(zstandard.FLUSH_FRAME)
    out.flush()
    return digests


# -- reading ---------------------------------------------------------------------------------------------------


class _Source:
    """The decompressed bytes of an upload, read exactly and counted against ``max_total``.

    Plain tar is read as it comes; zstd is decompressed one KiB of input at a time (see ``_FEED``) with
    ``decompressobj``, which, unlike the stream reader, says whether the frame really ended (a truncated
    upload is refused, not taken for a short one) and what follows it (trailing bytes are refused).
    """

    def __init__(self, src: BinaryIO, max_total: int, should_stop: Callable[[], bool] = lambda: False) -> None:
        self._src = src
        self._max_total = max_total
        self._should_stop = should_stop
        self._until_check = _STOP_CHECK
        self.total = 0
        self._buffer = bytearray()
        self._offset = 0
        head = self._read_raw(len(ZSTD_MAGIC))
        self._decompressor: zstandard.ZstdDecompressionObj | None = None
        if head == ZSTD_MAGIC:
            self._decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW).decompressobj()
            self._feed(head)
        else:
            self._take(head)
        self._ended = False

    def _read_raw(self, size: int) -> bytes:
        chunks: list[bytes] = []
        wanted = size
        while wanted > 0:
            chunk = self._src.read(wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)

    def _take(self, data: bytes) -> None:
        self.total += len(data)
        self._until_check -= len(data)
        if self._until_check <= 0:
            self._until_check = _STOP_CHECK
            if self._should_stop():
                raise Unavailable("the bundle's reading was cancelled (its request ended); run it again")
        if self.total > self._max_total:
            raise BundleMalformed(
                f"more than {self._max_total} bytes once decompressed; raise the import's size limit if the bundle "
                "is genuine"
            )
        if self._offset:
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def _feed(self, compressed: bytes) -> None:
        assert self._decompressor is not None
        try:
            self._take(self._decompressor.decompress(compressed))
        except zstandard.ZstdError as exc:
            raise BundleMalformed(f"the zstd stream is damaged ({exc}); export the bundle again") from exc
        if self._decompressor.eof and (self._decompressor.unused_data or self._src.read(1)):
            raise BundleMalformed("bytes follow the end of the zstd frame; the file holds more than one bundle")

    def _fill(self) -> bool:
        """Bring more bytes into the buffer; False at the end of the input."""
        if self._ended:
            return False
        if self._decompressor is None:
            chunk = self._src.read(_TRAILING_CHUNK)
            if not chunk:
                self._ended = True
                return False
            self._take(chunk)
            return True
        if self._decompressor.eof:
            self._ended = True
            return False
        chunk = self._src.read(_FEED)
        if not chunk:
            raise BundleMalformed("the zstd stream is truncated; copy or download the bundle again")
        self._feed(chunk)
        return True

    def read_exact(self, size: int, what: str) -> bytes:
        while len(self._buffer) - self._offset < size:
            if not self._fill():
                raise BundleMalformed(f"the tar stream is truncated inside {what}; copy or download the bundle again")
        start = self._offset
        self._offset += size
        return bytes(self._buffer[start : self._offset])

    def rest_is_zeros(self) -> bool:
        """Read to the end: True when nothing but zero bytes is left (tar pads its end with zeros).

        At most :data:`MAX_TRAILER` bytes: a tar's own padding is under 10 KiB, and a stream of zeros after the end
        (a few KiB compressed can decompress to hundreds of GiB) must not keep a reader busy for minutes.
        """
        start = self.total - (len(self._buffer) - self._offset)
        while True:
            if self._buffer.count(0, self._offset) != len(self._buffer) - self._offset:
                return False
            self._offset = len(self._buffer)
            if self.total - start > MAX_TRAILER:
                raise BundleMalformed(f"more than {MAX_TRAILER} bytes follow the end of the tar archive")
            if not self._fill():
                return True


def _padding(size: int) -> int:
    return -size % BLOCK


def _parse_pax(payload: bytes) -> dict[str, str]:
    """The records of an extended header: ``"<length> <key>=<value>\\n"``, each length counting the whole record."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(payload):
        space = payload.find(b" ", at, at + 12)
        if space < 0 or not payload[at:space].isdigit():
            raise BundleMalformed("an extended (pax) header record has no length")
        length = int(payload[at:space])
        record = payload[at : at + length]
        if length <= space - at + 1 or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise BundleMalformed("an extended (pax) header record is malformed")
        key, _, value = record[space - at + 1 : -1].partition(b"=")
        try:
            fields[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleMalformed("an extended (pax) header is not UTF-8") from exc
        at += length
    unknown = sorted(set(fields) - _PAX_APPLIED - _PAX_IGNORED)
    if unknown:
        raise BundleMalformed(f"extended (pax) header key {unknown[0][:40]!r} is not accepted in a bundle")
    return fields


def _own_header(block: bytes) -> tuple[str, int] | None:
    """``(path, size)`` when ``block`` is a header exactly as :func:`_header`'s fast path writes it, else None.

    Our own bundles are read without ``TarInfo.frombuf`` (the most expensive step of reading an entry); any other
    header, or one whose checksum does not add up, goes through ``frombuf`` and its checks.
    """
    if (
        block[100:124] != _MIDDLE
        or block[136:148] != _BEFORE_CHECKSUM
        or block[156:345] != _TAIL
        or block[500:] != _END
    ):
        return None
    name, size_field, prefix = block[:_NAME_FIELD], block[124:136], block[345:500]
    if block[148:156] != b"%06o\0 " % (_FIXED_SUM + sum(name) + sum(size_field) + sum(prefix)):
        return None
    digits = size_field[:11]
    if size_field[11] != 0 or not digits.isdigit() or b"8" in digits or b"9" in digits:
        return None
    path = name.split(b"\0", 1)[0]
    folder = prefix.split(b"\0", 1)[0]
    if folder:
        path = folder + b"/" + path
    if not path.isascii():
        return None
    return path.decode("ascii"), int(digits, 8)


class _Entries:
    """The per-entry checks of :func:`read_tar_zst`: path, count, size, duplicates, then the bytes and padding."""

    def __init__(
        self, source: _Source, *, max_entry: int, max_entries: int, unique: Callable[[str], bool] = lambda _: True
    ) -> None:
        self._source = source
        self._unique = unique
        self._max_entry = max_entry
        self._max_entries = max_entries
        self._seen: set[int] = set()
        self._salt = os.urandom(16)  # keyed, so an upload cannot choose two paths that collide
        self.count = 0

    def take(self, path: str, size: int) -> tuple[str, bytes]:
        check_path(path)
        self.count += 1
        if self.count > self._max_entries:
            raise BundleMalformed(f"more than {self._max_entries} entries")
        if size > self._max_entry:
            raise BundleMalformed(
                f"entry {ascii(path[:80])} is {size} bytes, over the {self._max_entry}-byte limit per entry"
            )
        if self._unique(path):
            key = int.from_bytes(hashlib.blake2b(path.encode("utf-8"), digest_size=8, key=self._salt).digest(), "big")
            if key in self._seen:
                raise BundleMalformed(f"entry {ascii(path[:80])} appears twice")
            self._seen.add(key)
        data = self._source.read_exact(size, "an entry")
        padding = _padding(size)
        if self._source.read_exact(padding, "an entry").count(0) != padding:
            raise BundleMalformed(f"the padding after entry {ascii(path[:80])} is not zero")
        return path, data


def read_tar_zst(
    src: BinaryIO,
    *,
    max_entry: int,
    max_entries: int,
    max_total: int,
    should_stop: Callable[[], bool] = lambda: False,
    unique: Callable[[str], bool] = lambda _: True,
) -> Iterator[tuple[str, bytes]]:
    """Yield each ``(path, bytes)`` of a tar or tar.zst upload in archive order; :class:`BundleMalformed` otherwise.

    zstd is recognised by its magic number, anything else is read as plain tar. Refused: anything but a regular
    file (links, devices, directories, FIFOs, sparse files), a path :func:`check_path` refuses, a path seen before,
    an entry over ``max_entry`` bytes (refused from its header, before its bytes are read), more than
    ``max_entries`` entries, more than ``max_total`` bytes after decompression, a truncated stream, a damaged
    header or zstd checksum, and any non-zero byte after the tar's end. The error comes before the entry it is
    about is yielded, but entries before it have been: a caller verifies the whole bundle before writing.

    Duplicate paths are remembered as 8-byte keyed digests (about 70 bytes an entry), not as the paths, for the
    paths ``unique`` names (all by default): a bundle's record paths are left out, because a record repeated is
    the same content (its id is in its path) and the import de-duplicates it, while remembering a million paths
    would cost ~90 MB of an import's 200 MB budget.
    ``should_stop`` is asked every MiB read: True ends the read with ``Unavailable`` (the request is gone).
    """
    source = _Source(src, max_total, should_stop)
    entries = _Entries(source, max_entry=max_entry, max_entries=max_entries, unique=unique)
    pax: dict[str, str] | None = None
    long_name: str | None = None
    while True:
        block = source.read_exact(BLOCK, "a header")
        if block == _ZERO_BLOCK:
            if pax is not None or long_name is not None:
                raise BundleMalformed("the archive ends right after an extended header")
            if source.read_exact(BLOCK, "the end-of-archive marker") != _ZERO_BLOCK or not source.rest_is_zeros():
                raise BundleMalformed("bytes follow the end of the tar archive")
            return
        own = _own_header(block)
        if own is not None:
            path, size = own
            if pax is None and long_name is None:
                yield entries.take(path, size)
                continue
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except UnicodeDecodeError as exc:
            raise BundleMalformed(f"a tar header holds a name that is not UTF-8 after {entries.count} entries") from exc
        except tarfile.HeaderError as exc:
            raise BundleMalformed(f"a tar header is damaged ({exc}) after {entries.count} entries") from exc
        if info.size < 0:
            raise BundleMalformed("a tar header declares a negative size")
        if info.type == tarfile.XHDTYPE or info.type == tarfile.GNUTYPE_LONGNAME:
            if pax is not None or long_name is not None:
                raise BundleMalformed("two extended headers in a row")
            bound = MAX_PAX if info.type == tarfile.XHDTYPE else MAX_PATH
            if info.size > bound:
                raise BundleMalformed(f"an extended header of {info.size} bytes (at most {bound})")
            payload = source.read_exact(info.size, "an extended header")
            source.read_exact(_padding(info.size), "an extended header")
            if info.type == tarfile.XHDTYPE:
                pax = _parse_pax(payload)
            else:
                try:
                    long_name = payload.rstrip(b"\0").decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BundleMalformed("a long name header is not UTF-8") from exc
            continue
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            kind = _KIND.get(info.type, f"an entry of tar type {info.type!r}")
            raise BundleMalformed(f"{ascii(info.name[:80])} is {kind}; a bundle holds regular files only")
        path, size = info.name, info.size
        if long_name is not None:
            path, long_name = long_name, None
        if pax is not None:
            path = pax.get("path", path)
            if "size" in pax:
                if not (pax["size"].isascii() and pax["size"].isdigit()):
                    raise BundleMalformed("an extended header's size is not a number")
                size = int(pax["size"])
            pax = None
        yield entries.take(path, size)


# -- export ----------------------------------------------------------------------------------------------------


class ExportedRecord(NamedTuple):
    """One stored record as export reads it: its sequence, thread, id and exact stored JSON text."""

    seq: int
    thread: str
    id: str
    json: str


def export_entries(
    connection: apsw.Connection, *, page: int = 5000, in_transaction: bool = False
) -> Iterator[ExportedRecord]:
    """Every record (configuration threads' included) in sequence order, read in ONE read transaction.

    The transaction is what makes the bundle a consistent prefix of the log: SQLite (WAL) fixes the snapshot at
    the first read, so records committed by the writer while the export pages through are not seen, and no page
    sees a different state from the one before. Pages of ``page`` rows keep memory flat. The connection belongs
    to the iteration until it ends or is closed (the transaction is ended either way); a read-only connection
    from ``connect_reader`` or a ``ReadPool`` is the intended one. With ``in_transaction`` the caller has begun
    the read transaction (it read other things in the same snapshot first) and ends it.
    """
    if page < 1:
        raise ValueError("page must be at least 1")
    if not in_transaction:
        connection.execute("BEGIN DEFERRED")
    try:
        after = 0
        while True:
            rows = [
                ExportedRecord(*cast("tuple[int, str, str, str]", row))
                for row in connection.execute(
                    "SELECT seq, thread, id, json FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (after, page)
                )
            ]
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].seq
    finally:
        if connection.in_transaction and not in_transaction:
            connection.execute("COMMIT")
