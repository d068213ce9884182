"""Index suggestions from normalised statements (pg_stat_statements), pure part.

Each statement is parsed with PostgreSQL's parser (pglast). For the managed table we collect
equality filters and join keys, range filters and ORDER BY columns, and propose one B-tree:
equality columns first, then one range column, else the sort columns — the usual rule of thumb
for composite indexes. The database side (reconcile.index_suggest) then checks each proposal
with the planner on a scratch copy before reporting it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind
from pglast.parser import ParseError
from pglast.stream import RawStream

from ..catalog.indexes import IndexInfo

_EQ_OPS = {"="}
_RANGE_OPS = {"<", ">", "<=", ">="}


@dataclass
class Pattern:
    equality: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    sort: list[str] = field(default_factory=list)

    def proposal(self) -> tuple[str, ...]:
        cols: list[str] = []
        for c in self.equality:
            if c not in cols:
                cols.append(c)
        tail = [c for c in self.ranges[:1] if c not in cols] or [c for c in self.sort if c not in cols]
        return tuple(cols + tail)[:4]


def _nodes(node: Any) -> Iterator[Any]:
    """Every node under `node`, in source order (so proposals keep the statement's column order)."""
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _nodes(item)
    elif isinstance(node, ast.Node):
        yield node
        slots: dict[str, object] = getattr(type(node), "__slots__", {})
        for s in slots:
            v = getattr(node, s, None)
            if isinstance(v, (ast.Node, list, tuple)):
                yield from _nodes(v)


def _aliases(stmt: Any, schema: str, table: str) -> tuple[set[str], int]:
    """Names by which `stmt` refers to the table, and how many relations it reads in all."""
    names: set[str] = set()
    count = 0
    for n in _nodes(stmt):
        if isinstance(n, ast.RangeVar):
            count += 1
            if n.relname == table and n.schemaname in (None, schema):
                names.add(str(n.alias.aliasname) if n.alias is not None else table)
    return names, count


def _column(node: Any, aliases: set[str], single: bool) -> str | None:
    if not isinstance(node, ast.ColumnRef):
        return None
    fields = [getattr(f, "sval", None) for f in node.fields or ()]
    if any(f is None for f in fields):
        return None
    if len(fields) == 1 and single:
        return fields[0]
    if len(fields) == 2 and fields[0] in aliases:
        return fields[1]
    return None


def _is_value(node: Any) -> bool:
    return isinstance(node, (ast.A_Const, ast.ParamRef)) or (
        isinstance(node, ast.TypeCast) and _is_value(node.arg))


def patterns_for_table(query: str, schema: str, table: str) -> list[Pattern]:
    try:
        statements = parse_sql(query)
    except ParseError:
        return []
    out = []
    for raw in statements:
        stmt = raw.stmt
        if not isinstance(stmt, (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt)):
            continue
        aliases, relations = _aliases(stmt, schema, table)
        if not aliases:
            continue
        single = relations == 1
        p = Pattern()
        for n in _nodes(stmt):
            if isinstance(n, ast.A_Expr):
                op = getattr((n.name or [None])[-1], "sval", None)
                left, right = _column(n.lexpr, aliases, single), _column(n.rexpr, aliases, single)
                if n.kind == A_Expr_Kind.AEXPR_OP and op in _EQ_OPS:
                    if left and (_is_value(n.rexpr) or isinstance(n.rexpr, ast.ColumnRef)):
                        p.equality.append(left)
                    elif right and (_is_value(n.lexpr) or isinstance(n.lexpr, ast.ColumnRef)):
                        p.equality.append(right)
                elif n.kind in (A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_OP_ANY) and left:
                    p.equality.append(left)
                elif n.kind == A_Expr_Kind.AEXPR_OP and op in _RANGE_OPS:
                    if left and _is_value(n.rexpr):
                        p.ranges.append(left)
                    elif right and _is_value(n.lexpr):
                        p.ranges.append(right)
                elif n.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN) and left:
                    p.ranges.append(left)
            elif isinstance(n, ast.NullTest):
                col = _column(n.arg, aliases, single)
                if col:
                    p.equality.append(col)
        if isinstance(stmt, ast.SelectStmt):
            for sb in stmt.sortClause or ():
                col = _column(sb.node, aliases, single)
                if col:
                    p.sort.append(col)
        if p.proposal():
            out.append(p)
    return out


def _unquote(key: str) -> str:
    return key[1:-1].replace('""', '"') if key.startswith('"') and key.endswith('"') else key


def covered(columns: tuple[str, ...], indexes: list[IndexInfo]) -> str | None:
    """Name of an existing valid btree whose leading keys are these columns (any order of the
    equality part is not considered: the proposal's order is the one checked)."""
    for info in indexes:
        if not info.valid or info.method != "btree" or info.predicate:
            continue
        keys = [_unquote(k) for k in info.key_columns]
        if tuple(keys[: len(columns)]) == columns:
            return info.name
    return None


def rewrite_table(query: str, schema: str, table: str, scratch: str) -> str | None:
    """The statement with every reference to the table pointed at the scratch copy."""
    try:
        statements = parse_sql(query)
    except ParseError:
        return None
    if len(statements) != 1:
        return None
    stmt = statements[0].stmt
    if stmt is None:
        return None
    for n in _nodes(stmt):
        if isinstance(n, ast.RangeVar) and n.relname == table and n.schemaname in (None, schema):
            if n.alias is None:
                n.alias = ast.Alias(aliasname=table)
            n.relname = scratch
            n.schemaname = "pg_temp"
    return RawStream()(stmt)
