"""What a statement asks of each table it reads: the conjuncts of its filters and joins, its sort.

Pure: PostgreSQL's parser (pglast) reads the text; nothing touches a database. Only the AND-ed
conjuncts of WHERE and JOIN ... ON count (a test under OR or NOT cannot be served by one index
scan alone). Each conjunct is classified by what an index can do with it: an equality, a range,
a null test (never an index key: `IS NULL` selects rows, it does not look a value up), a JSON
key equality (`doc->>'k' = v`, an expression key), a containment (`@>`, `?`: GIN), a join key.
Whether the compared value is a constant (a literal that can go into a partial index's WHERE)
or a parameter / a non-immutable expression (`now() - interval '1 hour'`) is kept too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pglast import ast, keywords, parse_sql
from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType, SortByDir
from pglast.parser import ParseError
from pglast.stream import RawStream

TableKey = tuple[str, str]  # (schema, name)

_RANGE_OPS = {"<", ">", "<=", ">="}
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "="}
_CONTAINS_OPS = {"@>", "?", "?|", "?&"}


class Kind(StrEnum):
    eq = "eq"
    range = "range"
    null = "null"
    json_eq = "json_eq"
    contains = "contains"
    join_key = "join"


@dataclass(frozen=True)
class Conjunct:
    kind: Kind
    column: str
    op: str = "="
    constant: str | None = None  # SQL text of a literal value; None for parameters/expressions
    json_key: str | None = None
    is_null: bool = False

    def predicate_sql(self) -> str | None:
        """This test as SQL for a partial index's WHERE, when it has a constant form."""
        col = quote_name(self.column)
        if self.kind is Kind.null:
            return f"{col} IS {'' if self.is_null else 'NOT '}NULL"
        if self.constant is not None and self.kind in (Kind.eq, Kind.range):
            return f"{col} {self.op} {self.constant}"
        return None


@dataclass
class Usage:
    """What one statement asks of one table."""

    table: TableKey
    conjuncts: list[Conjunct] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    limit: bool = False
    vector_order: bool = False  # ORDER BY a distance operator: a VectorIndex's job, not a B-tree's


_KEYWORDS = keywords.RESERVED_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS | keywords.COL_NAME_KEYWORDS


def quote_name(name: str) -> str:
    """An identifier as quote_ident() writes it: bare when PostgreSQL reads it back unchanged (so
    suggestions read like hand-written DDL), double-quoted otherwise (case, symbols, keywords)."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _nodes(node: Any) -> Iterator[Any]:
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _nodes(item)
    elif isinstance(node, ast.Node):
        yield node
        for s in getattr(type(node), "__slots__", {}):
            v = getattr(node, s, None)
            if isinstance(v, (ast.Node, list, tuple)):
                yield from _nodes(v)


def _conjuncts(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.BoolExpr) and node.boolop == BoolExprType.AND_EXPR:
        for a in node.args or ():
            yield from _conjuncts(a)
    elif node is not None:
        yield node


def _constant(node: Any) -> str | None:
    """SQL text of a literal (optionally cast), else None."""
    if isinstance(node, ast.A_Const) and not node.isnull:
        return RawStream()(node)
    if isinstance(node, ast.TypeCast) and _constant(node.arg) is not None:
        return RawStream()(node)
    return None


def _has_column(node: Any) -> bool:
    return any(isinstance(n, (ast.ColumnRef, ast.SubLink)) for n in _nodes(node))


def _opname(n: ast.A_Expr) -> str | None:
    name = n.name or ()
    return getattr(name[-1], "sval", None) if name else None


class _Scope:
    """The relations of one SELECT/UPDATE/DELETE: alias -> table, and their columns."""

    def __init__(self, rels: dict[str, TableKey], columns: Mapping[TableKey, Any]) -> None:
        self.rels = rels
        self.columns = columns

    def resolve(self, node: Any) -> tuple[TableKey, str] | None:
        if not isinstance(node, ast.ColumnRef):
            return None
        fields = [getattr(f, "sval", None) for f in node.fields or ()]
        if not fields or any(f is None for f in fields):
            return None
        if len(fields) == 2 and fields[0] in self.rels:
            return self.rels[str(fields[0])], str(fields[1])
        if len(fields) == 1:
            owners = {t for t in self.rels.values() if fields[0] in self.columns.get(t, ())}
            if len(owners) == 1:
                return owners.pop(), str(fields[0])
        return None


def _relations(stmt: Any, known: Mapping[TableKey, Any], default_schemas: tuple[str, ...]) -> dict[str, TableKey]:
    """alias -> table for the relations named directly in this statement's FROM (not sub-selects)."""
    out: dict[str, TableKey] = {}
    roots: list[Any] = []
    if isinstance(stmt, ast.SelectStmt):
        roots = list(stmt.fromClause or ())
    elif isinstance(stmt, (ast.UpdateStmt, ast.DeleteStmt)):
        roots = [stmt.relation, *(getattr(stmt, "fromClause", None) or getattr(stmt, "usingClause", None) or ())]
    stack = roots
    while stack:
        n = stack.pop()
        if isinstance(n, ast.JoinExpr):
            stack += [n.larg, n.rarg]
        elif isinstance(n, ast.RangeVar):
            key = resolve_table(n.schemaname, str(n.relname), known, default_schemas)
            if key is not None:
                out[str(n.alias.aliasname) if n.alias is not None else str(n.relname)] = key
    return out


def resolve_table(schema: str | None, name: str, known: Mapping[TableKey, Any],
                  default_schemas: tuple[str, ...] = ("public",)) -> TableKey | None:
    if schema is not None:
        return (schema, name) if (schema, name) in known else None
    for s in default_schemas:
        if (s, name) in known:
            return s, name
    hits = [k for k in known if k[1] == name]
    return hits[0] if len(hits) == 1 else None


def _join_quals(stmt: Any) -> Iterator[Any]:
    stack = list(getattr(stmt, "fromClause", None) or ())
    while stack:
        n = stack.pop()
        if isinstance(n, ast.JoinExpr):
            stack += [n.larg, n.rarg]
            yield from _conjuncts(n.quals)


def _classify(expr: Any, scope: _Scope) -> Iterator[tuple[TableKey, Conjunct]]:
    if isinstance(expr, ast.NullTest):
        hit = scope.resolve(expr.arg)
        if hit:
            yield hit[0], Conjunct(Kind.null, hit[1], is_null=expr.nulltesttype == NullTestType.IS_NULL)
        return
    if isinstance(expr, ast.ColumnRef):  # WHERE is_read
        hit = scope.resolve(expr)
        if hit:
            yield hit[0], Conjunct(Kind.eq, hit[1], constant="true")
        return
    if isinstance(expr, ast.BoolExpr) and expr.boolop == BoolExprType.NOT_EXPR:
        hit = scope.resolve((expr.args or (None,))[0])
        if hit:
            yield hit[0], Conjunct(Kind.eq, hit[1], constant="false")
        return
    if not isinstance(expr, ast.A_Expr):
        return
    op = _opname(expr)
    if expr.kind in (A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_OP_ANY) and op == "=":
        hit = scope.resolve(expr.lexpr)
        if hit:
            yield hit[0], Conjunct(Kind.eq, hit[1])
        return
    if expr.kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_BETWEEN_SYM):
        hit = scope.resolve(expr.lexpr)
        if hit:
            yield hit[0], Conjunct(Kind.range, hit[1], op="between")
        return
    if expr.kind != A_Expr_Kind.AEXPR_OP or op is None:
        return
    left, right = scope.resolve(expr.lexpr), scope.resolve(expr.rexpr)
    if op == "=" and left and right:  # a join key, each side a candidate on its own table
        yield left[0], Conjunct(Kind.join_key, left[1])
        yield right[0], Conjunct(Kind.join_key, right[1])
        return
    for col, other, o in ((left, expr.rexpr, op), (right, expr.lexpr, _FLIP.get(op, ""))):
        if col is None or _has_column(other):
            continue
        if o == "=":
            yield col[0], Conjunct(Kind.eq, col[1], constant=_constant(other))
        elif o in _RANGE_OPS:
            yield col[0], Conjunct(Kind.range, col[1], op=o, constant=_constant(other))
        elif o in _CONTAINS_OPS and col is left:
            yield col[0], Conjunct(Kind.contains, col[1], op=o)
        return
    # doc->>'key' = value
    for side, other in ((expr.lexpr, expr.rexpr), (expr.rexpr, expr.lexpr)):
        if (op == "=" and isinstance(side, ast.A_Expr) and _opname(side) == "->>" and not _has_column(other)
                and isinstance(side.rexpr, ast.A_Const) and isinstance(side.rexpr.val, ast.String)):
            hit = scope.resolve(side.lexpr)
            if hit:
                yield hit[0], Conjunct(Kind.json_eq, hit[1], json_key=side.rexpr.val.sval)
            return


def _sort(stmt: ast.SelectStmt, scope: _Scope, usages: dict[TableKey, Usage]) -> None:
    items = list(stmt.sortClause or ())
    cols: list[tuple[TableKey, str, bool]] = []
    for sb in items:
        hit = scope.resolve(sb.node)
        if hit is None:
            if isinstance(sb.node, ast.A_Expr) and _opname(sb.node) in ("<->", "<=>", "<#>", "<+>"):
                for n in _nodes(sb.node):
                    h = scope.resolve(n)
                    if h and h[0] in usages:
                        usages[h[0]].vector_order = True
            return  # an expression: no plain index order serves the whole sort
        cols.append((hit[0], hit[1], sb.sortby_dir == SortByDir.SORTBY_DESC))
    tables = {c[0] for c in cols}
    if len(tables) == 1:  # one index can only deliver the order of one relation
        t = tables.pop()
        if t in usages:
            usages[t].sort = [(c, d) for _, c, d in cols]


def _statement_usages(stmt: Any, known: Mapping[TableKey, Any],
                      default_schemas: tuple[str, ...]) -> list[Usage]:
    rels = _relations(stmt, known, default_schemas)
    if not rels:
        return []
    scope = _Scope(rels, known)
    usages = {t: Usage(t) for t in rels.values()}
    quals = list(_conjuncts(getattr(stmt, "whereClause", None))) + list(_join_quals(stmt))
    for q in quals:
        for table, c in _classify(q, scope):
            if table in usages:
                usages[table].conjuncts.append(c)
    if isinstance(stmt, ast.SelectStmt):
        _sort(stmt, scope, usages)
        limited = stmt.limitCount is not None
        for u in usages.values():
            u.limit = limited
    return list(usages.values())


def usages(query: str, known: Mapping[TableKey, Any],
           default_schemas: tuple[str, ...] = ("public",)) -> list[Usage]:
    """Per (sub)statement and table: what `query` asks of the tables in `known` (schema, name) ->
    column names. Unknown tables are ignored; an unparsable text gives nothing."""
    try:
        statements = parse_sql(query)
    except ParseError:
        return []
    out: list[Usage] = []
    for raw in statements:
        for n in _nodes(raw.stmt):
            if isinstance(n, (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt)):
                out.extend(_statement_usages(n, known, default_schemas))
    return out


def parameter_count(query: str) -> int:
    try:
        statements = parse_sql(query)
    except ParseError:
        return 0
    return max((int(n.number or 0) for n in _nodes(statements) if isinstance(n, ast.ParamRef)), default=0)


def rewrite_table(query: str, table: TableKey, scratch: str,
                  known: Mapping[TableKey, Any], default_schemas: tuple[str, ...] = ("public",)) -> str | None:
    """The single statement `query` with every reference to `table` pointed at pg_temp.`scratch`."""
    try:
        statements = parse_sql(query)
    except ParseError:
        return None
    if len(statements) != 1 or statements[0].stmt is None:
        return None
    stmt = statements[0].stmt
    for n in _nodes(stmt):
        if isinstance(n, ast.RangeVar) and resolve_table(n.schemaname, str(n.relname), known, default_schemas) == table:
            if n.alias is None:
                n.alias = ast.Alias(aliasname=n.relname)
            n.relname = scratch
            n.schemaname = "pg_temp"
    return RawStream()(stmt)


def referenced_columns(query: str, table: TableKey, known: Mapping[TableKey, Any],
                       default_schemas: tuple[str, ...] = ("public",)) -> set[str] | None:
    """Columns of `table` the statement names anywhere; None when it needs all (`*`)."""
    try:
        statements = parse_sql(query)
    except ParseError:
        return set()
    names = set(known.get(table, ()))
    out: set[str] = set()
    for n in _nodes(statements):
        if isinstance(n, ast.ColumnRef):
            fields = n.fields or ()
            if fields and isinstance(fields[-1], ast.A_Star):
                return None
            last = getattr(fields[-1], "sval", None) if fields else None
            if last in names:
                out.add(str(last))
    return out


_SAFE_FUNCTIONS = {"count", "sum", "min", "max", "avg", "now"}


def measurable(query: str) -> bool:
    """Whether running the statement on a scratch copy is harmless: one plain SELECT of one table
    with no parameters (nothing to invent), no row locks and no function but a few aggregates."""
    try:
        statements = parse_sql(query)
    except ParseError:
        return False
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        return False
    stmt = statements[0].stmt
    nodes = list(_nodes(stmt))
    unsafe = (ast.ParamRef, ast.SubLink, ast.RangeSubselect, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt,
              ast.MergeStmt, ast.RangeFunction)
    if stmt.lockingClause or stmt.withClause or stmt.intoClause or any(isinstance(n, unsafe) for n in nodes):
        return False
    funcs = [getattr((n.funcname or (None,))[-1], "sval", None) for n in nodes if isinstance(n, ast.FuncCall)]
    return all(f in _SAFE_FUNCTIONS for f in funcs) and sum(isinstance(n, ast.RangeVar) for n in nodes) == 1


def single_statement(query: str) -> str | None:
    """The text as exactly one SELECT/INSERT/UPDATE/DELETE, rebuilt from its parse tree (what is
    given to PREPARE is never a raw workload text that could hold a second statement)."""
    try:
        statements = parse_sql(query)
    except ParseError:
        return None
    if len(statements) != 1 or not isinstance(
            statements[0].stmt, (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)):
        return None
    return RawStream()(statements[0].stmt)
