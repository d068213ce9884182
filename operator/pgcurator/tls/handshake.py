"""Fetch the certificate a PostgreSQL server serves, the way a client sees it.

PostgreSQL speaks TLS only after an SSLRequest: the client sends an 8-byte packet (length
8, code 80877103), the server answers one byte, `S` (go ahead with the TLS handshake) or
`N` (TLS is off). `fetch_served_certificate` completes the handshake without verifying
anything (we want whatever the server presents, even an expired or self-signed certificate);
`verify_full` connects as a libpq `sslmode=verify-full` client does: the chain must lead to the
given CA (the client's sslrootcert) and the certificate must carry the name. Both close before
the startup packet: no authentication, no backend process beyond the handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import Awaitable, Sequence
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


def verify_full_context(ca_pem: str | None) -> ssl.SSLContext:
    """What libpq sets up for sslmode=verify-full: peer verification against sslrootcert (None: the
    system store, as sslrootcert=system) and a host name check; no partial chains, no strict mode."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem is None:
        ctx.load_default_certs()
    else:
        ctx.load_verify_locations(cadata=ca_pem)
    return ctx


async def fetch_served_certificate(host: str, port: int, *, within: float = 10.0,
                                   server_hostname: str | None = None) -> Served:
    """The leaf certificate (DER) the server at host:port presents after an SSLRequest."""
    return await _guarded(host, port, within, _fetch(host, port, _client_context(), server_hostname))


@dataclass(frozen=True)
class ClientRefusal:
    name: str  # the DNS name or IP the client asked for
    message: str


async def verify_full(host: str, port: int, names: Sequence[str], ca_pem: str | None, *,
                      within: float = 10.0) -> list[ClientRefusal]:
    """Connect once per name as a verify-full client would; the names it refuses, and why.

    A wildcard name (`*.a.b`) is checked as `x-pgcurator-probe.a.b`. HandshakeError when the server
    cannot be asked at all (connection refused, TLS off, ...)."""
    refusals = []
    ctx = verify_full_context(ca_pem)
    for name in names:
        check = "x-pgcurator-probe" + name[1:] if name.startswith("*.") else name
        try:
            await _guarded(host, port, within, _fetch(host, port, ctx, check))
        except HandshakeError as exc:
            if exc.reason != "ClientRefused":
                raise
            refusals.append(ClientRefusal(name, exc.message))
    return refusals


async def _guarded(host: str, port: int, within: float, work: Awaitable[Served]) -> Served:
    try:
        return await asyncio.wait_for(work, within)
    except TimeoutError:
        raise HandshakeError(f"no TLS answer from {host}:{port} within {within:.0f}s", "HandshakeTimeout") from None
    except ssl.SSLCertVerificationError as exc:
        raise HandshakeError(f"a verify-full client refuses the certificate {host}:{port} serves: "
                             f"{_plain_verify(exc)}", "ClientRefused") from None
    except OSError as exc:
        raise HandshakeError(f"TLS handshake with {host}:{port} failed: {exc}") from None


def _plain_verify(exc: ssl.SSLCertVerificationError) -> str:
    text = str(exc.verify_message or exc.reason or exc).rstrip(".")
    if not text:
        return "verification failed"
    return text[0].lower() + text[1:] if text[1:2].islower() else text


async def _fetch(host: str, port: int, ctx: ssl.SSLContext, server_hostname: str | None) -> Served:
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
        # libpq sends SNI only for host names; Python checks an IP against the IP SANs
        await writer.start_tls(ctx, server_hostname=server_hostname)
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
