"""The event trigger that records schema changes with who and when (DatabaseMonitor).

Creating an event trigger needs a superuser in every PostgreSQL release up to 18 (checked on
18.6: "Must be superuser to create an event trigger"). When the operator's role is one, it
installs the trigger itself; otherwise a superuser runs `install_sql()` (printed in
docs/databasemonitor.md), and the operator uses the trigger once it is there.

The function is SECURITY DEFINER and owned by the superuser that installs it: DDL run by any role
is recorded, and the operator's role cannot change what the superuser's trigger runs. It never
fails the user's statement: any error becomes a WARNING."""

from __future__ import annotations

from ..sql.statements import Plan, Step

CHANNEL = "pgcurator_schema_change"
FUNCTION = "pgcurator.capture_ddl"
TRIGGERS = ("pgcurator_ddl", "pgcurator_drop")
# Bumped when the function body changes: an older installed version is reported (and replaced,
# when the operator may).
TRIGGER_VERSION = "pgcurator event trigger v2"

# One row per object the command touched (pg_event_trigger_ddl_commands), or per object it dropped
# directly or through a normal dependency (pg_event_trigger_dropped_objects); internal dependents
# (row types, TOAST tables) and temporary objects are left out, as is pgcurator's own schema.
_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION pgcurator.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgcurator$
DECLARE
  r record;
  n integer := 0;
  who text := session_user;
  app text := current_setting('application_name', true);
  addr text := inet_client_addr()::text;
  xid bigint := pg_current_xact_id()::text::bigint;
  -- a statement that may carry a password (CREATE USER MAPPING ... OPTIONS (password ...), a
  -- server's options) is not kept: the table is readable by the operator's role
  query text := CASE WHEN current_query() ~* '(password|secret|user\\s+mapping|create\\s+server|alter\\s+server)'
                     THEN '(statement not recorded: it may hold a password)'
                     ELSE left(current_query(), 4000) END;
BEGIN
  IF tg_event = 'sql_drop' THEN
    FOR r IN SELECT d.object_type, d.schema_name, d.object_identity
               FROM pg_event_trigger_dropped_objects() d
              WHERE (d.original OR d.normal) AND NOT d.is_temporary
                AND coalesce(d.schema_name, '') <> 'pgcurator' AND d.object_identity IS DISTINCT FROM 'pgcurator'
    LOOP
      INSERT INTO pgcurator.schema_changes (mechanism, command_tag, object_type, schema_name, object_identity,
             statement, session_user_name, application_name, client_addr, transaction_id)
      VALUES ('event_trigger', tg_tag, lower(r.object_type), r.schema_name, r.object_identity, query, who, app,
              addr, xid);
      n := n + 1;
    END LOOP;
  ELSE
    FOR r IN SELECT c.command_tag, c.object_type, c.schema_name, c.object_identity
               FROM pg_event_trigger_ddl_commands() c
              WHERE NOT c.in_extension AND coalesce(c.schema_name, '') <> 'pgcurator'
                AND coalesce(c.schema_name, '') NOT LIKE 'pg\\_temp%'
                AND c.object_identity IS DISTINCT FROM 'pgcurator'
    LOOP
      INSERT INTO pgcurator.schema_changes (mechanism, command_tag, object_type, schema_name, object_identity,
             statement, session_user_name, application_name, client_addr, transaction_id)
      VALUES ('event_trigger', r.command_tag, lower(r.object_type), r.schema_name, r.object_identity, query, who,
              app, addr, xid);
      n := n + 1;
    END LOOP;
  END IF;
  IF n > 0 THEN
    PERFORM pg_notify('pgcurator_schema_change', xid::text);
  END IF;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'pgcurator: schema change not recorded: %', SQLERRM;
END
$pgcurator$
"""


def install_statements() -> tuple[str, ...]:
    """Idempotent: run as a superuser, in the monitored database, after the operator created the
    pgcurator schema (it does on its first run)."""
    return (
        _FUNCTION_SQL.strip(),
        "REVOKE ALL ON FUNCTION pgcurator.capture_ddl() FROM PUBLIC",
        f"COMMENT ON FUNCTION pgcurator.capture_ddl() IS '{TRIGGER_VERSION}'",
        "DROP EVENT TRIGGER IF EXISTS pgcurator_ddl",
        "CREATE EVENT TRIGGER pgcurator_ddl ON ddl_command_end EXECUTE FUNCTION pgcurator.capture_ddl()",
        "DROP EVENT TRIGGER IF EXISTS pgcurator_drop",
        "CREATE EVENT TRIGGER pgcurator_drop ON sql_drop EXECUTE FUNCTION pgcurator.capture_ddl()",
    )


def uninstall_statements() -> tuple[str, ...]:
    return (
        "DROP EVENT TRIGGER IF EXISTS pgcurator_ddl",
        "DROP EVENT TRIGGER IF EXISTS pgcurator_drop",
        "DROP FUNCTION IF EXISTS pgcurator.capture_ddl()",
    )


def install_sql() -> str:
    """The script a superuser runs when the operator's role may not create event triggers."""
    return ";\n".join(install_statements()) + ";\n"


def install_plan() -> Plan:
    return Plan([Step("install_event_trigger", "pgcurator_ddl", install_statements(),
                      description="record schema changes with who and when")])


def uninstall_plan() -> Plan:
    return Plan([Step("drop_event_trigger", "pgcurator_ddl", uninstall_statements())])
