"""Fetch the certificate a PostgreSQL server serves, the way a client sees it.

PostgreSQL speaks TLS only after an SSLRequest: the client sends an 8-byte packet (length
8, code 80877103), the server answers one byte, `S` (go ahead with the TLS handshake) or
`N` (TLS is off). We complete the handshake without verifying anything (we want whatever
the server presents, even an expired or self-signed certificate) and close before the
startup packet: no authentication, no backend process beyond the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass

SSL_REQUEST_CODE = 80877103
SSL_REQUEST = struct.pack("!ii", 8, SSL_REQUEST_CODE)


class HandshakeError(Exception):
    """The server could not be asked for its certificate; the message says why."""

    def __init__(self, message: str, reason: str = "HandshakeFailed") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Served:
    der: bytes
    tls_version: str
    cipher: str


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we compare fingerprints ourselves
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def fetch_served_certificate(host: str, port: int, *, within: float = 10.0,
                                   server_hostname: str | None = None) -> Served:
    """The leaf certificate (DER) the server at host:port presents after an SSLRequest."""
    try:
        return await asyncio.wait_for(_fetch(host, port, server_hostname), within)
    except TimeoutError:
        raise HandshakeError(f"no TLS answer from {host}:{port} within {within:.0f}s", "HandshakeTimeout") from None
    except OSError as exc:
        raise HandshakeError(f"TLS handshake with {host}:{port} failed: {exc}") from None


async def _fetch(host: str, port: int, server_hostname: str | None) -> Served:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(SSL_REQUEST)
        await writer.drain()
        answer = await reader.read(1)
        if answer == b"N":
            raise HandshakeError(f"{host}:{port} answered the SSLRequest with N: TLS is off (ssl = off)", "TlsOff")
        if answer != b"S":
            raise HandshakeError(f"{host}:{port} answered the SSLRequest with {answer!r}, not S or N: "
                                 "is it a PostgreSQL server?", "NotPostgres")
        await writer.start_tls(_client_context(), server_hostname=server_hostname)
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            raise HandshakeError(f"{host}:{port} presented no certificate")
        cipher = sslobj.cipher()
        return Served(der=der, tls_version=str(sslobj.version()), cipher=str(cipher[0]) if cipher else "")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2)
