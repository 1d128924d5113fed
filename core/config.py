"""The instance configuration (``config.toml``) as a value: pure, no file access.

``spl.daemon.home`` reads and writes the file; this module says what it holds and how text becomes a
:class:`Config` and back.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_MAX_BODY", "DEFAULT_PORT", "Config"]

DEFAULT_PORT = 9100
DEFAULT_MAX_BODY = 1024 * 1024


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
