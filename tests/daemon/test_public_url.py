"""What a daemon advertises to peers: ``[serve] public_url`` when set, else the bound URL made dialable.

The operations review found a ``--host 0.0.0.0`` daemon advertising ``http://127.0.0.1:…`` in its manifest and
``endpoint_url`` with no way to say otherwise, so a peer on another machine was handed a URL that could only ever
reach itself.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from spl.daemon.launcher import DaemonProcess


def advertised(daemon: DaemonProcess) -> tuple[str, str, str]:
    identity = httpx.get(f"{daemon.url}/v1/identity", timeout=5).json()
    manifest = httpx.get(f"{daemon.url}/.well-known/syncropel", timeout=5).json()["federation_manifest"]
    return identity["endpoint_url"], manifest["federation"]["endpoint"], manifest["federation"]["pair_endpoint"]


def test_public_url_is_what_peers_are_told(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home")
    config = daemon.home.load_config()
    config.public_url = "https://spl.example.org/steward/"
    daemon.home.save_config(config)
    try:
        daemon.start(port=0)
        endpoint, manifest_endpoint, pair_endpoint = advertised(daemon)
        # This home's CLI still finds the daemon where it serves, not behind the public name.
        run_file_url = daemon.home.url_path.read_text().strip()
    finally:
        daemon.kill()
    assert endpoint == manifest_endpoint == "https://spl.example.org/steward"
    assert pair_endpoint == "https://spl.example.org/steward/v1/federation/pair"
    assert run_file_url == f"http://127.0.0.1:{daemon.port}"


def test_without_public_url_a_wildcard_bind_is_advertised_as_loopback(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home", insecure=False, extra_args=("--host", "0.0.0.0"))
    try:
        daemon.start(port=0)
        endpoint, manifest_endpoint, _ = advertised(daemon)
    finally:
        daemon.kill()
    assert endpoint == manifest_endpoint == f"http://127.0.0.1:{daemon.port}"
