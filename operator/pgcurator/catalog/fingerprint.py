"""The catalog fingerprint: one hash per object definition, read in one query.

Identities are pg_identify_object()'s, the same text the event trigger records, so a change
found by both mechanisms is recognised as one. Objects that belong to an extension are covered by
the extension's version. Every statement is tagged /*pgcurator*/ so the slow-statement report
leaves it out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# $1: schemas never observed; $2: schemas observed (empty: all others).
_FINGERPRINT_SQL = r"""
WITH ns AS (
  SELECT n.oid, n.nspname FROM pg_catalog.pg_namespace n
   WHERE n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast%'
     AND (cardinality($2::text[]) = 0 OR n.nspname = ANY($2::text[]))
), ext AS (
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d WHERE d.deptype = 'e'
), rel AS (
  SELECT c.oid, c.relkind, ns.nspname, c.relname,
         pg_catalog.quote_ident(ns.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS identity
    FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S', 'c')
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_class'::regclass AND ext.objid = c.oid)
), objs AS (
  SELECT 'schema' AS kind, pg_catalog.quote_ident(ns.nspname) AS identity, NULL::text AS parent,
         concat_ws('|', pg_catalog.pg_get_userbyid(n.nspowner), n.nspacl::text,
                   pg_catalog.obj_description(n.oid, 'pg_namespace')) AS def
    FROM pg_catalog.pg_namespace n JOIN ns ON ns.oid = n.oid
  UNION ALL
  SELECT (pg_catalog.pg_identify_object('pg_catalog.pg_class'::regclass, c.oid, 0)).type, rel.identity,
         (SELECT pg_catalog.quote_ident(pn.nspname) || '.' || pg_catalog.quote_ident(p.relname)
            FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
            JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
           WHERE i.inhrelid = c.oid AND c.relispartition),
         concat_ws('|', c.relkind, pg_catalog.pg_get_userbyid(c.relowner), c.relacl::text, c.reloptions::text,
                   c.relpersistence, c.relrowsecurity, c.relforcerowsecurity, c.relreplident,
                   pg_catalog.pg_get_expr(c.relpartbound, c.oid), pg_catalog.pg_get_partkeydef(c.oid),
                   CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END,
                   pg_catalog.obj_description(c.oid, 'pg_class'),
                   (SELECT t.spcname FROM pg_catalog.pg_tablespace t WHERE t.oid = c.reltablespace),
                   (SELECT string_agg(concat_ws(':', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                                                a.attnotnull, pg_catalog.pg_get_expr(d.adbin, d.adrelid),
                                                a.attidentity, a.attgenerated, a.attcollation, a.attacl::text,
                                                a.attstorage, pg_catalog.col_description(c.oid, a.attnum)),
                                      ',' ORDER BY a.attnum)
                      FROM pg_catalog.pg_attribute a
                      LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                   (SELECT concat_ws(':', s.seqtypid, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache,
                                     s.seqcycle)
                      FROM pg_catalog.pg_sequence s WHERE s.seqrelid = c.oid),
                   (SELECT string_agg(pg_catalog.pg_get_ruledef(r.oid), ';' ORDER BY r.rulename)
                      FROM pg_catalog.pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN'))
    FROM rel JOIN pg_catalog.pg_class c ON c.oid = rel.oid
  UNION ALL
  SELECT 'index', pg_catalog.quote_ident(ns.nspname) || '.' || pg_catalog.quote_ident(ic.relname), rel.identity,
         concat_ws('|', pg_catalog.pg_get_indexdef(i.indexrelid), pg_catalog.obj_description(ic.oid, 'pg_class'),
                   (SELECT t.spcname FROM pg_catalog.pg_tablespace t WHERE t.oid = ic.reltablespace),
                   i.indisclustered, i.indisreplident)
    FROM pg_catalog.pg_index i JOIN rel ON rel.oid = i.indrelid
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN ns ON ns.oid = ic.relnamespace
  UNION ALL
  SELECT 'table constraint', (pg_catalog.pg_identify_object('pg_catalog.pg_constraint'::regclass, k.oid, 0)).identity,
         rel.identity,
         concat_ws('|', k.contype, pg_catalog.pg_get_constraintdef(k.oid), k.convalidated, k.condeferrable,
                   k.condeferred, pg_catalog.obj_description(k.oid, 'pg_constraint'))
    FROM pg_catalog.pg_constraint k JOIN rel ON rel.oid = k.conrelid
  UNION ALL
  SELECT 'trigger', (pg_catalog.pg_identify_object('pg_catalog.pg_trigger'::regclass, t.oid, 0)).identity,
         rel.identity,
         concat_ws('|', pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled, pg_catalog.obj_description(t.oid, 'pg_trigger'))
    FROM pg_catalog.pg_trigger t JOIN rel ON rel.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'policy', (pg_catalog.pg_identify_object('pg_catalog.pg_policy'::regclass, p.oid, 0)).identity, rel.identity,
         concat_ws('|', p.polcmd, p.polpermissive, p.polroles::text, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                   pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_catalog.pg_policy p JOIN rel ON rel.oid = p.polrelid
  UNION ALL
  SELECT 'statistics object', (pg_catalog.pg_identify_object('pg_catalog.pg_statistic_ext'::regclass, s.oid, 0)).identity,
         rel.identity, concat_ws('|', pg_catalog.pg_get_statisticsobjdef(s.oid), s.stxstattarget)
    FROM pg_catalog.pg_statistic_ext s JOIN rel ON rel.oid = s.stxrelid
  UNION ALL
  SELECT (pg_catalog.pg_identify_object('pg_catalog.pg_proc'::regclass, p.oid, 0)).type,
         (pg_catalog.pg_identify_object('pg_catalog.pg_proc'::regclass, p.oid, 0)).identity, NULL,
         concat_ws('|', p.prokind, pg_catalog.pg_get_function_identity_arguments(p.oid),
                   pg_catalog.pg_get_function_result(p.oid), p.prolang, p.prosrc, p.probin, p.provolatile,
                   p.prosecdef, p.proleakproof, p.proisstrict, p.proparallel, p.procost, p.prorows,
                   p.proconfig::text, p.proacl::text, pg_catalog.pg_get_userbyid(p.proowner),
                   pg_catalog.obj_description(p.oid, 'pg_proc'))
    FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_proc'::regclass AND ext.objid = p.oid)
  UNION ALL
  SELECT (pg_catalog.pg_identify_object('pg_catalog.pg_type'::regclass, t.oid, 0)).type,
         (pg_catalog.pg_identify_object('pg_catalog.pg_type'::regclass, t.oid, 0)).identity, NULL,
         concat_ws('|', t.typtype, pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
                   t.typacl::text, pg_catalog.pg_get_userbyid(t.typowner), pg_catalog.obj_description(t.oid, 'pg_type'),
                   (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                      FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
                   (SELECT string_agg(k.conname || ':' || pg_catalog.pg_get_constraintdef(k.oid), ',' ORDER BY k.conname)
                      FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid))
    FROM pg_catalog.pg_type t JOIN ns ON ns.oid = t.typnamespace
   WHERE t.typtype IN ('e', 'd', 'r', 'b') AND t.typcategory <> 'A'
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_type'::regclass AND ext.objid = t.oid)
  UNION ALL
  SELECT 'extension', pg_catalog.quote_ident(e.extname), NULL,
         concat_ws('|', e.extversion, e.extnamespace::regnamespace::text, pg_catalog.pg_get_userbyid(e.extowner))
    FROM pg_catalog.pg_extension e
  UNION ALL
  SELECT 'event trigger', pg_catalog.quote_ident(e.evtname), NULL,
         concat_ws('|', e.evtevent, e.evtenabled, e.evtfoid::regprocedure::text, e.evttags::text)
    FROM pg_catalog.pg_event_trigger e
  UNION ALL
  SELECT 'default acl', (pg_catalog.pg_identify_object('pg_catalog.pg_default_acl'::regclass, a.oid, 0)).identity,
         NULL, a.defaclacl::text
    FROM pg_catalog.pg_default_acl a
  UNION ALL
  SELECT 'database', pg_catalog.quote_ident(d.datname), NULL,
         concat_ws('|', pg_catalog.pg_get_userbyid(d.datdba), d.datacl::text, d.datconnlimit, d.datallowconn,
                   pg_catalog.shobj_description(d.oid, 'pg_database'),
                   (SELECT string_agg(coalesce(pg_catalog.pg_get_userbyid(s.setrole), '*') || '=' || s.setconfig::text,
                                      ';' ORDER BY s.setrole)
                      FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid))
    FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()
), more AS (
  -- The rest of what DDL can create in a database. Non-schema objects count when created by a
  -- user (oid >= 16384, FirstNormalObjectId); members of extensions are covered by the extension.
  SELECT 'operator' AS kind, (pg_catalog.pg_identify_object('pg_catalog.pg_operator'::regclass, o.oid, 0)).identity,
         concat_ws('|', o.oprcode, o.oprrest, o.oprjoin, o.oprcom, o.oprnegate, o.oprcanhash, o.oprcanmerge,
                   pg_catalog.pg_get_userbyid(o.oprowner), pg_catalog.obj_description(o.oid, 'pg_operator')) AS def
    FROM pg_catalog.pg_operator o JOIN ns ON ns.oid = o.oprnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_operator'::regclass AND ext.objid = o.oid)
  UNION ALL
  SELECT 'operator family', (pg_catalog.pg_identify_object('pg_catalog.pg_opfamily'::regclass, f.oid, 0)).identity,
         concat_ws('|', pg_catalog.pg_get_userbyid(f.opfowner),
                   (SELECT string_agg(a.amopstrategy || ':' || a.amopopr::regoperator::text, ',' ORDER BY 1)
                      FROM pg_catalog.pg_amop a WHERE a.amopfamily = f.oid),
                   (SELECT string_agg(a.amprocnum || ':' || a.amproc::text, ',' ORDER BY 1)
                      FROM pg_catalog.pg_amproc a WHERE a.amprocfamily = f.oid))
    FROM pg_catalog.pg_opfamily f JOIN ns ON ns.oid = f.opfnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_opfamily'::regclass AND ext.objid = f.oid)
  UNION ALL
  SELECT 'operator class', (pg_catalog.pg_identify_object('pg_catalog.pg_opclass'::regclass, c.oid, 0)).identity,
         concat_ws('|', c.opcfamily, c.opcintype, c.opcdefault, c.opckeytype, pg_catalog.pg_get_userbyid(c.opcowner))
    FROM pg_catalog.pg_opclass c JOIN ns ON ns.oid = c.opcnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_opclass'::regclass AND ext.objid = c.oid)
  UNION ALL
  SELECT 'cast', (pg_catalog.pg_identify_object('pg_catalog.pg_cast'::regclass, c.oid, 0)).identity,
         concat_ws('|', c.castfunc, c.castcontext, c.castmethod)
    FROM pg_catalog.pg_cast c
   WHERE c.oid >= 16384
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_cast'::regclass AND ext.objid = c.oid)
  UNION ALL
  SELECT 'collation', (pg_catalog.pg_identify_object('pg_catalog.pg_collation'::regclass, c.oid, 0)).identity,
         concat_ws('|', c.collprovider, c.collisdeterministic, c.collencoding, c.collcollate, c.collctype,
                   pg_catalog.pg_get_userbyid(c.collowner), pg_catalog.obj_description(c.oid, 'pg_collation'))
    FROM pg_catalog.pg_collation c JOIN ns ON ns.oid = c.collnamespace
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_collation'::regclass AND ext.objid = c.oid)
  UNION ALL
  SELECT 'conversion', (pg_catalog.pg_identify_object('pg_catalog.pg_conversion'::regclass, c.oid, 0)).identity,
         concat_ws('|', c.conforencoding, c.contoencoding, c.conproc, c.condefault, pg_catalog.pg_get_userbyid(c.conowner))
    FROM pg_catalog.pg_conversion c JOIN ns ON ns.oid = c.connamespace
  UNION ALL
  SELECT 'text search configuration',
         (pg_catalog.pg_identify_object('pg_catalog.pg_ts_config'::regclass, c.oid, 0)).identity,
         concat_ws('|', c.cfgparser, pg_catalog.pg_get_userbyid(c.cfgowner),
                   (SELECT string_agg(m.maptokentype || ':' || m.mapseqno || ':' || m.mapdict, ',' ORDER BY 1)
                      FROM pg_catalog.pg_ts_config_map m WHERE m.mapcfg = c.oid))
    FROM pg_catalog.pg_ts_config c JOIN ns ON ns.oid = c.cfgnamespace
  UNION ALL
  SELECT 'text search dictionary',
         (pg_catalog.pg_identify_object('pg_catalog.pg_ts_dict'::regclass, d.oid, 0)).identity,
         concat_ws('|', d.dicttemplate, d.dictinitoption, pg_catalog.pg_get_userbyid(d.dictowner))
    FROM pg_catalog.pg_ts_dict d JOIN ns ON ns.oid = d.dictnamespace
  UNION ALL
  SELECT 'text search parser', (pg_catalog.pg_identify_object('pg_catalog.pg_ts_parser'::regclass, p.oid, 0)).identity,
         concat_ws('|', p.prsstart, p.prstoken, p.prsend, p.prsheadline, p.prslextype)
    FROM pg_catalog.pg_ts_parser p JOIN ns ON ns.oid = p.prsnamespace
  UNION ALL
  SELECT 'text search template',
         (pg_catalog.pg_identify_object('pg_catalog.pg_ts_template'::regclass, t.oid, 0)).identity,
         concat_ws('|', t.tmplinit, t.tmpllexize)
    FROM pg_catalog.pg_ts_template t JOIN ns ON ns.oid = t.tmplnamespace
  UNION ALL
  SELECT 'language', pg_catalog.quote_ident(l.lanname),
         concat_ws('|', l.lanpltrusted, l.lanplcallfoid, l.laninline, l.lanvalidator, l.lanacl::text,
                   pg_catalog.pg_get_userbyid(l.lanowner))
    FROM pg_catalog.pg_language l
   WHERE l.oid >= 16384
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_language'::regclass AND ext.objid = l.oid)
  UNION ALL
  SELECT 'access method', pg_catalog.quote_ident(a.amname), concat_ws('|', a.amhandler, a.amtype)
    FROM pg_catalog.pg_am a
   WHERE a.oid >= 16384
     AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_am'::regclass AND ext.objid = a.oid)
  UNION ALL
  SELECT 'foreign-data wrapper', pg_catalog.quote_ident(w.fdwname),
         concat_ws('|', w.fdwhandler, w.fdwvalidator, w.fdwacl::text, w.fdwoptions::text,
                   pg_catalog.pg_get_userbyid(w.fdwowner))
    FROM pg_catalog.pg_foreign_data_wrapper w
   WHERE NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_catalog.pg_foreign_data_wrapper'::regclass
                                          AND ext.objid = w.oid)
  UNION ALL
  SELECT 'server', pg_catalog.quote_ident(s.srvname),
         concat_ws('|', s.srvfdw, s.srvtype, s.srvversion, s.srvacl::text, s.srvoptions::text,
                   pg_catalog.pg_get_userbyid(s.srvowner))
    FROM pg_catalog.pg_foreign_server s
  UNION ALL
  -- pg_user_mappings shows the options only to whoever may see them; the mapping itself to all
  SELECT 'user mapping', (pg_catalog.pg_identify_object('pg_catalog.pg_user_mapping'::regclass, u.umid, 0)).identity,
         u.umoptions::text
    FROM pg_catalog.pg_user_mappings u
  UNION ALL
  SELECT 'publication', pg_catalog.quote_ident(p.pubname),
         concat_ws('|', p.puballtables, p.pubinsert, p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot,
                   pg_catalog.pg_get_userbyid(p.pubowner),
                   (SELECT string_agg(r.prrelid::regclass::text, ',' ORDER BY 1)
                      FROM pg_catalog.pg_publication_rel r WHERE r.prpubid = p.oid),
                   (SELECT string_agg(n.pnnspid::regnamespace::text, ',' ORDER BY 1)
                      FROM pg_catalog.pg_publication_namespace n WHERE n.pnpubid = p.oid))
    FROM pg_catalog.pg_publication p
)
SELECT kind, identity, parent, pg_catalog.md5(coalesce(def, '')) AS hash FROM objs
UNION ALL
SELECT kind, identity, NULL, pg_catalog.md5(coalesce(def, '')) FROM more /*pgcurator*/
"""


@dataclass(frozen=True)
class CatalogObject:
    kind: str
    identity: str
    parent: str | None  # the table of an index, constraint, trigger or policy; a partition's parent
    hash: str


async def read_fingerprint(conn: Any, never: list[str], only: list[str]) -> list[CatalogObject]:
    rows = await conn.fetch(_FINGERPRINT_SQL, never, only)
    return [CatalogObject(r["kind"], r["identity"], r["parent"], r["hash"]) for r in rows]


_IDENTITIES_SQL = """
SELECT pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(n) AS identity
  FROM unnest($1::text[], $2::text[]) AS u(s, n) /*pgcurator*/
"""


async def identities(conn: Any, names: list[tuple[str, str]]) -> list[str]:
    """schema.name as pg_identify_object writes it (quoted only where needed), in order."""
    if not names:
        return []
    rows = await conn.fetch(_IDENTITIES_SQL, [s for s, _ in names], [n for _, n in names])
    return [r["identity"] for r in rows]
