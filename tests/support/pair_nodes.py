"""Real daemons for the federation pair suites: started with auth on and a pair-approval policy, plus the calls
every such test makes (emit, act on a pair, create a namespace).

Shared by ``tests/e2e/test_federation_pair_e2e.py`` and ``tests/e2e/test_federation_pair_attacks.py``.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from spl.daemon.launcher import DaemonProcess

__all__ = ["JSON", "Node", "act", "client", "copy_node_home", "create_namespaces", "emit", "start_node"]

JSON = {"content-type": "application/json"}  # every write route needs it, body or not (spec §15.19)


@dataclass
class Node:
    process: DaemonProcess
    did: str
    headers: dict[str, str]

    @property
    def url(self) -> str:
        return self.process.url


async def start_node(
    factory: type[DaemonProcess],
    name: str,
    *,
    approval: str = "auto",
    auto_namespaces: tuple[str, ...] = ("default",),
    min_peer_poll: float | None = None,
) -> Node:
    """A real daemon with auth on, ``federation.pair_approval`` = ``approval`` (set in its config before it starts).

    ``min_peer_poll`` lowers the responder's pull floor (60 s by default) for tests that pair both ways fast.
    """
    process = factory(name, insecure=False)
    config = process.home.load_config()
    config.federation.pair_approval = approval  # type: ignore[assignment]
    config.federation.auto_namespaces = list(auto_namespaces)
    if min_peer_poll is not None:
        config.federation.min_peer_poll_interval = min_peer_poll
    process.home.save_config(config)
    await trio.to_thread.run_sync(functools.partial(process.start, port=0))
    headers = {"authorization": f"Bearer {process.admin_token}", **JSON}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{process.url}/v1/identity", headers=headers)
    return Node(process, response.json()["did"], headers)


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=90)


async def emit(
    http: httpx.AsyncClient, node: Node, thread: str, clock: int, *, actor: str = "did:test:fp", **body: Any
) -> str:
    record = {"act": "PUT", "actor": actor, "thread": thread, "clock": clock, "body": body or {"n": clock}}
    response = await http.post(f"{node.url}/v1/records", json=record, headers=node.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def act(http: httpx.AsyncClient, node: Node, pair_id: str, action: str, **body: Any) -> dict[str, Any]:
    response = await http.post(f"{node.url}/v1/federation/pairs/{pair_id}/{action}", json=body, headers=node.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def create_namespaces(http: httpx.AsyncClient, node: Node, *names: str) -> None:
    for name in names:
        response = await http.post(f"{node.url}/v1/namespaces", json={"id": name}, headers=node.headers)
        assert response.status_code in (200, 201), response.text


def copy_node_home(source: Node, destination: Path) -> None:
    """A stopped node's home copied as a migration carries it: ``keys/``, ``config.toml``, ``hub.db*`` and the
    admin token (for the test's own calls), never ``secrets/pairs/`` (peers' tokens stay behind) nor ``run/``."""
    root = source.process.home.root
    destination.mkdir(mode=0o700)
    shutil.copytree(root / "keys", destination / "keys")
    (destination / "secrets").mkdir(mode=0o700)
    shutil.copy2(root / "secrets" / "admin.token", destination / "secrets" / "admin.token")
    for path in [root / "config.toml", *root.glob("hub.db*")]:
        shutil.copy2(path, destination / path.name)
