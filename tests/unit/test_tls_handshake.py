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

from pgcurator.tls.handshake import SSL_REQUEST_CODE, HandshakeError, fetch_served_certificate, verify_full
from pgcurator.tls.validate import fingerprint, info_of_der
from pgcurator_devenv.certs import Issued, issue, make_ca


class FakePostgres:
    """Accepts connections; answers the 8-byte SSLRequest with `answer`, then (for S) does TLS."""

    def __init__(self, leaf: Issued, answer: bytes = b"S", tls_max: ssl.TLSVersion | None = None,
                 chain: bytes = b"") -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as d:
            cert, key = Path(d) / "c.pem", Path(d) / "k.pem"
            cert.write_bytes(leaf.cert_pem + chain)
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


def _intermediate(ca: Issued) -> Issued:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from pgcurator_devenv.certs import new_key

    key = new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "inter")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(9)
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True)
            .sign(ca.key, hashes.SHA256()))
    return Issued(cert, key)


async def test_verify_full_accepts_each_covered_name_and_ip() -> None:
    ca = make_ca()
    leaf = issue(ca, ["db.example.com", "*.pg.example.com"], ip_addresses=["127.0.0.1"])
    s = FakePostgres(leaf)
    try:
        names = ["db.example.com", "*.pg.example.com", "127.0.0.1"]
        assert await verify_full("127.0.0.1", s.port, names, ca.cert_pem.decode()) == []
        assert all(r == struct.pack("!ii", 8, SSL_REQUEST_CODE) for r in s.requests)  # PostgreSQL's preamble
    finally:
        s.close()


async def test_verify_full_refuses_what_a_libpq_client_refuses() -> None:
    ca = make_ca()
    leaf = issue(ca, ["db.example.com"], ip_addresses=["10.0.0.1"])
    s = FakePostgres(leaf)
    try:
        refused = await verify_full("127.0.0.1", s.port, ["other.example.com", "127.0.0.1", "db.example.com"],
                                    ca.cert_pem.decode())
        assert [r.name for r in refused] == ["other.example.com", "127.0.0.1"]
        assert all("verify-full client refuses" in r.message for r in refused)
        stranger = await verify_full("127.0.0.1", s.port, ["db.example.com"], make_ca("stranger").cert_pem.decode())
        assert len(stranger) == 1 and "issuer" in stranger[0].message
    finally:
        s.close()


async def test_a_matching_leaf_without_its_intermediate_is_refused() -> None:
    """The fingerprint matches, yet clients fail: the server does not send the intermediate."""
    ca = make_ca()
    inter = _intermediate(ca)
    leaf = issue(inter, ["db.example.com"])
    bare, full = FakePostgres(leaf), FakePostgres(leaf, chain=inter.cert_pem)
    try:
        served = await fetch_served_certificate("127.0.0.1", bare.port)
        assert served.der == leaf.cert.public_bytes(serialization.Encoding.DER)
        assert len(await verify_full("127.0.0.1", bare.port, ["db.example.com"], ca.cert_pem.decode())) == 1
        assert await verify_full("127.0.0.1", full.port, ["db.example.com"], ca.cert_pem.decode()) == []
    finally:
        bare.close()
        full.close()


async def test_verify_full_reports_an_unreachable_server_as_an_error() -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(HandshakeError) as err:
        await verify_full("127.0.0.1", port, ["db.example.com"], None)
    assert err.value.reason == "HandshakeFailed"
