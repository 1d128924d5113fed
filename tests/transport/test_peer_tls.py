"""A peer's HTTPS certificate is always verified: refused when no trusted CA signed it, accepted once the operator
adds the signing CA (``federation.ca_file``). There is no switch that turns verification off.

The certificates are made for the test with the ``openssl`` command (a CA, and a server certificate for
127.0.0.1 it signs); the peer is a real HTTPS server on loopback serving a signed manifest.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spl.core.feed import PeerError
from spl.core.identity import Identity
from spl.core.manifest import federation_manifest, signed_manifest_did
from spl.transport.peer import PeerPool

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make certificates"
)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("tls")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=spl test CA",
        cwd=where,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=where,
    )
    (where / "ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
        cwd=where,
    )
    return where


@pytest.fixture
def https_peer(certificates: Path) -> Iterator[tuple[str, Identity]]:
    identity = Identity.generate()
    holder: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(federation_manifest(identity, endpoint=holder["url"])).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    holder["url"] = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["url"], identity
    finally:
        server.shutdown()
        server.server_close()


async def test_a_certificate_no_trusted_ca_signed_is_refused(https_peer: tuple[str, Identity]) -> None:
    url, _ = https_peer
    async with PeerPool() as pool:
        with pytest.raises(PeerError) as refused:
            await pool.client(url).manifest_body()
    assert refused.value.code == "TLS_UNVERIFIED" and "federation.ca_file" in str(refused.value)


async def test_the_operators_ca_makes_the_peer_trusted(https_peer: tuple[str, Identity], certificates: Path) -> None:
    url, identity = https_peer
    async with PeerPool(ca_file=str(certificates / "ca.pem")) as pool:
        body = await pool.client(url).manifest_body()
    did, _ = signed_manifest_did(body, where=url, now=time.time())
    assert did == identity.did
