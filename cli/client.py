"""How CLI commands reach a daemon: URL, credential, and error handling in one place.

The URL comes from ``--url``, ``$SPL_SERVE_URL``, the running daemon's ``run/spl.url``,
then ``http://127.0.0.1:9100``. The credential from ``$SPL_TOKEN``, a token saved with
``spl token save``, then the home's admin credential written by ``spl init`` — so the
local CLI can always administer its own daemon.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from spl.runtime.home import Home

__all__ = [
    "CliError",
    "DaemonClient",
    "DaemonError",
    "DaemonUnreachable",
    "Reply",
    "call",
    "resolve_token",
    "resolve_url",
]


class CliError(Exception):
    """A failure to show the user (one line, names the fix); exit status 1."""


def resolve_url(home: Home, explicit: str | None = None) -> str:
    if explicit:
        return explicit.rstrip("/")
    configured = os.environ.get("SPL_SERVE_URL")
    if configured:
        return configured.rstrip("/")
    written = home.read_secret(home.url_path)
    if written:
        return written.rstrip("/")
    try:
        port = home.load_config().port
    except Exception:
        port = 9100
    return f"http://127.0.0.1:{port}"


def resolve_token(home: Home) -> str | None:
    return (
        os.environ.get("SPL_TOKEN")
        or home.read_secret(home.saved_token_path)
        or home.read_secret(home.admin_token_path)
    )


@dataclass
class DaemonClient:
    url: str
    token: str | None
    timeout: float = 30.0

    @classmethod
    def for_home(cls, home: Home, url: str | None = None) -> DaemonClient:
        return cls(resolve_url(home, url), resolve_token(home))

    def _headers(self) -> dict[str, str]:
        return {"x-api-key": self.token} if self.token else {}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; returns parsed JSON or raises CliError with the daemon's message."""
        return call(self, method, path, json_body=kwargs.get("json"), params=kwargs.get("params")).payload

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, payload: Any) -> Any:
        return self.request("POST", path, json=payload)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


class DaemonError(CliError):
    """The daemon answered with an error envelope; ``code`` is its machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code


class DaemonUnreachable(CliError):
    """Nothing accepted the connection at the daemon URL."""


@dataclass(frozen=True)
class Reply:
    status: int
    payload: Any


def call(
    client: DaemonClient,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    params: dict[str, Any] | None = None,
) -> Reply:
    """One request; a 4xx/5xx raises :class:`DaemonError`, no connection :class:`DaemonUnreachable`."""
    headers = {"x-api-key": client.token} if client.token else {}
    kwargs: dict[str, Any] = {}
    if json_body is not None:
        kwargs["json"] = json_body
    if params:
        kwargs["params"] = {key: value for key, value in params.items() if value is not None}
    try:
        with httpx.Client(base_url=client.url, timeout=client.timeout, headers=headers) as http:
            response = http.request(method, path, **kwargs)
    except httpx.ConnectError:
        raise DaemonUnreachable(
            f"no daemon answers at {client.url}: start one with `spl serve` (or set SPL_SERVE_URL)"
        ) from None
    except httpx.TimeoutException:
        raise CliError(f"the daemon at {client.url} did not answer within {client.timeout:.0f}s") from None
    except httpx.HTTPError as exc:
        raise CliError(f"request to {client.url} failed: {exc.__class__.__name__}") from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 400:
        if isinstance(payload, dict):
            code = str(payload.get("code") or payload.get("error") or "ERROR")
            message = str(payload.get("message", response.text[:200]))
            raise DaemonError(response.status_code, code, message)
        raise DaemonError(response.status_code, f"HTTP {response.status_code}", response.text[:200])
    return Reply(response.status_code, payload)
