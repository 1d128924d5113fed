"""Device pairings on disk: ``<home>/pairings.json``, written whole and atomically (docs/pairing.md).

Why a file and not a table in ``hub.db``: a redeem must mark the code used *before* the device's token
exists (so a crash between the two can never let one code mint two tokens), and the store has exactly one
writer, the store-writer actor, whose commands are a closed set. A small file the pairing routes own,
replaced atomically (a temporary file, ``fsync``, ``rename``, ``fsync`` of the directory), gives the same
durability for a few hundred entries without a second write connection to ``hub.db``. The file holds code
hashes and token ids, never a code or a token; it is 0600 like every file of the home.

Synchronous; the routes call :func:`load_pairings` and :func:`save_pairings` in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

import msgspec

from spl.core.errors import SplError
from spl.core.pairing import MAX_PAIRINGS, Pairing, PairingBook

__all__ = ["PAIRINGS_FILE", "PairingsUnreadable", "load_pairings", "save_pairings"]

PAIRINGS_FILE = "pairings.json"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 1 << 20  # 256 entries take about 100 KiB; a bigger file is not ours


class PairingsUnreadable(SplError):
    """503: the pairings file cannot be read or written; the message names the file and the fix."""

    status = 503
    code = "PAIRINGS_UNAVAILABLE"


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    device: str
    code_hash: str
    scopes: list[str]
    url: str
    created_at: float
    expires_at: float
    redeemed_at: float | None = None
    revoked_at: float | None = None
    token_id: str | None = None
    device_label: str = ""


class _File(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    pairings: list[_Entry]


def load_pairings(path: Path) -> PairingBook:
    """The book in ``path``; an empty one when the file does not exist yet.

    Raises:
        PairingsUnreadable: the file exists but cannot be read, or is not a pairings file of this spl.
    """
    fix = (
        "move it aside and restart spl: the pairings are forgotten, while the devices' tokens keep working "
        "(`spl token list`, `spl token revoke`)"
    )
    try:
        # Not through a symlink, and without blocking: a FIFO (or a device) planted under this name would hang
        # the worker thread forever on open or read, with the pairing lock held and the daemon unable to stop.
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return PairingBook()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PairingsUnreadable(f"{path} is a symbolic link, so it is not spl's; {fix}") from None
        raise PairingsUnreadable(
            f"{path} cannot be read ({exc.strerror}); check its owner and mode (`spl doctor`)"
        ) from None
    try:
        with os.fdopen(descriptor, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise PairingsUnreadable(f"{path} is not a regular file, so it is not spl's; {fix}")
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PairingsUnreadable(
            f"{path} cannot be read ({exc.strerror}); check its owner and mode (`spl doctor`)"
        ) from None
    if len(raw) > MAX_FILE_BYTES:
        raise PairingsUnreadable(f"{path} is larger than {MAX_FILE_BYTES} bytes, so it is not spl's; {fix}")
    try:
        stored = msgspec.json.decode(raw, type=_File)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PairingsUnreadable(f"{path} is damaged ({str(exc)[:120]}); {fix}") from None
    if stored.version != FORMAT_VERSION:
        raise PairingsUnreadable(f"{path} was written by another spl (format {stored.version}); upgrade spl or {fix}")
    pairings = {
        entry.device: Pairing(
            device=entry.device,
            code_hash=entry.code_hash,
            scopes=tuple(entry.scopes),
            url=entry.url,
            created_at=entry.created_at,
            expires_at=entry.expires_at,
            redeemed_at=entry.redeemed_at,
            revoked_at=entry.revoked_at,
            token_id=entry.token_id,
            device_label=entry.device_label,
        )
        for entry in stored.pairings[:MAX_PAIRINGS]
    }
    return PairingBook(pairings)


def save_pairings(path: Path, book: PairingBook) -> None:
    """Replace ``path`` with ``book``, durably: readers and a crash see the old file or the new one, never a part.

    Raises:
        PairingsUnreadable: the file could not be written (the old one is left as it was).
    """
    document = _File(
        FORMAT_VERSION,
        [
            _Entry(
                device=pairing.device,
                code_hash=pairing.code_hash,
                scopes=list(pairing.scopes),
                url=pairing.url,
                created_at=pairing.created_at,
                expires_at=pairing.expires_at,
                redeemed_at=pairing.redeemed_at,
                revoked_at=pairing.revoked_at,
                token_id=pairing.token_id,
                device_label=pairing.device_label,
            )
            for pairing in book.listing()
        ],
    )
    data = msgspec.json.encode(document)
    directory = path.parent
    temporary: str | None = None
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)  # 0600 from the start
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        temporary = None
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)  # the rename itself survives a power cut
        finally:
            os.close(directory_fd)
    except OSError as exc:
        raise PairingsUnreadable(
            f"cannot write {path} ({exc.strerror}); free disk space or fix the home's mode (`spl doctor`), then retry"
        ) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
