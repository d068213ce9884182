"""DbTlsCert spec validation, delivery plans, privileges and the owned Certificate."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from pgcurator.catalog.tls import TLS_SETTINGS, TlsPrivileges, TlsSettings
from pgcurator.models.tls import DbTlsCertSpec
from pgcurator.planner import tls as planner

NAME = "postgresql.alt-database.svc.cluster.local"


def spec(**over: Any) -> DbTlsCertSpec:
    body: dict[str, Any] = {
        "database": {"secretName": "pg-admin"},
        "dnsNames": [NAME],
        "certificate": {"secretName": "postgresql-tls-secret", "issuerRef": {"name": "ca-issuer"}},
        "delivery": {"mode": "sql"},
    }
    body.update(over)
    return DbTlsCertSpec.model_validate(body)


def test_defaults_follow_the_seed() -> None:
    s = spec()
    assert s.certificate is not None
    assert (s.certificate.duration, s.certificate.renew_before) == ("2160h", "720h")
    assert s.min_protocol_version.value == "TLSv1.2" and s.expiry_warning == "336h"
    assert s.tls_secret_name == "postgresql-tls-secret"


@pytest.mark.parametrize(("over", "needle"), [
    ({"dnsNames": ["Not_A_Name"]}, "dnsNames"),
    ({"dnsNames": ["a..b"]}, "dnsNames"),
    ({"ipAddresses": ["10.0.0.300"]}, "not an IP address"),
    ({"certificate": {"secretName": "s", "issuerRef": {"name": "i"}, "duration": "24h", "renewBefore": "48h"}},
     "must be shorter than duration"),
    ({"certificate": {"secretName": "s", "issuerRef": {"name": "i"}, "duration": "30m"}}, "minimum of 1h"),
    ({"secretName": "other"}, "exactly one of certificate"),
    ({"certificate": None}, "exactly one of certificate"),
    ({"delivery": {"mode": "mount"}}, "delivery.mount"),
    ({"delivery": {"mode": "mount", "mount": {"certFile": "rel/tls.crt", "keyFile": "/k"}}}, "absolute path"),
    ({"delivery": {"mode": "sql", "sql": {"directory": "../etc"}}}, ".."),
    ({"delivery": {"mode": "sql", "sql": {"directory": "x; rm -rf /"}}}, "pattern"),
    ({"certificate": {"secretName": "s", "issuerRef": {"name": "i"}, "privateKey": {"algorithm": "RSA", "size": 1024}}},
     "not valid for RSA"),
    ({"certificate": {"secretName": "s", "issuerRef": {"name": "i", "kind": "Nope"}}}, "issuerRef.kind"),
])
def test_bad_specs_are_refused_with_a_message(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        spec(**over)
    assert needle in str(err.value)


def test_sql_files_get_new_names_per_certificate_and_settings_follow() -> None:
    s = spec()
    a = planner.sql_file_set("pgcurator-tls", "ab" * 32, with_ca=True)
    b = planner.sql_file_set("pgcurator-tls", "cd" * 32, with_ca=False)
    assert a.cert != b.cert and a.key != b.key and b.ca is None
    assert a.key.startswith("pgcurator-tls/tls-abab") and a.key.endswith(".key")
    desired = planner.desired_settings(s, a)
    assert desired == {"ssl": "on", "ssl_cert_file": a.cert, "ssl_key_file": a.key, "ssl_ca_file": a.ca,
                       "ssl_min_protocol_version": "TLSv1.2"}
    assert "ssl_ca_file" not in planner.desired_settings(s, b)  # left alone without a CA


def test_delivery_plan_writes_then_alters_then_reloads_and_never_holds_key_text() -> None:
    s = spec()
    files = planner.sql_file_set("pgcurator-tls", "ab" * 32, with_ca=False)
    current = TlsSettings({"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key",
                           "ssl_min_protocol_version": "TLSv1.2"})
    plan = planner.delivery_plan(s, current, files, {files.key: "tls.key", files.cert: "tls.crt"})
    kinds = [st.kind for st in plan.steps]
    assert kinds == ["write_file", "write_file", "alter_system", "alter_system", "reload"]
    text = "\n".join(plan.statements())
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    assert f"ALTER SYSTEM SET ssl_cert_file = '{files.cert}'" in text
    assert "ssl_min_protocol_version" not in text  # unchanged settings are not touched
    write = plan.steps[0].statements[0]
    assert "TO PROGRAM 'umask 077 && mkdir -p pgcurator-tls && cat > pgcurator-tls/.tls-" in write
    assert f"mv -f pgcurator-tls/.tls-{'ab' * 8}.key.tmp {files.key}'" in write
    assert all(not st.transactional for st in plan.steps if st.kind != "write_file")  # ALTER SYSTEM


def test_nothing_to_change_plans_only_a_reload_and_rollback_restores() -> None:
    s = spec()
    files = planner.sql_file_set("d", "ab" * 32, with_ca=False)
    current = TlsSettings(planner.desired_settings(s, files))
    plan = planner.delivery_plan(s, current, files, None)
    assert [st.kind for st in plan.steps] == ["reload"]
    previous = TlsSettings({"ssl": "on", "ssl_cert_file": "old.crt", "ssl_key_file": "old.key",
                            "ssl_min_protocol_version": "TLSv1.2"})
    back = planner.rollback_plan(previous, planner.desired_settings(s, files))
    assert back.statements() == ["ALTER SYSTEM SET ssl_cert_file = 'old.crt'",
                                 "ALTER SYSTEM SET ssl_key_file = 'old.key'", "SELECT pg_reload_conf()"]


def test_paths_are_shell_and_sql_quoted() -> None:
    import shlex

    path = "/srv/it's here/tls.key"
    stmt = planner.write_file_statement(path)
    literal = stmt.split(" TO PROGRAM ", 1)[1]
    assert literal.startswith("'") and literal.endswith("'")
    program = literal[1:-1].replace("''", "'")  # what the server hands to the shell
    words = shlex.split(program)
    assert words[-2:] == ["/srv/it's here/.tls.key.tmp", path] and words[-3] == "-f"
    cleanup = planner.cleanup_statement("pgcurator-tls", ["pgcurator-tls/tls-aa.crt", "pgcurator-tls/tls-aa.key"])
    program = cleanup.split(" TO PROGRAM ", 1)[1][1:-1].replace("''", "'")
    assert shlex.split(program) == ["find", "pgcurator-tls", "-maxdepth", "1", "-type", "f", "(", "-name", "tls-*",
                                    "-o", "-name", ".tls-*.tmp", ")", "!", "-name", "tls-aa.crt", "!", "-name", "tls-aa.key", "-delete"]


def privs(**over: Any) -> TlsPrivileges:
    base: dict[str, Any] = dict(superuser=False, execute_server_program=False, read_server_files=False,
                                read_binary_file=False, read_all_settings=False, reload_conf=False, version_num=150000,
                                alter_system=dict.fromkeys(TLS_SETTINGS, False), create_schema=False)
    base.update(over)
    return TlsPrivileges(**base)


def test_missing_privileges_per_mode() -> None:
    sql_spec = spec()
    mount_spec = spec(delivery={"mode": "mount", "mount": {"certFile": "/m/tls.crt", "keyFile": "/m/tls.key"}})
    assert planner.missing_privileges(sql_spec, privs(superuser=True), list(TLS_SETTINGS)) == []
    bare = planner.missing_privileges(sql_spec, privs(), ["ssl", "ssl_cert_file"])
    assert any("pg_execute_server_program" in m for m in bare)
    assert any("GRANT ALTER SYSTEM ON PARAMETER ssl, ssl_cert_file" in m for m in bare)
    assert any("pg_reload_conf()" in m for m in bare) and any("CREATE ON DATABASE" in m for m in bare)
    assert any("pg_read_all_settings" in m for m in bare)
    assert not any("pg_read_server_files" in m for m in bare)
    enough = privs(execute_server_program=True, reload_conf=True, read_all_settings=True, alter_system=dict.fromkeys(TLS_SETTINGS, True),
                   history_exists=True)
    assert planner.missing_privileges(sql_spec, enough, list(TLS_SETTINGS)) == []
    mount_missing = planner.missing_privileges(mount_spec, enough, list(TLS_SETTINGS))
    assert len(mount_missing) == 2 and "pg_read_server_files" in mount_missing[0]
    old = planner.missing_privileges(sql_spec, privs(version_num=140000, execute_server_program=True), ["ssl"])
    assert any("superuser (ALTER SYSTEM of ssl needs it before PostgreSQL 15)" in m for m in old)


def test_certificate_manifest_and_drift() -> None:
    s = spec(certificate={"secretName": "postgresql-tls-secret", "issuerRef": {"name": "root", "kind": "ClusterIssuer"},
                          "privateKey": {"algorithm": "RSA", "size": 3072, "rotationPolicy": "Always"}})
    owner = {"apiVersion": "pgcurator.io/v1alpha1", "kind": "DbTlsCert", "metadata": {"name": "pg", "uid": "u1"}}
    m = planner.certificate_manifest(s, "pg", "ns", owner)
    assert m["metadata"]["ownerReferences"][0]["uid"] == "u1" and m["metadata"]["ownerReferences"][0]["controller"]
    sp = m["spec"]
    assert sp["secretName"] == "postgresql-tls-secret" and sp["dnsNames"] == [NAME]
    assert sp["issuerRef"] == {"name": "root", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert sp["privateKey"] == {"algorithm": "RSA", "size": 3072, "rotationPolicy": "Always", "encoding": "PKCS1"}
    assert (sp["duration"], sp["renewBefore"]) == ("2160h", "720h")
    assert planner.certificate_drift(sp, sp) == {}
    edited = {**sp, "dnsNames": ["x.example.com"], "privateKey": {**sp["privateKey"], "size": 2048},
              "commonName": "hand-added"}
    assert planner.certificate_drift(edited, sp) == {"dnsNames": [NAME], "privateKey": {"size": 3072},
                                                     "commonName": None}


def test_the_seed_example_is_a_valid_spec() -> None:
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "dbtlscert-postgresql.yaml").read_text())
    s = DbTlsCertSpec.model_validate(doc["spec"])
    assert s.certificate is not None and s.certificate.secret_name == "postgresql-tls-secret"
    assert s.dns_names == [NAME] and s.delivery.mode.value == "mount"


# ---------------------------------------------------------------- decisions (how a run ends)

def _seen(match: bool = True, refused: str | None = None) -> planner.Observed:
    return planner.Observed("AA", "f" * 64, "AA" if match else "BB", "f" * 64 if match else "e" * 64,
                            refused=refused)


def _in_line_settings(s: DbTlsCertSpec, files: planner.FileSet) -> TlsSettings:
    return TlsSettings(planner.desired_settings(s, files))


def test_served_and_accepted_with_settings_in_line_needs_nothing() -> None:
    s = spec()
    files = planner.sql_file_set("pgcurator-tls", "f" * 64, True)
    assert planner.plan_delivery(s, _in_line_settings(s, files), files, _seen()) is None
    d = planner.in_line(s, _seen(), "2027-01-01T00:00:00Z")
    assert (d.state, d.serving, d.serving_reason) == ("ready", True, "Match")


def test_a_matching_fingerprint_that_clients_refuse_is_not_serving_and_is_delivered_again() -> None:
    s = spec()
    files = planner.sql_file_set("pgcurator-tls", "f" * 64, True)
    seen = _seen(refused="a verify-full client refuses ...: unable to get local issuer certificate")
    assert not seen.serving and seen.serving_reason == "ClientRefused"
    delivery = planner.plan_delivery(s, _in_line_settings(s, files), files, seen)
    assert delivery is not None and delivery.need_files
    assert [st.kind for st in delivery.plan.steps] == ["write_file"] * 3 + ["reload"]
    assert list(delivery.write.values()) == ["tls.key", "tls.crt", "ca.crt"]  # the key first
    done = planner.delivered(s, seen, delivery, 0.5, "2027-01-01T00:00:00Z")
    assert (done.reason, done.serving) == ("Redelivered", True)
    refused = planner.client_refused(seen, "for db: unable to get local issuer certificate")
    assert (refused.state, refused.serving, refused.serving_reason) == ("degraded", False, "ClientRefused")


def test_a_new_certificate_is_written_then_the_settings_point_at_it() -> None:
    s = spec()
    files = planner.sql_file_set("pgcurator-tls", "f" * 64, False)
    delivery = planner.plan_delivery(s, TlsSettings({"ssl": "on"}), files, _seen(match=False))
    assert delivery is not None and files.ca is None and "ssl_ca_file" not in delivery.desired
    kinds = [st.kind for st in delivery.plan.steps]
    assert kinds[:2] == ["write_file", "write_file"] and kinds[-1] == "reload"
    assert all("PRIVATE" not in line for line in planner.plan_listing(delivery.plan))
    done = planner.delivered(s, _seen(match=False), delivery, 1.25, "2027-01-01T00:00:00Z")
    assert done.reason == "Rotated" and "1.2s" in done.message


def test_dry_run_and_suspend_hold_the_plan_back() -> None:
    files = planner.sql_file_set("pgcurator-tls", "f" * 64, True)
    for over, reason in (({"dryRun": True}, "DryRun"), ({"suspend": True}, "Suspended")):
        s = spec(**over)
        delivery = planner.plan_delivery(s, TlsSettings({}), files, _seen(match=False))
        assert delivery is not None
        held = planner.held_back(s, delivery, _seen(match=False))
        assert held is not None and (held.state, held.reason, held.serving) == ("progressing", reason, False)
    assert planner.held_back(spec(), delivery, _seen(match=False)) is None


def test_mount_mode_waits_for_the_kubelet_then_times_out() -> None:
    s = spec(delivery={"mode": "mount", "mount": {"certFile": "/m/tls.crt", "keyFile": "/m/tls.key"},
                       "timeout": "1m"})
    seen = _seen(match=False)
    assert planner.mounted_files_pending(s, "/m/tls.crt", seen.fingerprint, False, seen, 5) is None
    waiting = planner.mounted_files_pending(s, "/m/tls.crt", "0" * 64, False, seen, 5)
    assert waiting is not None and waiting.reason == "WaitingForFiles" and "another certificate" in waiting.message
    late = planner.mounted_files_pending(s, "/m/tls.crt", None, True, seen, 61)
    assert late is not None and late.reason == "DeliveryTimedOut" and "is missing" in late.message


def test_the_secret_missing_or_invalid_is_never_serving() -> None:
    owned = planner.no_secret(spec(), "ns", {"name": "pg", "reason": ""}, 60)
    assert (owned.state, owned.reason, owned.requeue_after) == ("progressing", "WaitingForCertificate", 5)
    followed = planner.no_secret(spec(certificate=None, secretName="s"), "ns", None, 60)
    assert (followed.state, followed.reason, followed.serving) == ("degraded", "SecretNotFound", False)
    bad = planner.not_deliverable(spec(), "ns", "Expired", "the intermediate 'x' expired at ...", "0A")
    assert (bad.reason, bad.serving, bad.serving_reason) == ("Expired", False, "SecretInvalid")
    assert "keeps serving serial 0A" in bad.message


def test_every_hostile_secret_ends_in_a_refusal_that_delivers_nothing() -> None:
    """The corpus through the validator and the planner: a refusal is Degraded with the first problem's
    reason, never Serving, and no plan is made for it."""
    from pgcurator.tls.validate import validate_secret

    from ..tls_corpus import NOW, cases

    for case in cases(lambda c: not c.accept):
        v = validate_secret(case.data, dns_names=case.dns_names, ip_addresses=case.ip_addresses, now=NOW)
        assert v.material is None, case.name
        d = planner.not_deliverable(spec(), "ns", v.problems[0].reason, v.summary(), "0A")
        assert (d.state, d.reason, d.serving) == ("degraded", case.reason, False), case.name
        assert "was not delivered" in d.message
