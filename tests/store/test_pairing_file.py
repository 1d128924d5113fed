"""The pairings file (``spl.store.pairing``): a round trip, its mode, and what a damaged file answers."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from spl.core.pairing import Pairing, PairingBook, code_hash, new_code
from spl.store.pairing import MAX_FILE_BYTES, PairingsUnreadable, load_pairings, save_pairings


def book() -> PairingBook:
    laptop = Pairing("laptop", code_hash(new_code()), ("records:read",), "http://127.0.0.1:9100", 1.0, 601.0)
    code = new_code()
    phone = Pairing("phone", code_hash(code), ("records:read", "records:write"), "https://x.example", 2.0, 602.0)
    made = PairingBook().create(laptop, live_token=False).create(phone, live_token=False)
    return made.redeem(code, 3.0, "a" * 64, "pixel 8")[0].revoke("laptop", 4.0)[0]


def test_a_book_survives_the_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "pairings.json"
    assert load_pairings(path) == PairingBook()  # no file yet: nothing paired
    saved = book()
    save_pairings(path, saved)
    assert load_pairings(path) == saved
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [entry.name for entry in tmp_path.iterdir()] == ["pairings.json"]  # no temporary file left behind


def test_a_save_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "pairings.json"
    save_pairings(path, book())
    save_pairings(path, PairingBook())
    assert load_pairings(path) == PairingBook()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"version": 1, "pairings": [{"device": "x"}]}',
        b'{"version": 1, "pairings": [], "extra": true}',
        b'{"version": 2, "pairings": []}',
        b"[]",
    ],
)
def test_a_damaged_file_is_refused_with_the_fix(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pairings.json"
    path.write_bytes(content)
    with pytest.raises(PairingsUnreadable) as refused:
        load_pairings(path)
    assert refused.value.status == 503 and str(path) in refused.value.message
    assert "spl token revoke" in refused.value.message or "upgrade spl" in refused.value.message


def test_a_huge_file_is_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "pairings.json"
    path.write_bytes(b" " * (MAX_FILE_BYTES + 10))
    with pytest.raises(PairingsUnreadable, match="larger than"):
        load_pairings(path)


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pairings.json"
    saved = book()
    save_pairings(path, saved)

    def full_disk(source: str, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(PairingsUnreadable, match="cannot write .*No space left"):
        save_pairings(path, PairingBook())
    monkeypatch.undo()
    assert load_pairings(path) == saved
    assert [entry.name for entry in tmp_path.iterdir()] == ["pairings.json"]


def test_a_save_into_a_missing_directory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(PairingsUnreadable, match="cannot write"):
        save_pairings(tmp_path / "gone" / "pairings.json", book())


def test_a_fifo_or_a_symlink_planted_as_the_file_is_refused_without_hanging(tmp_path: Path) -> None:
    """A FIFO under the file's name used to block the worker thread forever (the pairing lock held, the daemon
    unable to stop); a symlink would be read through. Both are refused at once, naming the file."""
    planted = tmp_path / "pairings.json"
    os.mkfifo(planted)
    with pytest.raises(PairingsUnreadable, match="not a regular file"):
        load_pairings(planted)
    planted.unlink()
    save_pairings(tmp_path / "elsewhere.json", book())
    planted.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(PairingsUnreadable, match="symbolic link") as refused:
        load_pairings(planted)
    assert refused.value.status == 503 and str(planted) in refused.value.message
    fresh = book()
    save_pairings(planted, fresh)  # a save replaces the link itself, never writing through it
    assert not planted.is_symlink() and load_pairings(planted) == fresh
