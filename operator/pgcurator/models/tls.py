"""DbTlsCert: the certificate a PostgreSQL server serves, kept equal to a cert-manager Secret."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from .common import K8S_NAME_PATTERN, CommonSpec, Duration, StrictModel, cel_rule, parse_duration
from .examples import Refusal, eg, field_example, render, suggest
from .hints import hint

# RFC 1123 host name, optionally with one leading wildcard label (as cert-manager accepts).
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_NAME_PATTERN = hint(
    rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$",
    "a DNS name (lower-case labels of letters, digits and '-', separated by dots, optionally starting with "
    "'*.')",
)

# Paths the operator puts into SQL literals and shell words (sql mode): a conservative set.
SAFE_PATH_PATTERN = hint(
    r"^[A-Za-z0-9._/-]+$", "a file path of letters, digits, '.', '_', '-' and '/'"
)

K8sName = Annotated[str, Field(max_length=253, pattern=K8S_NAME_PATTERN)]
DnsName = Annotated[str, Field(max_length=253, pattern=DNS_NAME_PATTERN)]


def check_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (no prefix length)") from None


IpText = Annotated[str, Field(max_length=64, json_schema_extra=cel_rule(
    "isIP(self)", "must be an IP address such as 10.0.0.5 or fd00::5 (no prefix length)")), AfterValidator(check_ip)]


def check_dns_name(name: str) -> str:
    if len(name) > 253 or not re.fullmatch(DNS_NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a valid DNS name (lower-case RFC 1123 labels, optional leading '*.')")
    return name


class IssuerKind(StrEnum):
    Issuer = "Issuer"
    ClusterIssuer = "ClusterIssuer"


class IssuerRef(StrictModel):
    name: K8sName = Field(examples=["ca-issuer"], description="Name of the cert-manager Issuer (same namespace) or ClusterIssuer.")
    kind: IssuerKind = Field(default=IssuerKind.Issuer, description="Issuer or ClusterIssuer.")
    group: str = Field(default="cert-manager.io", max_length=253, description="API group of the issuer.")


class KeyAlgorithm(StrEnum):
    RSA = "RSA"
    ECDSA = "ECDSA"
    Ed25519 = "Ed25519"


class RotationPolicy(StrEnum):
    Always = "Always"
    Never = "Never"


class KeyEncoding(StrEnum):
    PKCS1 = "PKCS1"
    PKCS8 = "PKCS8"


_KEY_SIZES = {KeyAlgorithm.RSA: (2048, 3072, 4096, 8192), KeyAlgorithm.ECDSA: (256, 384, 521)}


class PrivateKeySpec(StrictModel):
    algorithm: KeyAlgorithm = Field(default=KeyAlgorithm.ECDSA, description="RSA, ECDSA or Ed25519.")
    size: int | None = Field(
        default=None, examples=[256], description="RSA: 2048/3072/4096/8192 (default 2048); ECDSA: 256/384/521 (default 256)."
    )
    rotation_policy: RotationPolicy = Field(
        default=RotationPolicy.Always,
        alias="rotationPolicy",
        description="Always: a new private key on every renewal (recommended); Never: reuse the key.",
    )
    encoding: KeyEncoding = Field(default=KeyEncoding.PKCS1, description="PKCS1 or PKCS8 PEM encoding of tls.key.")

    @model_validator(mode="after")
    def _size(self) -> Self:
        if self.size is None:
            return self
        allowed = _KEY_SIZES.get(self.algorithm)
        if allowed is None:
            raise Refusal(f"privateKey.size is not used with {self.algorithm.value}", eg("size", None))
        if self.size not in allowed:
            raise Refusal(f"privateKey.size {self.size} is not valid for {self.algorithm.value}: use one of {allowed}",
                          eg("size", allowed[0]), at=("size",))
        return self


class OwnedCertificate(StrictModel):
    """A cert-manager Certificate the operator creates and keeps in line with this spec."""

    name: K8sName | None = Field(default=None, examples=["pg-server"],
                                 description="Name of the Certificate (default: the resource's name).")
    secret_name: K8sName = Field(alias="secretName", examples=["pg-tls"],
                                 description="Secret cert-manager writes the key pair to.")
    issuer_ref: IssuerRef = Field(alias="issuerRef", description="Who signs the certificate.")
    common_name: str | None = Field(default=None, alias="commonName", max_length=64, examples=["pg.example.com"],
                                    description="Optional subject CN.")
    duration: Duration = Field(default="2160h", description="Requested lifetime (default 90 days).")
    renew_before: Duration = Field(
        default="720h", alias="renewBefore", description="Renew this long before expiry (default 30 days)."
    )
    private_key: PrivateKeySpec = Field(
        default_factory=PrivateKeySpec, alias="privateKey", description="Key algorithm, size and rotation policy."
    )

    @model_validator(mode="after")
    def _durations(self) -> Self:
        duration, renew = parse_duration(self.duration), parse_duration(self.renew_before)
        usual = parse_duration(field_example(OwnedCertificate, "renewBefore"))
        if duration < 3600:
            raise Refusal(f"duration {self.duration} is shorter than cert-manager's minimum of 1h",
                          eg("duration", _hours_or_minutes(max(parse_duration(field_example(OwnedCertificate, "duration")),
                                                               3 * renew))), at=("duration",))
        if renew < 300:
            raise Refusal(f"renewBefore {self.renew_before} is shorter than cert-manager's minimum of 5m",
                          eg("renewBefore", _hours_or_minutes(min(usual, duration / 3))), at=("renewBefore",))
        if renew >= duration:
            raise Refusal(
                f"renewBefore ({self.renew_before}) must be shorter than duration "
                f"({self.duration}): the certificate would be renewed as soon as it is issued",
                eg("renewBefore", _hours_or_minutes(min(usual, duration / 3))), at=("renewBefore",))
        return self


def _hours_or_minutes(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


class DeliveryMode(StrEnum):
    mount = "mount"
    sql = "sql"


class MountDelivery(StrictModel):
    """Where the Secret is mounted in the PostgreSQL pod (paths as the server sees them)."""

    cert_file: str = Field(alias="certFile", max_length=1024, pattern=SAFE_PATH_PATTERN, examples=["/etc/pgtls/tls.crt"],
                           description="Absolute path of tls.crt on the server, e.g. /etc/pgtls/tls.crt.")
    key_file: str = Field(alias="keyFile", max_length=1024, pattern=SAFE_PATH_PATTERN, examples=["/etc/pgtls/tls.key"],
                          description="Absolute path of tls.key on the server (never read by the operator).")
    ca_file: str | None = Field(default=None, alias="caFile", max_length=1024, pattern=SAFE_PATH_PATTERN,
                                examples=["/etc/pgtls/ca.crt"], description="Absolute path of ca.crt on the server; sets ssl_ca_file when given.")

    @field_validator("cert_file", "key_file", "ca_file")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or "/../" in v + "/"):
            raise ValueError(f"{v!r} must be an absolute path without '..'")
        return v


class SqlDelivery(StrictModel):
    directory: str = Field(
        default="pgcurator-tls",
        max_length=512,
        pattern=SAFE_PATH_PATTERN,
        description="Server directory the files are written to; relative paths are inside the data directory.",
    )

    @field_validator("directory")
    @classmethod
    def _no_parent(cls, v: str) -> str:
        if ".." in v.split("/"):
            raise ValueError("sql.directory must not contain '..'")
        return v.rstrip("/") or "/"


class Delivery(StrictModel):
    mode: DeliveryMode = Field(
        default=DeliveryMode.mount,
        description="mount: the Secret is mounted into the PostgreSQL pod; the operator waits for the files and "
        "reloads. sql: the operator writes the files through the database connection, then reloads.",
    )
    mount: MountDelivery | None = Field(default=None, examples=[{"certFile": "/etc/pgtls/tls.crt",
                                                                 "keyFile": "/etc/pgtls/tls.key"}],
                                        description="Required for mode mount.")
    sql: SqlDelivery = Field(default_factory=SqlDelivery, description="Used for mode sql.")
    timeout: Duration = Field(
        default="5m",
        description="How long a new certificate may take to be served (the kubelet can take a minute or more to "
        "update a mounted Secret) before the resource goes Degraded.",
    )

    @model_validator(mode="after")
    def _mount_paths(self) -> Self:
        if self.mode is DeliveryMode.mount and self.mount is None:
            raise Refusal("delivery.mount (certFile, keyFile) is required for mode mount", suggest(Delivery, "mount"))
        return self


class TlsVersion(StrEnum):
    TLSv1_2 = "TLSv1.2"
    TLSv1_3 = "TLSv1.3"


class VerifyTarget(StrictModel):
    host: str | None = Field(default=None, max_length=253, examples=["pg.example.com"],
                             description="Host to check (default: the database's).")
    port: int | None = Field(default=None, ge=1, le=65535, examples=[5432],
                             description="Port to check (default: the database's).")


class DbTlsCertSpec(CommonSpec):
    """Exactly one of `certificate` (owned cert-manager Certificate) or `secretName` (follow a Secret)."""

    dns_names: list[DnsName] = Field(
        default_factory=list, alias="dnsNames", max_length=100, examples=[["pg.example.com"]],
        description="Names the certificate must cover (and, when owned, is requested for).",
    )
    ip_addresses: list[IpText] = Field(
        default_factory=list, alias="ipAddresses", max_length=100, examples=[["10.0.0.5"]],
        description="IP addresses the certificate must cover (and, when owned, is requested for).",
    )
    certificate: OwnedCertificate | None = Field(
        default=None, description="Own a cert-manager Certificate: created and kept in line by the operator."
    )
    secret_name: K8sName | None = Field(
        default=None, alias="secretName", examples=["pg-tls"],
        description="Follow an existing kubernetes.io/tls Secret (tls.crt, tls.key, optional ca.crt) instead.",
    )
    delivery: Delivery = Field(examples=[{"mode": "sql"}], description="How the files reach the server.")
    min_protocol_version: TlsVersion = Field(
        default=TlsVersion.TLSv1_2, alias="minProtocolVersion", description="ssl_min_protocol_version."
    )
    expiry_warning: Duration = Field(
        default="336h", alias="expiryWarning",
        description="Condition Expiring and a Warning Event when the served certificate expires within this.",
    )
    check_interval: Duration = Field(
        default="1m", alias="checkInterval",
        description="How often the Secret and the served certificate are compared.",
    )
    verify: VerifyTarget = Field(
        default_factory=VerifyTarget, description="Where the served certificate is checked over the wire."
    )

    @field_validator("dns_names")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        return [check_dns_name(n) for n in v]

    @model_validator(mode="after")
    def _source(self) -> Self:
        if (self.certificate is None) == (self.secret_name is None):
            raise Refusal("set exactly one of certificate (owned Certificate) or secretName (follow a Secret)",
                          suggest(DbTlsCertSpec, "secretName") if self.secret_name is None else eg("secretName", None))
        if self.certificate is not None and not (self.dns_names or self.ip_addresses or self.certificate.common_name):
            raise Refusal("an owned certificate needs dnsNames, ipAddresses or certificate.commonName",
                          suggest(DbTlsCertSpec, "dnsNames"))
        if parse_duration(self.check_interval) < 1:
            raise Refusal("must be at least 1s", suggest(DbTlsCertSpec, "checkInterval"), at=("checkInterval",))
        return self

    @property
    def tls_secret_name(self) -> str:
        if self.certificate is not None:
            return self.certificate.secret_name
        assert self.secret_name is not None
        return self.secret_name


_DURATION = "duration(has(self.certificate.duration) ? self.certificate.duration : '2160h')"
_RENEW = "duration(has(self.certificate.renewBefore) ? self.certificate.renewBefore : '720h')"

DB_TLS_CERT_CEL = [
    # OwnedCertificate._durations and the names rule, for the API server.
    {
        "rule": f"!has(self.certificate) || {_DURATION} >= duration('1h')",
        "message": f"certificate.duration must be at least 1h (cert-manager's minimum), "
        f"{suggest(OwnedCertificate, 'duration')}",
        "fieldPath": ".certificate.duration",
    },
    {
        "rule": f"!has(self.certificate) || {_RENEW} >= duration('5m')",
        "message": f"certificate.renewBefore must be at least 5m (cert-manager's minimum), "
        f"{suggest(OwnedCertificate, 'renewBefore')}",
        "fieldPath": ".certificate.renewBefore",
    },
    {
        "rule": f"!has(self.certificate) || {_RENEW} < {_DURATION}",
        "message": "certificate.renewBefore must be shorter than certificate.duration, e.g. certificate: "
        f"{render({'duration': field_example(OwnedCertificate, 'duration'), 'renewBefore': field_example(OwnedCertificate, 'renewBefore')})}",
        "fieldPath": ".certificate.renewBefore",
    },
    {
        "rule": "!has(self.certificate) || (has(self.dnsNames) && size(self.dnsNames) > 0) || "
        "(has(self.ipAddresses) && size(self.ipAddresses) > 0) || has(self.certificate.commonName)",
        "message": f"an owned certificate needs dnsNames, ipAddresses or certificate.commonName, "
        f"{suggest(DbTlsCertSpec, 'dnsNames')}",
    },
    {
        "rule": "has(self.certificate) != has(self.secretName)",
        "message": "set exactly one of certificate (owned Certificate) or secretName (follow a Secret), "
        f"{suggest(DbTlsCertSpec, 'secretName')}",
    },
    {
        "rule": "!has(self.delivery) || !has(self.delivery.mode) || self.delivery.mode != 'mount' || "
        "has(self.delivery.mount)",
        "message": f"delivery.mount (certFile, keyFile) is required for mode mount, e.g. delivery: "
        f"{render({'mode': 'mount', 'mount': field_example(Delivery, 'mount')})}",
    },
]
