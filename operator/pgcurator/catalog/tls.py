"""What the server says about its TLS setup and about what the operator's role may do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The settings DbTlsCert manages, in the order they are written.
TLS_SETTINGS = ("ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "ssl_min_protocol_version")


@dataclass(frozen=True)
class TlsSettings:
    values: dict[str, str]

    def get(self, name: str) -> str:
        return self.values.get(name, "")


@dataclass(frozen=True)
class TlsPrivileges:
    superuser: bool
    execute_server_program: bool
    read_server_files: bool
    read_binary_file: bool
    read_all_settings: bool  # ssl_min_protocol_version is hidden from other non-superusers
    reload_conf: bool
    version_num: int
    # ALTER SYSTEM per parameter (PostgreSQL 15+: GRANT ALTER SYSTEM ON PARAMETER).
    alter_system: dict[str, bool] = field(default_factory=dict)
    create_schema: bool = False  # for the pgcurator.history table
    history_exists: bool = False


async def observe_settings(conn: Any) -> TlsSettings:
    rows = await conn.fetch("SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])", list(TLS_SETTINGS))
    return TlsSettings({r["name"]: r["setting"] for r in rows})


_PRIVS_SQL = """
SELECT r.rolsuper,
       pg_has_role(current_user, 'pg_execute_server_program', 'USAGE') AS exec_program,
       pg_has_role(current_user, 'pg_read_server_files', 'USAGE') AS read_files,
       pg_has_role(current_user, 'pg_read_all_settings', 'USAGE') AS read_settings,
       has_function_privilege('pg_read_binary_file(text,bigint,bigint,boolean)', 'EXECUTE') AS read_binary,
       has_function_privilege('pg_reload_conf()', 'EXECUTE') AS reload,
       current_setting('server_version_num')::int AS version_num,
       has_database_privilege(current_database(), 'CREATE') AS create_schema,
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'pgcurator' AND c.relname = 'history') AS history_exists
  FROM pg_roles r WHERE r.rolname = current_user
"""


async def observe_privileges(conn: Any) -> TlsPrivileges:
    row = await conn.fetchrow(_PRIVS_SQL)
    version = int(row["version_num"])
    if row["rolsuper"]:
        alter = dict.fromkeys(TLS_SETTINGS, True)
    elif version >= 150000:
        alter = {}
        for name in TLS_SETTINGS:
            alter[name] = bool(await conn.fetchval("SELECT has_parameter_privilege($1, 'ALTER SYSTEM')", name))
    else:
        alter = dict.fromkeys(TLS_SETTINGS, False)  # before 15, ALTER SYSTEM is for superusers only
    return TlsPrivileges(
        superuser=bool(row["rolsuper"]),
        execute_server_program=bool(row["exec_program"]),
        read_server_files=bool(row["read_files"]),
        read_binary_file=bool(row["read_binary"]),
        read_all_settings=bool(row["read_settings"]),
        reload_conf=bool(row["reload"]),
        version_num=version,
        alter_system=alter,
        create_schema=bool(row["create_schema"]),
        history_exists=bool(row["history_exists"]),
    )


async def read_server_file(conn: Any, path: str) -> bytes | None:
    """The bytes of a file on the server (used for certificates only, never for keys); None if absent."""
    data = await conn.fetchval("SELECT pg_read_binary_file($1, 0, 1048576, true)", path)
    return bytes(data) if data is not None else None
