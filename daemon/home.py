"""The instance home (``$SYNCROPEL_HOME``, default ``~/.syncro``): its files, their modes, and its run lock.

Layout (spec §9); the home and every directory in it are 0700, every file 0600, because the store and the
config hold everything the instance knows and nothing in them is meant for other local users::

    config.toml            instance DID, serve defaults, auth switch
    hub.db                 the record store (SQLite, WAL: also hub.db-wal, hub.db-shm)
    keys/identity.key      Ed25519 seed
    pairings.json          device pairings (spl pair): code hashes, device token ids
    secrets/admin.token    the local CLI's admin credential
    secrets/pairs/         peers' tokens, one file per pair
    token                  a token saved with `spl token save`
    run/spl.lock           flock()ed by the daemon for its whole life: one daemon per home
    run/spl.pid            the daemon's pid, written as soon as it holds the lock
    run/spl.url            the daemon's URL, written once it listens
    logs/spl.log           the daemon's log when detached

``DaemonLock`` is what makes "the daemon of this home" a fact rather than a guess: a daemon takes it before it
opens the store or writes a run file, and the kernel drops it when the process ends, however it ends. So the run
files are trusted only while the lock is held (``Home.running``); after a ``kill -9`` they are stale and ignored.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spl.core.config import Config, ConfigError
from spl.core.identity import Identity, InstanceIdentity
from spl.core.rotation import MAX_ROTATIONS, RotationInvalid, verify_chain

__all__ = [
    "config_problem",
    "pid_alive",
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "DaemonLock",
    "Home",
    "HomeBusy",
    "HomeError",
    "LooseMode",
    "RunningDaemon",
    "default_home",
]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# How long a starting daemon waits for a lock held by a process that has not said who it is: another
# daemon in its first milliseconds, or a CLI probing the lock (``Home.running``), which lets go at once.
LOCK_SETTLE_SECONDS = 2.0


class HomeError(Exception):
    """The home is missing or damaged; the message says which command fixes it."""


class HomeBusy(HomeError):
    """Another daemon holds this home's run lock; the message names it and how to stop it."""


def default_home() -> Path:
    configured = os.environ.get("SYNCROPEL_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".syncro"


def config_problem(path: Path, error: ConfigError) -> str:
    """One line for a config file spl refuses: the file, the key and what it should be, and how to check."""
    return f"{path}: {error.problem}; fix it, then check with `spl config validate`"


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with mode 0600 from the first byte (no window).

    The temporary file has a unique name in the same directory (``mkstemp`` creates it 0600), so two writers
    never share one; readers see the old file or the new one, never a part.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, root: Path | None = None) -> Home:
        return cls((root or default_home()).expanduser().resolve())

    config_path = property(lambda self: self.root / "config.toml")
    db_path = property(lambda self: self.root / "hub.db")
    key_path = property(lambda self: self.root / "keys" / "identity.key")
    # The rotation chain (spl.core.rotation): every statement, in order; absent until the first `spl identity rotate`.
    rotations_path = property(lambda self: self.root / "keys" / "rotations.json")
    next_key_path = property(lambda self: self.root / "keys" / "next.key")  # a rotation half-way (see save_rotation)
    admin_token_path = property(lambda self: self.root / "secrets" / "admin.token")
    saved_token_path = property(lambda self: self.root / "token")
    pid_path = property(lambda self: self.root / "run" / "spl.pid")
    lock_path = property(lambda self: self.root / "run" / "spl.lock")
    url_path = property(lambda self: self.root / "run" / "spl.url")
    log_path = property(lambda self: self.root / "logs" / "spl.log")

    def exists(self) -> bool:
        return bool(self.config_path.exists() and self.key_path.exists())

    def load_config(self) -> Config:
        """This home's config, or a :class:`HomeError` naming the bad key and how to check a fix.

        A damaged config is never "fixed" by ``spl init --force``: that would throw away every setting to
        correct one typo, so the message points at the key and ``spl config validate`` instead.
        """
        return self._decode_config(self.config_text())

    def config_text(self) -> str:
        """The text of ``config.toml`` as it is on disk."""
        try:
            return str(self.config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HomeError(f"no spl home at {self.root}: run `spl init` first (or set SYNCROPEL_HOME)") from None
        except UnicodeDecodeError:
            raise HomeError(f"{self.config_path} is not UTF-8 text; fix it, then run `spl config validate`") from None

    def _decode_config(self, text: str) -> Config:
        try:
            return Config.from_toml(text)
        except ConfigError as exc:
            raise HomeError(config_problem(self.config_path, exc)) from None

    def save_config(self, config: Config) -> None:
        """Write ``config`` over the file as it is: comments, layout and sections spl does not read survive.

        A file that is not TOML any more (or missing) is written afresh. Atomic, and 0600 from the first byte.
        """
        try:
            previous: str | None = self.config_path.read_text(encoding="utf-8")
        except (FileNotFoundError, UnicodeDecodeError):
            previous = None
        try:
            text = config.to_toml(previous)
        except ConfigError as exc:
            if exc.key is not None:
                raise HomeError(f"not saving {self.config_path}: {exc}") from None
            text = config.to_toml()  # the old text is not TOML: nothing in it can be kept
        _write_private(self.config_path, text.encode("utf-8"))

    def write_config_text(self, text: str) -> Config:
        """Replace ``config.toml`` with ``text`` once it decodes (``spl config set``); returns what it says."""
        config = self._decode_config(text)
        _write_private(self.config_path, text.encode("utf-8"))
        return config

    def load_identity(self) -> Identity:
        try:
            seed = self.key_path.read_bytes()
        except FileNotFoundError:
            raise HomeError(f"no identity key at {self.key_path}: run `spl init` or `spl identity generate`") from None
        if len(seed) != 32:
            raise HomeError(f"{self.key_path} is not a 32-byte Ed25519 seed; run `spl identity generate`")
        return Identity(seed)

    def save_identity(self, identity: Identity) -> None:
        """A new identity (``spl init --force``, ``spl identity generate``, an import's): a new identifier too, so
        the rotation chain of the old one goes."""
        _write_private(self.key_path, identity.seed)
        os.chmod(self.key_path.parent, 0o700)
        self.rotations_path.unlink(missing_ok=True)
        self.next_key_path.unlink(missing_ok=True)

    def load_rotations(self) -> list[dict[str, Any]]:
        """The rotation chain as stored (unchecked: :meth:`load_instance_identity` verifies it); [] before any."""
        try:
            text = self.rotations_path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            statements = json.loads(text)
        except ValueError:
            statements = None
        if not isinstance(statements, list) or len(statements) > MAX_ROTATIONS:
            raise HomeError(
                f"{self.rotations_path} is not a list of rotation statements; restore it from a backup of keys/"
            )
        return statements

    def save_rotation(self, identity: Identity, statements: Sequence[dict[str, Any]]) -> None:
        """Make ``identity`` the signing key, ``statements`` (ending with the one naming it) the chain.

        Three atomic steps, so a crash anywhere leaves a home that starts: the new key to ``next.key``, then the
        chain, then ``next.key`` over ``identity.key``. A crash before the chain is written leaves the old key and
        chain (``next.key`` is dropped at the next start); after it, the next start finishes the rename. The old
        key's seed is gone once replaced: a retired key can still verify (its public key is in the chain) but
        never signs again.
        """
        _write_private(self.next_key_path, identity.seed)
        _write_private(self.rotations_path, json.dumps(list(statements), indent=1).encode("utf-8"))
        os.replace(self.next_key_path, self.key_path)

    def _finish_rotation(self) -> None:
        """A rotation a crash cut between its chain and its key rename: finish it, or drop an unrecorded key."""
        try:
            seed = self.next_key_path.read_bytes()
        except FileNotFoundError:
            return
        statements = self.load_rotations()
        if len(seed) == 32 and statements and statements[-1].get("next_key") == Identity(seed).did:
            os.replace(self.next_key_path, self.key_path)
        else:
            self.next_key_path.unlink(missing_ok=True)

    def load_instance_identity(self, did: str) -> tuple[InstanceIdentity, str | None]:
        """The daemon's identity for the instance ``did`` (config ``instance.did``): its key and rotation chain,
        and a problem (None when there is none) when the key is not the chain's current one.

        Such a home still serves (its records stay readable) but no peer will accept its manifest: the key was
        replaced by hand, or keys/ restored from two different backups. The problem says how to fix it.
        """
        self._finish_rotation()
        key = self.load_identity()
        statements = self.load_rotations()
        problem = None
        try:
            keys = verify_chain(did, statements)
        except RotationInvalid as exc:
            keys, statements = (did,), []
            problem = f"{self.rotations_path} does not link {did} to a key: {exc.message}"
        if keys[-1] != key.did:
            problem = problem or (
                f"the key in {self.key_path} ({key.did}) is not the current key of {did}'s rotation chain "
                f"({keys[-1]}): peers will refuse this daemon's manifest. Restore keys/ from a backup, or run "
                "`spl init --force` for a new identity (every pair must then be made again)"
            )
            keys = (*keys, key.did)
        return InstanceIdentity(key.seed, did=did, keys=keys, statements=statements), problem

    def save_secret(self, path: Path, text: str) -> None:
        _write_private(path, text.encode("ascii"))
        os.chmod(path.parent, 0o700) if path.parent != self.root else None

    def read_secret(self, path: Path) -> str | None:
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def new_config(self, identity: Identity) -> Config:
        return Config.fresh(identity.did, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    # -- file modes --------------------------------------------------------------------------

    def _private_paths(self) -> Iterator[tuple[Path, int]]:
        """Every path of the home that exists, with the mode it should have (directories first)."""
        directories = [self.root, *(self.root / name for name in ("keys", "secrets", "run", "logs"))]
        directories.append(self.root / "secrets" / "pairs")
        for directory in directories:
            if directory.is_dir():
                yield directory, PRIVATE_DIR
        files = [self.config_path, self.saved_token_path, self.key_path, self.admin_token_path, self.rotations_path]
        files.append(self.root / "pairings.json")  # device pairings: code hashes and token ids (docs/pairing.md)
        files += [self.root / name for name in ("hub.db", "hub.db-wal", "hub.db-shm")]
        for directory in (self.root / "logs", self.root / "run", self.root / "secrets" / "pairs"):
            if directory.is_dir():
                files += sorted(directory.iterdir())
        for path in files:
            if path.is_file() and not path.is_symlink():
                yield path, PRIVATE_FILE

    def loose_modes(self) -> list[LooseMode]:
        """The home's paths that others (group or world) may read, write or enter, with what they should be."""
        loose = []
        for path, wanted in self._private_paths():
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except OSError:
                continue  # gone meanwhile (a log rotated, a run file removed)
            if mode & ~wanted & 0o777:
                loose.append(LooseMode(path, mode, wanted))
        return loose

    def tighten(self) -> list[LooseMode]:
        """Make the home private (directories 0700, files 0600); returns what was looser before.

        Homes created before spl set its umask have ``hub.db`` 0644 in a 0755 home: any local user could read
        every record. A daemon calls this at start and ``spl init`` when it is done.
        """
        loose = self.loose_modes()
        for entry in loose:
            try:
                os.chmod(entry.path, entry.wanted)
            except FileNotFoundError:
                pass
        return loose

    # -- the daemon of this home ----------------------------------------------------------------

    def running(self) -> RunningDaemon | None:
        """The daemon that holds this home's run lock, or None when no process holds it.

        A lock nobody holds means the run files, if any, are left over from a daemon that died (``kill -9``):
        their URL may by now belong to anything, so they are ignored. The check takes the lock shared and
        non-blocking for a moment: that conflicts only with a daemon's exclusive hold, never with another CLI's
        check, and ``DaemonLock.acquire`` tolerates it.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None  # no lock file: no daemon ever ran here (or the home is not ours to read)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._holder(_read_pid(fd))
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _holder(self, pid: int | None) -> RunningDaemon:
        """What is known of the daemon holding the lock: the pid it wrote there (if alive) and its URL.

        The run files count only when ``run/spl.pid`` names the holder: the daemon removes a dead one's URL
        before it writes its pid, so a URL read after a matching pid is the holder's own.
        """
        if pid is None or not pid_alive(pid):
            return RunningDaemon(pid=None, url=None)  # it took the lock a moment ago and has not said more yet
        text = self.read_secret(self.pid_path)
        if text != str(pid):
            return RunningDaemon(pid=pid, url=None)
        url = self.read_secret(self.url_path)
        return RunningDaemon(pid=pid, url=url.rstrip("/") if url else None)


@dataclass(frozen=True)
class LooseMode:
    """A path of the home with a mode looser than spl wants."""

    path: Path
    mode: int
    wanted: int

    def describe(self) -> str:
        return f"{self.path} is {self.mode:04o} (want {self.wanted:04o})"


@dataclass(frozen=True)
class RunningDaemon:
    """The process holding a home's run lock.

    Attributes:
        pid: Its pid, or None in the first moments after it took the lock.
        url: The URL it serves on, or None until it listens.
    """

    pid: int | None
    url: str | None

    def describe(self, home: Home) -> str:
        """``an spl daemon already runs for H (pid P, URL)``: the start of a one-line refusal."""
        who = f"pid {self.pid}" if self.pid is not None else "pid unknown"
        where = self.url or "not listening yet"
        return f"an spl daemon already runs for {home.root} ({who}, {where})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, run by another user
    return True


def _read_pid(fd: int) -> int | None:
    """The pid a lock holder wrote into the lock file (see ``DaemonLock.acquire``)."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class DaemonLock:
    """The run lock of a home: ``flock(LOCK_EX)`` on ``run/spl.lock``, held by one daemon for its whole life.

    The kernel releases a flock when the process ends, so a crashed daemon never leaves a home locked. The file
    is never deleted (deleting a lock file lets two processes lock two different files); it holds the holder's
    pid, which is how a refused daemon names the running one.
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and write this process's pid into it.

        Raises:
            HomeBusy: Another daemon holds the lock; the message names its pid and URL and the fix.
        """
        if self._fd is not None:
            return
        path = self.home.lock_path
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            self._lock(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _lock(self, fd: int) -> None:
        """``flock`` without blocking; while the holder has not written its pid yet, try again for a moment.

        A holder without a (live) pid is either a daemon that took the lock microseconds ago or a CLI's
        ``Home.running`` probe, which lets go at once. Both settle well within ``LOCK_SETTLE_SECONDS``;
        a holder that names a live pid is a running daemon and is refused at once.
        """
        deadline = time.monotonic() + LOCK_SETTLE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = self.home._holder(_read_pid(fd))
                if holder.pid is not None or time.monotonic() >= deadline:
                    raise HomeBusy(f"{holder.describe(self.home)}; stop it with `spl serve --stop`") from None
                time.sleep(0.01)  # no notification exists for "a flock was released": poll briefly

    def release(self) -> None:
        """Clear the pid and let go (the process ending does the same)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock
