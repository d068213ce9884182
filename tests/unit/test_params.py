"""Secrets -> connection parameters, in both layouts, without leaking the password."""

from __future__ import annotations

import base64

import pytest

from pgcurator.db.params import params_from_secret
from pgcurator.errors import SecretProblem
from pgcurator.models.common import DatabaseRef

REF = DatabaseRef.model_validate({"secretName": "app"})


def b64(**kv: str) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in kv.items()}


def test_uri_layout() -> None:
    p = params_from_secret("ns/app", b64(uri="postgresql://app:s%40cret@db.example:6432/appdb?sslmode=require"), REF)
    assert (p.host, p.port, p.dbname, p.user, p.password, p.ssl_mode) == (
        "db.example", 6432, "appdb", "app", "s@cret", "require")


def test_cloudnativepg_app_secret_layout() -> None:
    data = b64(host="cluster-rw", port="5432", dbname="app", user="app", username="app", password="pw",
               uri="postgresql://app:pw@cluster-rw:5432/app")
    del data["uri"]
    p = params_from_secret("ns/app", data, REF)
    assert (p.host, p.port, p.dbname, p.user) == ("cluster-rw", 5432, "app", "app")


def test_username_key_and_overrides() -> None:
    ref = DatabaseRef.model_validate({"secretName": "app", "dbname": "other", "sslMode": "disable"})
    p = params_from_secret("ns/app", b64(host="h", username="u", password="pw"), ref)
    assert (p.user, p.dbname, p.ssl_mode, p.port) == ("u", "other", "disable", 5432)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "neither a 'uri' key"),
        (b64(host="h", user="u"), "missing: password"),
        (b64(host="h", password="pw"), "user (or username)"),
        (b64(uri="mysql://x@y/z"), "not a postgresql://"),
        (b64(host="h", user="u", password="pw", port="99999"), "invalid port"),
        ({"uri": "%%%not-base64"}, "not valid base64"),
    ],
)
def test_bad_secrets_refused(data: dict[str, str], needle: str) -> None:
    with pytest.raises(SecretProblem, match=None) as err:
        params_from_secret("ns/app", data, REF)
    assert needle in err.value.message


def test_password_never_in_repr_key_or_display() -> None:
    p = params_from_secret("ns/app", b64(uri="postgresql://app:hunter2secret@h/db"), REF)
    for text in (repr(p), p.pool_key, p.display):
        assert "hunter2secret" not in text
    q = params_from_secret("ns/app", b64(uri="postgresql://app:other@h/db"), REF)
    assert p.pool_key != q.pool_key
