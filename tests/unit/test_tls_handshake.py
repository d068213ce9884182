"""The SSLRequest handshake client against a local TLS server that speaks PostgreSQL's preamble."""

from __future__ import annotations

import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from pgcurator.devenv.certs import Issued, issue, make_ca
from pgcurator.tls.handshake import SSL_REQUEST_CODE, HandshakeError, fetch_served_certificate
from pgcurator.tls.validate import fingerprint, info_of_der


class FakePostgres:
    """Accepts connections; answers the 8-byte SSLRequest with `answer`, then (for S) does TLS."""

    def __init__(self, leaf: Issued, answer: bytes = b"S", tls_max: ssl.TLSVersion | None = None) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as d:
            cert, key = Path(d) / "c.pem", Path(d) / "k.pem"
            cert.write_bytes(leaf.cert_pem)
            key.write_bytes(leaf.key_pem())
            self.ctx.load_cert_chain(cert, key)
        if tls_max is not None:
            self.ctx.maximum_version = tls_max
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                req = conn.recv(8)
                self.requests.append(req)
                conn.sendall(self.answer)
                if self.answer == b"S":
                    try:
                        with self.ctx.wrap_socket(conn, server_side=True) as tls:
                            tls.recv(1)  # until the client closes
                    except (OSError, ssl.SSLError):
                        pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def leaf() -> Issued:
    return issue(make_ca(), ["db.example.com"])


@pytest.fixture
def server(leaf: Issued) -> Iterator[FakePostgres]:
    s = FakePostgres(leaf)
    yield s
    s.close()


async def test_fetches_the_served_certificate_after_an_sslrequest(server: FakePostgres, leaf: Issued) -> None:
    served = await fetch_served_certificate("127.0.0.1", server.port)
    assert server.requests[0] == struct.pack("!ii", 8, SSL_REQUEST_CODE)
    assert served.der == leaf.cert.public_bytes(serialization.Encoding.DER)
    info = info_of_der(served.der)
    assert info.fingerprint == fingerprint(served.der)
    assert info.serial == format(leaf.cert.serial_number, "X")
    assert info.dns_names == ("db.example.com",)
    assert served.tls_version in ("TLSv1.2", "TLSv1.3") and served.cipher


async def test_reports_the_negotiated_version(leaf: Issued) -> None:
    s = FakePostgres(leaf, tls_max=ssl.TLSVersion.TLSv1_2)
    try:
        served = await fetch_served_certificate("127.0.0.1", s.port)
        assert served.tls_version == "TLSv1.2"
    finally:
        s.close()


async def test_tls_off_is_reported_as_such(leaf: Issued) -> None:
    s = FakePostgres(leaf, answer=b"N")
    try:
        with pytest.raises(HandshakeError) as err:
            await fetch_served_certificate("127.0.0.1", s.port)
        assert err.value.reason == "TlsOff" and "ssl = off" in err.value.message
    finally:
        s.close()


async def test_not_postgres(leaf: Issued) -> None:
    s = FakePostgres(leaf, answer=b"E")
    try:
        with pytest.raises(HandshakeError) as err:
            await fetch_served_certificate("127.0.0.1", s.port)
        assert err.value.reason == "NotPostgres"
    finally:
        s.close()


async def test_refused_and_silent_servers() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(HandshakeError) as err:
        await fetch_served_certificate("127.0.0.1", port)
    assert err.value.reason == "HandshakeFailed"
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers
    try:
        with pytest.raises(HandshakeError) as err:
            await fetch_served_certificate("127.0.0.1", silent.getsockname()[1], within=0.5)
        assert err.value.reason == "HandshakeTimeout"
    finally:
        silent.close()
