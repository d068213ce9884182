"""DDL corpus for the DatabaseMonitor detection benchmark: the command tags of PostgreSQL's
event-trigger firing matrix (docs: "Event Trigger Firing Matrix"), plus GRANT/REVOKE, ownership
changes, shared objects, and changes made by another role (alice) or a superuser (postgres).

Cases run in order and may use what earlier ones created. `role`: who runs `sql` (default
curator, the operator's role, as the application's migration tool would); `setup` runs as the
superuser before the "before" fingerprint."""

from __future__ import annotations

from typing import Any

SU = "postgres"
ALICE = "alice"

CORPUS: list[dict[str, Any]] = [
    # tables, columns, constraints, indexes
    {"tag": "CREATE TABLE", "sql": "CREATE TABLE app.t (id int PRIMARY KEY, a text, b int)"},
    {"tag": "CREATE TABLE (another role)", "role": ALICE, "sql": "CREATE TABLE app.alice_t (id int)"},
    {"tag": "CREATE TABLE AS", "sql": "CREATE TABLE app.t_copy AS SELECT * FROM app.t"},
    {"tag": "SELECT INTO", "sql": "SELECT * INTO app.t_into FROM app.t"},
    {"tag": "ALTER TABLE ADD COLUMN", "sql": "ALTER TABLE app.t ADD COLUMN c date"},
    {"tag": "ALTER TABLE ALTER TYPE", "sql": "ALTER TABLE app.t ALTER COLUMN b TYPE bigint"},
    {"tag": "ALTER TABLE SET DEFAULT", "sql": "ALTER TABLE app.t ALTER COLUMN a SET DEFAULT 'x'"},
    {"tag": "ALTER TABLE SET NOT NULL", "sql": "ALTER TABLE app.t ALTER COLUMN a SET NOT NULL"},
    {"tag": "ALTER TABLE ADD CONSTRAINT", "sql": "ALTER TABLE app.t ADD CONSTRAINT b_pos CHECK (b > 0)"},
    {"tag": "ALTER TABLE DROP CONSTRAINT", "sql": "ALTER TABLE app.t DROP CONSTRAINT b_pos"},
    {"tag": "ALTER TABLE RENAME COLUMN", "sql": "ALTER TABLE app.t RENAME COLUMN c TO d"},
    {"tag": "ALTER TABLE DROP COLUMN", "sql": "ALTER TABLE app.t DROP COLUMN d"},
    {"tag": "ALTER TABLE SET (storage)", "sql": "ALTER TABLE app.t SET (fillfactor = 80)"},
    {"tag": "ALTER TABLE ENABLE RLS", "sql": "ALTER TABLE app.t ENABLE ROW LEVEL SECURITY"},
    {"tag": "ALTER TABLE RENAME", "sql": "ALTER TABLE app.t_copy RENAME TO t_copy2"},
    {"tag": "ALTER TABLE SET SCHEMA", "sql": "ALTER TABLE app.t_copy2 SET SCHEMA public"},
    {"tag": "ALTER TABLE OWNER (superuser)", "role": SU, "sql": "ALTER TABLE app.t_into OWNER TO postgres"},
    {"tag": "CREATE INDEX", "sql": "CREATE INDEX t_a_idx ON app.t (a)"},
    {"tag": "CREATE INDEX (another role)", "role": ALICE, "sql": "CREATE INDEX alice_t_idx ON app.alice_t (id)"},
    {"tag": "ALTER INDEX", "sql": "ALTER INDEX app.t_a_idx RENAME TO t_a_idx2"},
    {"tag": "REINDEX", "sql": "REINDEX INDEX app.t_a_idx2"},
    {"tag": "DROP INDEX", "sql": "DROP INDEX app.t_a_idx2"},
    {"tag": "DROP INDEX (superuser)", "role": SU, "sql": "DROP INDEX app.alice_t_idx"},
    {"tag": "ALTER TABLE OWNER (ownership)", "role": SU, "sql": "ALTER TABLE app.alice_t OWNER TO curator"},
    {"tag": "CREATE TABLE PARTITION OF",
     "sql": "CREATE TABLE app.m (d date NOT NULL, v int) PARTITION BY RANGE (d); "
            "CREATE TABLE app.m_2025 PARTITION OF app.m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"},
    {"tag": "ALTER TABLE DETACH PARTITION", "sql": "ALTER TABLE app.m DETACH PARTITION app.m_2025"},
    {"tag": "ALTER TABLE ATTACH PARTITION",
     "sql": "ALTER TABLE app.m ATTACH PARTITION app.m_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"},
    {"tag": "ALTER TABLE DISABLE TRIGGER", "setup":
        "CREATE FUNCTION app.trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; "
        "CREATE TRIGGER t_trg BEFORE INSERT ON app.t FOR EACH ROW EXECUTE FUNCTION app.trg()",
     "sql": "ALTER TABLE app.t DISABLE TRIGGER t_trg"},
    {"tag": "CREATE TRIGGER", "sql": "CREATE TRIGGER t_trg2 BEFORE UPDATE ON app.t FOR EACH ROW "
                                     "EXECUTE FUNCTION app.trg()"},
    {"tag": "ALTER TRIGGER", "sql": "ALTER TRIGGER t_trg2 ON app.t RENAME TO t_trg3"},
    {"tag": "DROP TRIGGER", "sql": "DROP TRIGGER t_trg3 ON app.t"},
    {"tag": "CREATE RULE", "sql": "CREATE RULE t_rule AS ON DELETE TO app.t_into DO INSTEAD NOTHING", "role": SU},
    {"tag": "DROP RULE", "sql": "DROP RULE t_rule ON app.t_into", "role": SU},
    {"tag": "CREATE POLICY", "sql": "CREATE POLICY p_read ON app.t FOR SELECT USING (id > 0)"},
    {"tag": "ALTER POLICY", "sql": "ALTER POLICY p_read ON app.t USING (id > 1)"},
    {"tag": "DROP POLICY", "sql": "DROP POLICY p_read ON app.t"},
    {"tag": "CREATE STATISTICS", "sql": "CREATE STATISTICS app.t_stats (dependencies) ON id, b FROM app.t"},
    {"tag": "ALTER STATISTICS", "sql": "ALTER STATISTICS app.t_stats SET STATISTICS 500"},
    {"tag": "DROP STATISTICS", "sql": "DROP STATISTICS app.t_stats"},
    {"tag": "COMMENT ON TABLE", "sql": "COMMENT ON TABLE app.t IS 'orders'"},
    {"tag": "COMMENT ON COLUMN", "sql": "COMMENT ON COLUMN app.t.a IS 'label'"},
    {"tag": "SECURITY LABEL", "sql": "SELECT 1", "skip_reason": "needs a label provider"},
    # views, sequences, types, functions
    {"tag": "CREATE VIEW", "sql": "CREATE VIEW app.v AS SELECT id, a FROM app.t"},
    {"tag": "ALTER VIEW", "sql": "ALTER VIEW app.v ALTER COLUMN a SET DEFAULT 'y'"},
    {"tag": "CREATE OR REPLACE VIEW", "sql": "CREATE OR REPLACE VIEW app.v AS SELECT id, a, b FROM app.t"},
    {"tag": "CREATE MATERIALIZED VIEW", "sql": "CREATE MATERIALIZED VIEW app.mv AS SELECT count(*) FROM app.t"},
    {"tag": "ALTER MATERIALIZED VIEW", "sql": "ALTER MATERIALIZED VIEW app.mv RENAME TO mv2"},
    {"tag": "REFRESH MATERIALIZED VIEW", "sql": "REFRESH MATERIALIZED VIEW app.mv2"},
    {"tag": "DROP MATERIALIZED VIEW", "sql": "DROP MATERIALIZED VIEW app.mv2"},
    {"tag": "DROP VIEW", "sql": "DROP VIEW app.v"},
    {"tag": "CREATE SEQUENCE", "sql": "CREATE SEQUENCE app.s"},
    {"tag": "ALTER SEQUENCE", "sql": "ALTER SEQUENCE app.s INCREMENT BY 5"},
    {"tag": "DROP SEQUENCE", "sql": "DROP SEQUENCE app.s"},
    {"tag": "CREATE TYPE (enum)", "sql": "CREATE TYPE app.mood AS ENUM ('sad', 'ok')"},
    {"tag": "ALTER TYPE ADD VALUE", "sql": "ALTER TYPE app.mood ADD VALUE 'happy'"},
    {"tag": "CREATE TYPE (composite)", "sql": "CREATE TYPE app.pair AS (x int, y int)"},
    {"tag": "ALTER TYPE (composite)", "sql": "ALTER TYPE app.pair ADD ATTRIBUTE z int"},
    {"tag": "DROP TYPE", "sql": "DROP TYPE app.pair"},
    {"tag": "CREATE DOMAIN", "sql": "CREATE DOMAIN app.posint AS int CHECK (VALUE > 0)"},
    {"tag": "ALTER DOMAIN", "sql": "ALTER DOMAIN app.posint SET NOT NULL"},
    {"tag": "DROP DOMAIN", "sql": "DROP DOMAIN app.posint"},
    {"tag": "CREATE FUNCTION", "sql": "CREATE FUNCTION app.f(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1'"},
    {"tag": "CREATE OR REPLACE FUNCTION", "sql": "CREATE OR REPLACE FUNCTION app.f(x int) RETURNS int "
                                                "LANGUAGE sql AS 'SELECT x + 2'"},
    {"tag": "ALTER FUNCTION", "sql": "ALTER FUNCTION app.f(int) SECURITY DEFINER"},
    {"tag": "ALTER FUNCTION OWNER (ownership)", "role": SU, "sql": f"ALTER FUNCTION app.f(int) OWNER TO {ALICE}"},
    {"tag": "CREATE PROCEDURE", "sql": "CREATE PROCEDURE app.p() LANGUAGE sql AS 'SELECT 1'"},
    {"tag": "ALTER PROCEDURE", "sql": "ALTER PROCEDURE app.p() SET work_mem = '8MB'"},
    {"tag": "ALTER ROUTINE", "sql": "ALTER ROUTINE app.p() RESET ALL"},
    {"tag": "DROP PROCEDURE", "sql": "DROP PROCEDURE app.p()"},
    {"tag": "CREATE AGGREGATE", "sql": "CREATE AGGREGATE app.mysum(int) (sfunc = int4pl, stype = int)"},
    {"tag": "ALTER AGGREGATE", "sql": "ALTER AGGREGATE app.mysum(int) RENAME TO mysum2"},
    {"tag": "DROP AGGREGATE", "sql": "DROP AGGREGATE app.mysum2(int)"},
    {"tag": "DROP FUNCTION (superuser)", "role": SU, "sql": "DROP FUNCTION app.f(int)"},
    {"tag": "CREATE OPERATOR", "sql": "CREATE OPERATOR app.=== (leftarg = int, rightarg = int, function = int4eq)"},
    {"tag": "ALTER OPERATOR", "sql": "ALTER OPERATOR app.=== (int, int) SET (restrict = eqsel)"},
    {"tag": "DROP OPERATOR", "sql": "DROP OPERATOR app.=== (int, int)"},
    {"tag": "CREATE OPERATOR FAMILY", "role": SU, "sql": "CREATE OPERATOR FAMILY app.fam USING btree"},
    {"tag": "ALTER OPERATOR FAMILY", "role": SU, "sql": "ALTER OPERATOR FAMILY app.fam USING btree RENAME TO fam2"},
    {"tag": "CREATE OPERATOR CLASS", "role": SU, "sql":
        "CREATE OPERATOR CLASS app.cls FOR TYPE int USING btree AS OPERATOR 1 <, FUNCTION 1 btint4cmp(int, int)"},
    {"tag": "ALTER OPERATOR CLASS", "role": SU, "sql": "ALTER OPERATOR CLASS app.cls USING btree RENAME TO cls2"},
    {"tag": "DROP OPERATOR CLASS", "role": SU, "sql": "DROP OPERATOR CLASS app.cls2 USING btree"},
    {"tag": "DROP OPERATOR FAMILY", "role": SU, "sql": "DROP OPERATOR FAMILY app.fam2 USING btree"},
    {"tag": "CREATE CAST", "role": SU, "setup": "CREATE TYPE app.mood2 AS ENUM ('a')",
     "sql": "CREATE CAST (app.mood2 AS text) WITH INOUT"},
    {"tag": "DROP CAST", "role": SU, "sql": "DROP CAST (app.mood2 AS text)"},
    {"tag": "CREATE COLLATION", "sql": "CREATE COLLATION app.c1 FROM \"C\""},
    {"tag": "ALTER COLLATION", "sql": "ALTER COLLATION app.c1 RENAME TO c2"},
    {"tag": "DROP COLLATION", "sql": "DROP COLLATION app.c2"},
    {"tag": "CREATE CONVERSION", "sql": "CREATE CONVERSION app.conv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8"},
    {"tag": "ALTER CONVERSION", "sql": "ALTER CONVERSION app.conv RENAME TO conv2"},
    {"tag": "DROP CONVERSION", "sql": "DROP CONVERSION app.conv2"},
    {"tag": "CREATE TEXT SEARCH CONFIGURATION", "sql": "CREATE TEXT SEARCH CONFIGURATION app.ts (COPY = simple)"},
    {"tag": "ALTER TEXT SEARCH CONFIGURATION", "sql": "ALTER TEXT SEARCH CONFIGURATION app.ts RENAME TO ts2"},
    {"tag": "DROP TEXT SEARCH CONFIGURATION", "sql": "DROP TEXT SEARCH CONFIGURATION app.ts2"},
    {"tag": "CREATE TEXT SEARCH DICTIONARY", "sql": "CREATE TEXT SEARCH DICTIONARY app.d (TEMPLATE = simple)"},
    {"tag": "ALTER TEXT SEARCH DICTIONARY", "sql": "ALTER TEXT SEARCH DICTIONARY app.d (StopWords = english)"},
    {"tag": "DROP TEXT SEARCH DICTIONARY", "sql": "DROP TEXT SEARCH DICTIONARY app.d"},
    {"tag": "CREATE TEXT SEARCH PARSER", "role": SU, "sql":
        "CREATE TEXT SEARCH PARSER app.prs (START = prsd_start, GETTOKEN = prsd_nexttoken, END = prsd_end, "
        "LEXTYPES = prsd_lextype)"},
    {"tag": "ALTER TEXT SEARCH PARSER", "role": SU, "sql": "ALTER TEXT SEARCH PARSER app.prs RENAME TO prs2"},
    {"tag": "DROP TEXT SEARCH PARSER", "role": SU, "sql": "DROP TEXT SEARCH PARSER app.prs2"},
    {"tag": "CREATE TEXT SEARCH TEMPLATE", "role": SU, "sql":
        "CREATE TEXT SEARCH TEMPLATE app.tpl (LEXIZE = dsimple_lexize, INIT = dsimple_init)"},
    {"tag": "ALTER TEXT SEARCH TEMPLATE", "role": SU, "sql": "ALTER TEXT SEARCH TEMPLATE app.tpl RENAME TO tpl2"},
    {"tag": "DROP TEXT SEARCH TEMPLATE", "role": SU, "sql": "DROP TEXT SEARCH TEMPLATE app.tpl2"},
    # extensions, languages, access methods, transforms, FDW, publications
    {"tag": "CREATE EXTENSION", "role": SU, "sql": "CREATE EXTENSION hstore SCHEMA app"},
    {"tag": "ALTER EXTENSION", "role": SU, "sql": "ALTER EXTENSION hstore SET SCHEMA public"},
    {"tag": "CREATE TRANSFORM", "role": SU, "sql":
        "CREATE TRANSFORM FOR hstore LANGUAGE sql (FROM SQL WITH FUNCTION hstore_version_diag(internal), "
        "TO SQL WITH FUNCTION hstore_in(cstring))", "skip_reason": "needs matching C functions"},
    {"tag": "DROP EXTENSION", "role": SU, "sql": "DROP EXTENSION hstore"},
    {"tag": "CREATE LANGUAGE", "role": SU, "sql": "CREATE TRUSTED LANGUAGE plsample2 HANDLER plpgsql_call_handler"},
    {"tag": "ALTER LANGUAGE", "role": SU, "sql": "ALTER LANGUAGE plsample2 RENAME TO plsample3"},
    {"tag": "DROP LANGUAGE", "role": SU, "sql": "DROP LANGUAGE plsample3"},
    {"tag": "CREATE ACCESS METHOD", "role": SU, "sql": "CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER "
                                                        "heap_tableam_handler"},
    {"tag": "DROP ACCESS METHOD", "role": SU, "sql": "DROP ACCESS METHOD heap2"},
    {"tag": "CREATE FOREIGN DATA WRAPPER", "role": SU, "setup": "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
     "sql": "CREATE FOREIGN DATA WRAPPER fdw2 HANDLER postgres_fdw_handler"},
    {"tag": "ALTER FOREIGN DATA WRAPPER", "role": SU, "sql": "ALTER FOREIGN DATA WRAPPER fdw2 OPTIONS (ADD debug 'true')"},
    {"tag": "CREATE SERVER", "role": SU, "sql": "CREATE SERVER srv FOREIGN DATA WRAPPER postgres_fdw "
                                                "OPTIONS (dbname 'postgres')"},
    {"tag": "ALTER SERVER", "role": SU, "sql": "ALTER SERVER srv OPTIONS (ADD port '1')"},
    {"tag": "CREATE USER MAPPING", "role": SU, "sql": "CREATE USER MAPPING FOR curator SERVER srv"},
    {"tag": "ALTER USER MAPPING", "role": SU, "sql": "ALTER USER MAPPING FOR curator SERVER srv OPTIONS (user 'x')"},
    {"tag": "DROP USER MAPPING", "role": SU, "sql": "DROP USER MAPPING FOR curator SERVER srv"},
    {"tag": "CREATE FOREIGN TABLE", "role": SU, "sql": "CREATE FOREIGN TABLE app.ft (id int) SERVER srv"},
    {"tag": "ALTER FOREIGN TABLE", "role": SU, "sql": "ALTER FOREIGN TABLE app.ft ADD COLUMN x int"},
    {"tag": "IMPORT FOREIGN SCHEMA", "role": SU, "sql": "SELECT 1", "skip_reason": "needs a reachable server"},
    {"tag": "DROP FOREIGN TABLE", "role": SU, "sql": "DROP FOREIGN TABLE app.ft"},
    {"tag": "DROP SERVER", "role": SU, "sql": "DROP SERVER srv"},
    {"tag": "DROP FOREIGN DATA WRAPPER", "role": SU, "sql": "DROP FOREIGN DATA WRAPPER fdw2"},
    {"tag": "CREATE PUBLICATION", "role": SU, "sql": "CREATE PUBLICATION pub FOR TABLE app.t"},
    {"tag": "ALTER PUBLICATION", "role": SU, "sql": "ALTER PUBLICATION pub ADD TABLE app.t_into"},
    {"tag": "DROP PUBLICATION", "role": SU, "sql": "DROP PUBLICATION pub"},
    {"tag": "ALTER LARGE OBJECT", "role": SU, "setup": "SELECT lo_create(4242)",
     "sql": f"ALTER LARGE OBJECT 4242 OWNER TO {ALICE}"},
    # schemas, privileges, ownership
    {"tag": "CREATE SCHEMA", "sql": "CREATE SCHEMA s2"},
    {"tag": "ALTER SCHEMA", "sql": "ALTER SCHEMA s2 RENAME TO s3"},
    {"tag": "ALTER SCHEMA OWNER (ownership)", "role": SU, "sql": f"ALTER SCHEMA s3 OWNER TO {ALICE}"},
    {"tag": "DROP SCHEMA", "role": SU, "sql": "DROP SCHEMA s3"},
    {"tag": "GRANT (table)", "sql": f"GRANT SELECT ON app.t TO {ALICE}"},
    {"tag": "REVOKE (table)", "sql": f"REVOKE SELECT ON app.t FROM {ALICE}"},
    {"tag": "GRANT (column)", "sql": f"GRANT UPDATE (a) ON app.t TO {ALICE}"},
    {"tag": "GRANT (schema)", "sql": "GRANT USAGE ON SCHEMA app TO PUBLIC"},
    {"tag": "GRANT (function, another role)", "role": ALICE, "sql": f"GRANT EXECUTE ON FUNCTION app.trg() TO {ALICE}",
     "setup": f"ALTER FUNCTION app.trg() OWNER TO {ALICE}"},
    {"tag": "ALTER DEFAULT PRIVILEGES", "sql": f"ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO "
                                              f"{ALICE}"},
    {"tag": "REASSIGN OWNED (ownership)", "role": SU, "sql": f"REASSIGN OWNED BY {ALICE} TO curator"},
    {"tag": "DROP OWNED", "role": SU, "sql": f"DROP OWNED BY {ALICE}"},
    {"tag": "DROP TABLE", "sql": "DROP TABLE app.t_into"},
    {"tag": "DROP TABLE (another role)", "role": SU, "sql": "DROP TABLE public.t_copy2"},
    # what no event trigger sees: shared objects and catalog-level state
    {"tag": "GRANT (database)", "role": SU, "sql": f"GRANT CONNECT ON DATABASE bench_detect TO {ALICE}"},
    {"tag": "ALTER DATABASE SET", "role": SU, "sql": "ALTER DATABASE bench_detect SET work_mem = '16MB'"},
    {"tag": "ALTER ROLE IN DATABASE SET", "role": SU,
     "sql": f"ALTER ROLE {ALICE} IN DATABASE bench_detect SET statement_timeout = '5s'"},
    {"tag": "COMMENT ON DATABASE", "role": SU, "sql": "COMMENT ON DATABASE bench_detect IS 'shop'"},
    {"tag": "ALTER EVENT TRIGGER DISABLE", "role": SU, "sql": "ALTER EVENT TRIGGER pgcurator_drop DISABLE"},
    {"tag": "DROP INDEX (trigger disabled)", "role": SU, "sql": "DROP INDEX app.m_2025_pkey",
     "setup": "CREATE UNIQUE INDEX m_2025_pkey ON app.m_2025 (d)"},
    {"tag": "ALTER EVENT TRIGGER ENABLE", "role": SU, "sql": "ALTER EVENT TRIGGER pgcurator_drop ENABLE"},
    {"tag": "session_replication_role = replica (restore)", "role": SU,
     "sql": "SET session_replication_role = replica; CREATE TABLE app.restored (id int); "
            "RESET session_replication_role"},
]
# Cases that cannot run here (no label provider, no transform functions, no reachable server)
# are left out of the figures and listed by the benchmark.
SKIPPED = [c["tag"] for c in CORPUS if c.get("skip_reason")]
CORPUS = [c for c in CORPUS if not c.get("skip_reason")]
