"""Discovery end to end (issue 14, acceptance 1): each method finds a peer, every manifest is verified, nothing pairs.

One daemon pair for the whole module, auth on: A serves a did:sync directory and its did:web document, both
announce themselves by mDNS. A local HTTPS server with a test CA (``trustme``) stands in for a did:web domain.
The CLI runs as the operator would (``spl fleet sync peers discover``) against B's home. Waits are polls of an
answer with a deadline (mDNS needs ~1.5 s to probe a name before announcing it); nothing sleeps blindly.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from cli_support import Cli, cli_for, free_port

from spl.daemon.launcher import DaemonProcess

MDNS_DEADLINE = 20.0


@dataclass
class Pair:
    a: DaemonProcess
    b: DaemonProcess
    a_did: str
    b_did: str
    web: str  # the did:web domain the HTTPS server answers for: 127.0.0.1:<port>
    ca_file: Path

    def admin(self, node: DaemonProcess) -> dict[str, str]:
        return {"authorization": f"Bearer {node.admin_token}"}


class _DidWebHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``routes``: path → body (the did.json of A, a tampered manifest)."""

    routes: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        body = self.routes.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root: Path = tmp_path_factory.mktemp("discovery")
    ca = trustme.CA()
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _DidWebHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    started: list[DaemonProcess] = []
    try:
        for name, directory in (("a", True), ("b", False)):
            node = DaemonProcess(root / name, insecure=False)
            config = node.home.load_config()
            config.sync.discovery.mdns_listen = True  # test daemons start with it off (launcher.quiet_discovery)
            config.sync.discovery.mdns_broadcast = True
            config.sync.discovery.serve_directory = directory
            config.sync.discovery.did_web_domain = "alice.test" if directory else None
            config.sync.discovery.advertise_namespaces = ["default", "acme-corp"] if directory else ["default"]
            config.federation.ca_file = str(ca_file)
            node.home.save_config(config)
            started.append(node)
            node.start(port=0)
        a, b = started
        dids = [
            httpx.get(f"{node.url}/v1/identity", headers={"authorization": f"Bearer {node.admin_token}"}).json()["did"]
            for node in started
        ]
        yield Pair(a, b, dids[0], dids[1], f"127.0.0.1:{server.server_address[1]}", ca_file)
    finally:
        for node in started:
            node.stop()
        server.shutdown()
        server.server_close()


def _mdns(node: DaemonProcess, want: str) -> dict[str, Any]:
    """Poll ``node``'s mDNS listing until ``want`` is in it (or the listener says mDNS cannot run here)."""
    deadline = time.monotonic() + MDNS_DEADLINE
    while True:
        answer = httpx.get(
            f"{node.url}/v1/discovery/mdns", headers={"authorization": f"Bearer {node.admin_token}"}
        ).json()
        if answer["listener"]["error"]:
            pytest.skip(f"mDNS cannot run on this host: {answer['listener']['error']}")
        if any(peer["did"] == want for peer in answer["data"]) or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)  # a poll interval: the announcement's arrival is what the loop waits for


def test_two_daemons_find_each_other_by_mdns(pair: Pair) -> None:
    heard_by_b = _mdns(pair.b, pair.a_did)
    heard_by_a = _mdns(pair.a, pair.b_did)
    (a_on_b,) = [peer for peer in heard_by_b["data"] if peer["did"] == pair.a_did]
    assert a_on_b["endpoint"] == pair.a.url and a_on_b["namespaces"] == ["default", "acme-corp"] and a_on_b["last_seen"]
    assert any(peer["did"] == pair.b_did for peer in heard_by_a["data"])
    assert heard_by_b["listener"]["broadcasting"] and heard_by_b["listener"]["listening"]
    assert pair.b_did not in [peer["did"] for peer in heard_by_b["data"]]  # not itself
    assert httpx.get(f"{pair.b.url}/v1/discovery/mdns").status_code == 401  # federation:manage, not open


def test_the_directory_is_open_verifies_registrations_and_is_off_unless_enabled(pair: Pair) -> None:
    manifest = httpx.get(f"{pair.b.url}/.well-known/syncropel").json()
    registered = httpx.post(f"{pair.a.url}/v1/directory", json=manifest)  # no token: the signature authenticates
    assert registered.status_code == 201, registered.text
    assert registered.json()["did"] == pair.b_did and registered.json()["endpoint"] == pair.b.url
    resolved = httpx.get(f"{pair.a.url}/v1/directory/resolve", params={"did": pair.b_did}).json()
    assert resolved["endpoint"] == pair.b.url
    manifest["federation_manifest"]["federation"]["endpoint"] = "http://mallory.example:9100"
    forged = httpx.post(f"{pair.a.url}/v1/directory", json=manifest)
    assert forged.status_code == 400 and forged.json()["code"] == "MANIFEST_INVALID"
    huge = httpx.post(
        f"{pair.a.url}/v1/directory", content=b"[" * 100_000, headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413
    unknown = httpx.get(f"{pair.a.url}/v1/directory/resolve", params={"did": "did:key:z6Mknope"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "DID_NOT_REGISTERED"
    off = httpx.get(f"{pair.b.url}/v1/directory")
    assert off.status_code == 404 and off.json()["code"] == "DIRECTORY_DISABLED"


def test_the_daemon_serves_its_did_web_document(pair: Pair) -> None:
    document = httpx.get(f"{pair.a.url}/.well-known/did.json").json()  # open, like all of /.well-known/
    assert document["id"] == "did:web:alice.test" and document["alsoKnownAs"] == [pair.a_did]
    assert document["service"][0]["serviceEndpoint"] == pair.a.url
    assert httpx.get(f"{pair.b.url}/.well-known/did.json").json()["code"] == "DID_WEB_UNCONFIGURED"


def test_every_method_finds_a_verified_peer_and_nothing_pairs(pair: Pair) -> None:
    a_cli, b_cli = cli_for(pair.a), cli_for(pair.b)
    # did:web: A's document, written by the CLI, served over HTTPS under a test CA.
    document = a_cli("identity", "publish-did-web", "--domain", pair.web, "--endpoint", pair.a.url).ok().json()
    _DidWebHandler.routes["/.well-known/did.json"] = json.dumps(document).encode()
    # did:sync: A registers itself in its own directory.
    a_cli("fleet", "sync", "peers", "register", "--directory", pair.a.url).ok()
    # static: A by URL and DID, A under B's DID (a lie) and a port nothing listens on.
    config = pair.b.home.load_config()
    text = pair.b.home.config_path.read_text()
    text += (
        f'\n[[sync.peers]]\nurl = "{pair.a.url}"\ndid = "{pair.a_did}"\nname = "lab"\n'
        f'\n[[sync.peers]]\nurl = "{pair.a.url}"\ndid = "{pair.b_did}"\n'
        f'\n[[sync.peers]]\nurl = "http://127.0.0.1:{free_port()}"\n'
    )
    pair.b.home.config_path.write_text(text)
    assert len(pair.b.home.load_config().sync.peers) == 3 and config.sync.peers == []
    _mdns(pair.b, pair.a_did)
    found = b_cli(
        "fleet", "sync", "peers", "discover", "-o", "json", "--domain", pair.web, "--directory", pair.a.url
    ).ok()
    rows = found.json()["data"]
    verified = {row["method"] for row in rows if row["verified"] and pair.a_did in (row["did"], row["manifest_did"])}
    assert verified == {"mdns", "did-web", "did-sync", "static"}, rows
    (web,) = [row for row in rows if row["method"] == "did-web"]
    assert web["did"] == f"did:web:{pair.web.replace(':', '%3A')}" and web["manifest_did"] == pair.a_did
    liar = [row for row in rows if row["method"] == "static" and row["did"] == pair.b_did]
    assert len(liar) == 1 and not liar[0]["verified"] and "not by" in liar[0]["reason"]
    dead = [row for row in rows if row["method"] == "static" and row["did"] is None]
    assert len(dead) == 1 and not dead[0]["verified"] and "unreachable" in dead[0]["reason"]
    # Discovery never creates a pair, on either side.
    for node in (pair.a, pair.b):
        for path in ("/v1/sync/pairs", "/v1/federation/pairs"):
            assert httpx.get(f"{node.url}{path}", headers=pair.admin(node)).json()["data"] == [], path
    # A directory lists by the namespaces a peer's signed manifest advertises ([sync.discovery]
    # advertise_namespaces): seed 002's `--method did-sync --namespace acme-corp`.
    by_namespace = [
        b_cli(
            "fleet",
            "sync",
            "peers",
            "discover",
            "--method",
            "did-sync",
            "--namespace",
            name,
            "--directory",
            pair.a.url,
            "-o",
            "json",
        )
        .ok()
        .json()["data"]
        for name in ("acme-corp", "nobody")
    ]
    assert [row["manifest_did"] for row in by_namespace[0] if row["verified"]] == [pair.a_did], by_namespace[0]
    assert by_namespace[1] == []
    text_output = b_cli("fleet", "sync", "peers", "discover", "--method", "static").ok()
    assert "NO: " in text_output.out and "yes" in text_output.out


def test_did_web_needs_a_trusted_certificate(pair: Pair) -> None:
    config = pair.a.home.load_config()
    assert config.federation.ca_file is not None
    text = pair.a.home.config_path.read_text()
    pair.a.home.config_path.write_text(text.replace(f'ca_file = "{pair.ca_file}"', ""))
    try:
        refused = cli_for(pair.a)("fleet", "sync", "peers", "discover", "--method", "did-web", "--domain", pair.web)
    finally:
        pair.a.home.config_path.write_text(text)
    assert refused.code == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.err


def test_discover_verifies_one_peer_and_refuses_a_tampered_manifest(pair: Pair) -> None:
    cli: Cli = cli_for(pair.b)
    shown = cli("discover", "--peer-url", pair.a.url, "-o", "json").ok().json()
    assert shown["did"] == pair.a_did and shown["verified"] and "sync" in shown["capabilities"]
    assert shown["endpoint"] == pair.a.url and shown["namespaces"] == ["default", "acme-corp"]
    manifest = httpx.get(f"{pair.a.url}/.well-known/syncropel").json()
    manifest["federation_manifest"]["advertises"]["namespaces"] = ["stolen"]
    _DidWebHandler.routes["/tampered/.well-known/syncropel"] = json.dumps(manifest).encode()
    refused = cli("discover", "--peer-url", f"https://{pair.web}/tampered")
    assert refused.code == 1 and "does not verify" in refused.err
