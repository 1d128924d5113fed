"""Bundles streamed to and from tar(.zst), and the export's read of the log (``spl.store.bundle_stream``).

What must hold: a round trip gives back every byte and the digests the manifest will list; two writes of the
same entries are byte-identical (and identical to what ``tarfile`` itself writes); every hostile shape of upload
is refused as ``bundle malformed: …`` before the entry it is about is handed out; memory does not grow with the
number of entries; and an export taken while the writer commits holds exactly a prefix of the log.
"""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest
import zstandard

from spl.store import bundle_stream
from spl.store.bundle_stream import (
    BundleMalformed,
    ExportedRecord,
    export_entries,
    read_tar_zst,
    write_tar_zst,
)
from spl.store.database import connect_reader, connect_writer

LIMITS = {"max_entry": 1 << 20, "max_entries": 1_000_000, "max_total": 1 << 32}


def _record_entries(count: int, size: int = 600) -> Iterator[tuple[str, bytes]]:
    """Entries shaped like exported records: a path per thread and id, JSON of about ``size`` bytes."""
    for n in range(count):
        record_id = hashlib.sha256(n.to_bytes(8, "big")).hexdigest()
        body = {"id": record_id, "n": n, "sig": hashlib.sha512(record_id.encode()).hexdigest()}
        body["text"] = "x" * max(0, size - len(json.dumps(body)) - 12)
        yield f"records/th_{n % 37:04d}/{record_id}.json", json.dumps(body).encode()


def _read_all(blob: bytes, **limits: int) -> list[tuple[str, bytes]]:
    return list(read_tar_zst(io.BytesIO(blob), **{**LIMITS, **limits}))


def _written(entries: list[tuple[str, bytes]], *, compress: bool = True) -> bytes:
    out = io.BytesIO()
    write_tar_zst(out, entries, compress=compress)
    return out.getvalue()


# -- round trip and determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_round_trip_of_ten_thousand_entries_gives_back_bytes_and_digests(compress: bool) -> None:
    entries = list(_record_entries(10_000, size=120))
    out = io.BytesIO()
    digests = write_tar_zst(out, entries, compress=compress)
    assert (out.getvalue()[:4] == bundle_stream.ZSTD_MAGIC) is compress

    back = _read_all(out.getvalue())

    assert back == entries
    assert digests == {path: hashlib.sha256(data).hexdigest() for path, data in back}


def test_on_entry_hears_each_digest_in_order_without_keeping_a_table() -> None:
    """A caller can build its manifest as it writes (and emit it last) instead of holding every digest twice."""
    entries = list(_record_entries(50))
    heard: list[tuple[str, str]] = []

    digests = write_tar_zst(io.BytesIO(), entries, keep_digests=False, on_entry=lambda p, d: heard.append((p, d)))

    assert digests == {}
    assert heard == [(path, hashlib.sha256(data).hexdigest()) for path, data in entries]


def test_two_writes_of_the_same_entries_are_byte_identical() -> None:
    entries = list(_record_entries(500))
    assert _written(entries) == _written(entries)
    assert _written(entries, compress=False) == _written(entries, compress=False)


def test_output_is_exactly_what_tarfile_writes_in_stream_mode() -> None:
    """The fast header path changes nothing for paths that fit ustar: non-ASCII and over-long ones get pax headers."""
    import tarfile

    entries = [*_record_entries(300), ("records/" + "é" * 60 + "/x.json", b"{}"), ("a" * 120, b""), ("x", b"1")]
    reference = io.BytesIO()
    with tarfile.open(fileobj=reference, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as archive:
        for path, data in entries:
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o600, "", ""
            archive.addfile(info, io.BytesIO(data))

    assert _written(entries, compress=False) == reference.getvalue()
    assert _read_all(reference.getvalue()) == entries


LONG_RECORD_PATH = "records/" + "74" * 70 + "/" + "a" * 64 + ".json"  # a 70-character thread, hex-encoded


@pytest.mark.parametrize(
    "path", ["a", "x" * 99, "x" * 100, "x" * 101, "é", "a/" + "b" * 98, "a/" + "b" * 100, LONG_RECORD_PATH]
)
@pytest.mark.parametrize("size", [0, 1, 512, 10**6, 8**11 - 1, 8**11])
def test_template_header_equals_tarfile_header(path: str, size: int) -> None:
    """ustar (with its name prefix) where the path fits, else tarfile's own pax header: byte for byte."""
    import tarfile

    fits = path.isascii() and size < 8**11 and (len(path) <= 100 or bundle_stream._ustar_split(path) is not None)
    expected = bundle_stream._tarfile_header(path, size, tarfile.USTAR_FORMAT if fits else tarfile.PAX_FORMAT)
    assert bundle_stream._header(path, size) == expected
    blob = bundle_stream._header(path, 0) + bytes(1024)
    assert _read_all(blob) == [(path, b"")]


def test_record_paths_of_long_threads_need_no_pax_header() -> None:
    """One 512-byte header per record while the folder fits ustar's 155-byte prefix (threads up to 73 chars)."""
    assert len(_written([(LONG_RECORD_PATH, b"{}")], compress=False)) == 10240  # header + data + end, one tar record
    assert len(bundle_stream._header(LONG_RECORD_PATH, 2)) == 512
    assert len(bundle_stream._header("records/" + "74" * 74 + "/" + "a" * 64 + ".json", 2)) > 512


@pytest.mark.parametrize("tar_format", ["gnu", "ustar", "pax"])
def test_archives_from_other_tar_writers_are_read(tar_format: str) -> None:
    """GNU long names, ustar prefixes and pax headers with the usual extra keys all come through."""
    import tarfile

    formats = {"gnu": tarfile.GNU_FORMAT, "ustar": tarfile.USTAR_FORMAT, "pax": tarfile.PAX_FORMAT}
    entries = [("records/" + "t" * 90 + "/" + "r" * 60 + ".json", b"{}"), ("manifest.json", b'{"v":1}')]
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w", format=formats[tar_format]) as archive:
        for path, data in entries:
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.uname = len(data), 1_700_000_000.5, "someone"
            archive.addfile(info, io.BytesIO(data))

    assert _read_all(blob.getvalue()) == entries


# -- refusals ----------------------------------------------------------------------------------------------------


def _tar(*members: tuple[str, bytes, bytes], tar_format: int | None = None) -> bytes:
    """A plain tar of ``(name, tar type, data)`` members, written by ``tarfile`` as an attacker would."""
    import tarfile

    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w", format=tar_format or tarfile.PAX_FORMAT) as archive:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = "/etc/passwd"
            archive.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return blob.getvalue()


def _zstd(blob: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(blob)


def _refused(blob: bytes, needle: str, **limits: int) -> BundleMalformed:
    with pytest.raises(BundleMalformed) as caught:
        _read_all(blob, **limits)
    error = caught.value
    assert error.status == 400 and error.code == "BUNDLE_MALFORMED"
    assert error.message.startswith("bundle malformed: ")
    assert needle in error.message, error.message
    return error


def _hostile_cases() -> dict[str, tuple[bytes, str]]:
    import tarfile

    ok = (b"ok.json", b"{}")
    good = _written([("ok.json", b"{}")], compress=False)
    reg = tarfile.REGTYPE
    return {
        "symlink": (_tar(("link", tarfile.SYMTYPE, b"")), "symbolic link"),
        "hard link": (_tar(("link", tarfile.LNKTYPE, b"")), "hard link"),
        "directory": (_tar(("records", tarfile.DIRTYPE, b"")), "directory"),
        "character device": (_tar(("dev", tarfile.CHRTYPE, b"")), "character device"),
        "block device": (_tar(("dev", tarfile.BLKTYPE, b"")), "block device"),
        "fifo": (_tar(("fifo", tarfile.FIFOTYPE, b"")), "FIFO"),
        "dot-dot": (_tar(("../x", reg, b"{}")), "'..'"),
        "dot-dot inside": (_tar(("records/../../x", reg, b"{}")), "'..'"),
        "absolute": (_tar(("/abs", reg, b"{}")), "absolute"),
        "empty segment": (_tar(("a//b", reg, b"{}")), "empty"),
        "backslash": (_tar(("a\\..\\b", reg, b"{}")), "backslash"),
        "duplicate": (_tar((ok[0].decode(), reg, ok[1]), (ok[0].decode(), reg, b"[]")), "appears twice"),
        "truncated tar": (good[: 512 + 100], "truncated"),
        "missing end marker": (good[:1024], "truncated"),
        "garbage after tar": (good + b"junk", "follow the end of the tar"),
        "truncated zstd": (_zstd(good)[:-10], "truncated"),
        "zstd without its checksum": (_zstd(good)[:-4], "truncated"),
        "garbage after zstd": (_zstd(good) + b"junk", "end of the zstd frame"),
        "second zstd frame": (_zstd(good) + _zstd(good), "end of the zstd frame"),
        "flipped zstd byte": (_flip(_zstd(good), len(_zstd(good)) // 2), "zstd"),
        "flipped header byte": (_flip(good, 130), "damaged"),
        "non-zero padding": (_flip(good, 512 + 10), "padding"),
        "global pax header": (_global_pax(), "global pax"),
        "huge pax header": (_huge_pax(), "extended header"),
    }


def _flip(blob: bytes, at: int) -> bytes:
    flipped = bytearray(blob)
    flipped[at] ^= 0x01
    return bytes(flipped)


def _global_pax() -> bytes:
    import tarfile

    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "hi"}) as archive:
        info = tarfile.TarInfo("ok")
        archive.addfile(info, io.BytesIO(b""))
    return blob.getvalue()


def _huge_pax() -> bytes:
    """An extended header declaring 1 GiB: refused from its header, before any of it is read into memory."""
    import tarfile

    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 1 << 30
    return info.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)


@pytest.mark.parametrize("case", sorted(_hostile_cases()))
def test_hostile_archive_is_refused(case: str) -> None:
    blob, needle = _hostile_cases()[case]
    _refused(blob, needle)


@pytest.mark.parametrize("compress", [True, False])
def test_every_truncation_is_refused(compress: bool) -> None:
    blob = _written(list(_record_entries(3, size=100)), compress=compress)
    for cut in range(len(blob)):
        if not compress and blob[cut:].count(0) == len(blob) - cut and cut >= len(blob) - 10240 + 1024:
            continue  # cut inside the zero padding after the end-of-archive marker: the archive is whole
        with pytest.raises(BundleMalformed):
            _read_all(blob[:cut])


def test_no_flipped_bit_of_a_compressed_bundle_reaches_the_importer() -> None:
    """The zstd frame carries a content checksum: a flipped bit is refused, never handed on as other bytes.

    The one exception changes nothing: a bit of the frame's window descriptor that only declares a larger
    window decodes to the very same entries (so the manifest's digests still hold).
    """
    entries = list(_record_entries(3, size=100))
    blob = _written(entries)
    harmless = []
    for at in range(len(blob)):
        try:
            back = _read_all(_flip(blob, at))
        except BundleMalformed:
            continue
        assert back == entries, at
        harmless.append(at)
    assert harmless == [5]  # magic (0-3), frame header descriptor (4), window descriptor (5)


def test_entry_over_the_limit_is_refused_from_its_declared_size() -> None:
    """A header declaring 10 GB is refused at once: its bytes (absent here) are never waited for."""
    header = bundle_stream._header("records/t/big.json", 10 * 10**9)
    _refused(header + bytes(1024), "over the 1048576-byte limit")


def test_too_many_entries_is_refused() -> None:
    blob = _written(list(_record_entries(11)))
    assert len(_read_all(blob, max_entries=11)) == 11
    _refused(blob, "more than 10 entries", max_entries=10)


def test_zip_bomb_meets_the_total_bound_not_memory() -> None:
    """64 MiB of zeros compresses to a few KiB; with a 1 MiB total it is refused long before it is inflated."""
    compressed = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(compressed, closefd=False) as writer:
        writer.write(bundle_stream._header("bomb", 64 << 20))
        for _ in range(64):
            writer.write(bytes(1 << 20))
    assert len(compressed.getvalue()) < 64 << 10
    tracemalloc.start()
    try:
        _refused(compressed.getvalue(), "decompressed", max_total=1 << 20, max_entry=1 << 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20


def test_entries_before_a_refusal_are_yielded_and_none_after() -> None:
    """The error is raised before the bad entry is handed out: an importer verifying first writes nothing."""
    import tarfile

    blob = _tar(("one", tarfile.REGTYPE, b"1"), ("two", tarfile.SYMTYPE, b""), ("three", tarfile.REGTYPE, b"3"))
    seen: list[str] = []
    with pytest.raises(BundleMalformed):
        for path, _ in read_tar_zst(io.BytesIO(blob), **LIMITS):
            seen.append(path)
    assert seen == ["one"]


def test_writer_refuses_a_path_the_reader_would_refuse() -> None:
    with pytest.raises(BundleMalformed, match="'..'"):
        write_tar_zst(io.BytesIO(), [("records/../x", b"")])
    with pytest.raises(ValueError, match="duplicate"):
        write_tar_zst(io.BytesIO(), [("x", b""), ("x", b"")])


# -- memory and speed --------------------------------------------------------------------------------------------


class _Counting(io.RawIOBase):
    """A sink that keeps only a count and a hash: what the archive weighs is not what the writer weighs."""

    def __init__(self) -> None:
        self.size = 0
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        chunk = bytes(data)  # type: ignore[call-overload]
        self.size += len(chunk)
        self.hash.update(chunk)
        return len(chunk)


def _peak(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_for_twenty_thousand_entries() -> None:
    count = 20_000
    sink = _Counting()
    write_peak = _peak(lambda: write_tar_zst(sink, _record_entries(count), keep_digests=False))  # type: ignore[arg-type]
    blob = io.BytesIO()
    write_tar_zst(blob, _record_entries(count), keep_digests=False)
    blob.seek(0)
    read_peak = _peak(lambda: sum(1 for _ in read_tar_zst(blob, **LIMITS)))

    # 20k entries are ~12 MB of JSON; the writer holds one 256 KiB batch plus zstd's window, the reader its
    # 16 MiB zstd bound at most and 8 bytes (~70 with the set) per path to spot duplicates.
    assert write_peak < 8 << 20, write_peak
    assert read_peak < 12 << 20, read_peak


def _insert(connection: apsw.Connection, first: int, count: int, thread: str = "th_data") -> None:
    with connection:
        for n in range(first, first + count):
            record_id = f"rec_{n:06d}"
            connection.execute(
                "INSERT INTO records (id, thread, actor, act, clock, namespace, json, created_at) "
                "VALUES (?, ?, 'did:test:a', 'know', ?, 'default', ?, 0)",
                (record_id, thread, n, json.dumps({"id": record_id, "thread": thread, "clock": n})),
            )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[apsw.Connection, apsw.Connection]]:
    writer = connect_writer(tmp_path / "hub.db")
    reader = connect_reader(tmp_path / "hub.db")
    yield writer, reader
    reader.close()
    writer.close()


def test_export_reads_every_record_in_sequence_order_with_configuration_threads(
    store: tuple[apsw.Connection, apsw.Connection],
) -> None:
    writer, reader = store
    _insert(writer, 0, 30)
    _insert(writer, 30, 2, thread="th_consent")
    _insert(writer, 32, 5)

    exported = list(export_entries(reader, page=7))

    assert [row.id for row in exported] == [f"rec_{n:06d}" for n in range(37)]
    assert [row.seq for row in exported] == sorted(row.seq for row in exported)
    assert {row.thread for row in exported} == {"th_data", "th_consent"}
    assert all(json.loads(row.json)["id"] == row.id for row in exported)
    assert not reader.in_transaction


def test_export_is_a_prefix_of_the_log_while_the_writer_commits(
    store: tuple[apsw.Connection, apsw.Connection],
) -> None:
    """Commits landing between the export's pages (on another connection) are not in it, and none is torn."""
    writer, reader = store
    _insert(writer, 0, 1_000)
    exported: list[ExportedRecord] = []
    for row in export_entries(reader, page=100):
        exported.append(row)
        if len(exported) % 100 == 1:  # at the start of every page the writer commits more
            _insert(writer, 1_000 + len(exported) * 10, 10)

    assert [row.id for row in exported] == [f"rec_{n:06d}" for n in range(1_000)]
    assert not reader.in_transaction
    assert len(list(export_entries(reader))) == 1_000 + 10 * 10  # a new export sees what was committed since


def test_abandoning_an_export_ends_its_transaction(store: tuple[apsw.Connection, apsw.Connection]) -> None:
    writer, reader = store
    _insert(writer, 0, 50)
    rows = export_entries(reader, page=10)
    next(rows)
    assert reader.in_transaction
    rows.close()
    assert not reader.in_transaction


def test_exported_records_round_trip_through_a_bundle(store: tuple[apsw.Connection, apsw.Connection]) -> None:
    writer, reader = store
    _insert(writer, 0, 200)
    entries = [(f"records/{row.thread}/{row.id}.json", row.json.encode()) for row in export_entries(reader)]
    assert _read_all(_written(entries)) == entries
