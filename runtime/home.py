"""The instance home (``$SYNCROPEL_HOME``, default ``~/.syncro``) and its config file.

Layout (spec §9)::

    config.toml            instance DID, serve defaults, auth switch
    hub.db                 the record store (SQLite, WAL)
    keys/identity.key      Ed25519 seed, mode 0600
    secrets/admin.token    the local CLI's admin credential, mode 0600
    token                  a token saved with `spl token save` (mode 0600)
    run/spl.pid            pid file of a `--daemon` daemon
    logs/spl.log           the daemon's log when detached
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spl.kernel.identity import Identity

__all__ = ["Config", "Home", "HomeError", "default_home"]

DEFAULT_PORT = 9100
DEFAULT_MAX_BODY = 1024 * 1024


class HomeError(Exception):
    """The home is missing or damaged; the message says which command fixes it."""


def default_home() -> Path:
    configured = os.environ.get("SYNCROPEL_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".syncro"


@dataclass
class Config:
    did: str
    created_at: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY
    auth_required: bool = True
    heartbeat_seconds: float = 15.0
    sse_buffer: int = 1024
    # Origins a browser page may call the API from (CORS); empty = no cross-origin access at all.
    cors_origins: list[str] = field(default_factory=list)
    # At most this many client connections at once; more wait in the kernel's backlog.
    max_connections: int = 512
    # A client must finish sending its request headers within this many seconds.
    header_timeout: float = 10.0
    # Refuse writes (503 STORAGE_FULL) once hub.db would grow past this size; 0 = no cap.
    store_max_bytes: int = 0
    # Keys found in config.toml that spl no longer reads (reported by `spl doctor` and at start).
    obsolete_keys: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> str:
        return (
            "# spl instance configuration (written by `spl init`)\n"
            "[instance]\n"
            f'did = "{self.did}"\n'
            f'created_at = "{self.created_at}"\n'
            "\n[serve]\n"
            f'host = "{self.host}"\n'
            f"port = {self.port}\n"
            f"max_body_bytes = {self.max_body_bytes}\n"
            f"heartbeat_seconds = {self.heartbeat_seconds}\n"
            f"sse_buffer = {self.sse_buffer}\n"
            "# browser origins allowed to call the API (CORS); empty = none\n"
            f"cors_origins = [{', '.join(json.dumps(origin) for origin in self.cors_origins)}]\n"
            f"max_connections = {self.max_connections}\n"
            f"header_timeout = {self.header_timeout}\n"
            "\n[auth]\n"
            f"required = {'true' if self.auth_required else 'false'}\n"
            "\n[store]\n"
            "# refuse writes (503 STORAGE_FULL) past this many bytes of hub.db; 0 = no cap\n"
            f"max_bytes = {self.store_max_bytes}\n"
        )

    @classmethod
    def from_toml(cls, text: str) -> Config:
        data = tomllib.loads(text)
        instance, serve, auth = data.get("instance", {}), data.get("serve", {}), data.get("auth", {})
        return cls(
            did=str(instance["did"]),
            created_at=str(instance.get("created_at", "")),
            host=str(serve.get("host", "127.0.0.1")),
            port=int(serve.get("port", DEFAULT_PORT)),
            max_body_bytes=int(serve.get("max_body_bytes", DEFAULT_MAX_BODY)),
            heartbeat_seconds=float(serve.get("heartbeat_seconds", 15.0)),
            sse_buffer=int(serve.get("sse_buffer", 1024)),
            auth_required=bool(auth.get("required", True)),
            cors_origins=[str(origin) for origin in serve.get("cors_origins", [])],
            max_connections=int(serve.get("max_connections", 512)),
            header_timeout=float(serve.get("header_timeout", 10.0)),
            store_max_bytes=int(data.get("store", {}).get("max_bytes", 0)),
            obsolete_keys=["federation.trust_loopback"] if "trust_loopback" in data.get("federation", {}) else [],
        )


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (no window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
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
    admin_token_path = property(lambda self: self.root / "secrets" / "admin.token")
    saved_token_path = property(lambda self: self.root / "token")
    pid_path = property(lambda self: self.root / "run" / "spl.pid")
    url_path = property(lambda self: self.root / "run" / "spl.url")
    log_path = property(lambda self: self.root / "logs" / "spl.log")

    def exists(self) -> bool:
        return bool(self.config_path.exists() and self.key_path.exists())

    def load_config(self) -> Config:
        if not self.config_path.exists():
            raise HomeError(f"no spl home at {self.root}: run `spl init` first (or set SYNCROPEL_HOME)")
        try:
            return Config.from_toml(self.config_path.read_text())
        except (tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
            raise HomeError(f"{self.config_path} is damaged ({exc}); fix it or run `spl init --force`") from None

    def save_config(self, config: Config) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config.to_toml())

    def load_identity(self) -> Identity:
        try:
            seed = self.key_path.read_bytes()
        except FileNotFoundError:
            raise HomeError(f"no identity key at {self.key_path}: run `spl init` or `spl identity generate`") from None
        if len(seed) != 32:
            raise HomeError(f"{self.key_path} is not a 32-byte Ed25519 seed; run `spl identity generate`")
        return Identity(seed)

    def save_identity(self, identity: Identity) -> None:
        _write_private(self.key_path, identity.seed)
        os.chmod(self.key_path.parent, 0o700)

    def save_secret(self, path: Path, text: str) -> None:
        _write_private(path, text.encode("ascii"))
        os.chmod(path.parent, 0o700) if path.parent != self.root else None

    def read_secret(self, path: Path) -> str | None:
        try:
            return path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def new_config(self, identity: Identity) -> Config:
        return Config(did=identity.did, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
