"""Validation of user-written SQL fragments (index expressions, partial-index predicates).

A fragment from a spec is spliced into DDL, so it must be exactly one plain scalar expression.
We parse it with PostgreSQL's own parser (pglast = libpg_query), wrapped as
`SELECT 1 WHERE <text>`, then:

* the parse must give exactly one statement of exactly that shape (a `;`, a `)` closing our
  wrapper early, a UNION, a FROM... all change the shape and are refused);
* the source must contain no comments, dollar-quoted strings or parameters (they are never
  needed in an index expression and are the usual ways to hide something from a reader);
* every node of the expression tree must be of an allow-listed kind (no sub-queries, no
  parameters, no `*`, no window/aggregate calls, no current_* value functions...);
* every function must be in an allowlist of immutable built-ins, every operator one of the
  standard built-in operator symbols, and schema qualification only `pg_catalog`.

The returned text is the expression deparsed from the tree, never the user's text, so what
reaches the database is exactly what was checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, parse_sql
from pglast.enums import A_Expr_Kind
from pglast.parser import ParseError, scan
from pglast.stream import RawStream

from ..errors import SpecError

MAX_EXPRESSION_LENGTH = 4000

# Immutable built-in functions useful in index expressions and partial predicates.
# (PostgreSQL itself refuses non-immutable functions in an index; this list also keeps out
# immutable-but-dangerous or side-effecting ones, and anything user-defined.)
SAFE_FUNCTIONS: frozenset[str] = frozenset(
    {
        # text
        "lower", "upper", "initcap", "btrim", "ltrim", "rtrim", "length", "char_length",
        "character_length", "octet_length", "bit_length", "substr", "substring", "left", "right",
        "lpad", "rpad", "replace", "split_part", "reverse", "strpos", "position", "overlay",
        "md5", "concat_ws", "translate", "ascii", "chr", "starts_with", "normalize",
        "regexp_replace", "regexp_match", "regexp_substr", "unaccent_immutable",
        # numbers
        "abs", "round", "trunc", "floor", "ceil", "ceiling", "sign", "mod", "div", "power",
        "sqrt", "cbrt", "exp", "ln", "log", "log10", "gcd", "lcm", "width_bucket",
        # dates (the timestamp-without-time-zone forms are immutable; PostgreSQL refuses the rest)
        "date_part", "extract", "date_trunc", "date_bin", "make_date", "make_timestamp", "timezone",
        "isfinite",
        # json / jsonb
        "jsonb_extract_path", "jsonb_extract_path_text", "json_extract_path", "json_extract_path_text",
        "jsonb_typeof", "json_typeof", "jsonb_array_length", "json_array_length", "jsonb_exists",
        "jsonb_build_array", "jsonb_build_object", "jsonb_strip_nulls",
        # arrays
        "array_length", "cardinality", "array_lower", "array_upper", "array_ndims", "array_position",
        # text search (the two-argument forms are immutable)
        "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery",
        "setweight", "strip", "array_to_tsvector", "array_to_string",
        # casts written as calls, misc
        "int2", "int4", "int8", "float4", "float8", "numeric", "text", "bool", "date",
        "num_nulls", "num_nonnulls", "hashtext", "uuid_extract_version", "similar_to_escape",
    }
)

# Built-in operator symbols (all immutable for the built-in types).
SAFE_OPERATORS: frozenset[str] = frozenset(
    {
        "=", "<>", "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "^", "||", "|/", "||/", "@",
        "&", "|", "#", "~", "<<", ">>", "~~", "!~~", "~~*", "!~~*", "~*", "!~", "!~*", "@>", "<@",
        "&&", "?", "?|", "?&", "->", "->>", "#>", "#>>", "#-", "@@", "@?", "<->", "&<", "&>",
        "<<|", "|>>", "-|-", "^@",
    }
)

# Types an expression may cast to. reg* types (regclass, regproc...) are left out: their input
# functions look at the catalog, and they are how a string turns into an object reference.
SAFE_TYPES: frozenset[str] = frozenset(
    {
        "bool", "boolean", "int2", "int4", "int8", "smallint", "integer", "int", "bigint", "numeric",
        "decimal", "float4", "float8", "real", "double precision", "text", "varchar", "bpchar", "char",
        "character", "character varying", "name", "date", "time", "timetz", "timestamp", "timestamptz",
        "interval", "uuid", "json", "jsonb", "bytea", "inet", "cidr", "macaddr", "tsvector", "tsquery",
        "regconfig", "bit", "varbit", "money", "citext", "vector", "halfvec", "sparsevec",
    }
)

_ALLOWED_A_EXPR_KINDS = frozenset(
    {
        A_Expr_Kind.AEXPR_OP,
        A_Expr_Kind.AEXPR_OP_ANY,
        A_Expr_Kind.AEXPR_OP_ALL,
        A_Expr_Kind.AEXPR_DISTINCT,
        A_Expr_Kind.AEXPR_NOT_DISTINCT,
        A_Expr_Kind.AEXPR_NULLIF,
        A_Expr_Kind.AEXPR_IN,
        A_Expr_Kind.AEXPR_LIKE,
        A_Expr_Kind.AEXPR_ILIKE,
        A_Expr_Kind.AEXPR_SIMILAR,
        A_Expr_Kind.AEXPR_BETWEEN,
        A_Expr_Kind.AEXPR_NOT_BETWEEN,
        A_Expr_Kind.AEXPR_BETWEEN_SYM,
        A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM,
    }
)

# Node kinds that may appear anywhere in an accepted expression. Anything else (SubLink,
# ParamRef, A_Star, SQLValueFunction, RangeVar, GroupingFunc, XmlExpr...) is refused.
_ALLOWED_NODES: frozenset[type[ast.Node]] = frozenset(
    {
        ast.A_Expr,
        ast.BoolExpr,
        ast.NullTest,
        ast.BooleanTest,
        ast.ColumnRef,
        ast.A_Const,
        ast.TypeCast,
        ast.TypeName,
        ast.FuncCall,
        ast.CaseExpr,
        ast.CaseWhen,
        ast.CoalesceExpr,
        ast.MinMaxExpr,
        ast.A_ArrayExpr,
        ast.A_Indirection,
        ast.A_Indices,
        ast.CollateClause,
        ast.String,
        ast.Integer,
        ast.Float,
        ast.Boolean,
        ast.BitString,
    }
)

_REFUSED_TOKENS = {
    "SQL_COMMENT": "comments",
    "C_COMMENT": "comments",
    "PARAM": "parameters ($1...)",
}


def validate_expression(
    text: str, *, what: str = "expression", allowed_functions: frozenset[str] = SAFE_FUNCTIONS
) -> str:
    """Return `text` as PostgreSQL deparses it, or raise SpecError unless it is one plain expression."""
    node = _parse_one_expression(text, what)
    _check_tree(node, what, allowed_functions)
    return RawStream()(node)


def validate_predicate(text: str) -> str:
    """A WHERE predicate for a partial index (same rules as validate_expression)."""
    return validate_expression(text, what="predicate")


def _parse_one_expression(text: str, what: str) -> ast.Node:
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"{what} is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise SpecError(f"{what} is longer than {MAX_EXPRESSION_LENGTH} characters")
    if "\x00" in text:
        raise SpecError(f"{what} contains a NUL byte")
    if ";" in text:
        # Also inside string literals: never needed in an index definition, and a `;`
        # in a spec is far more often an attempt than a need.
        raise SpecError(f"{what} {text!r} contains ';': only one expression is allowed, not statements")
    try:
        tokens = scan(text)
    except ParseError as exc:
        raise SpecError(f"{what} {text!r} is not valid SQL: {_parse_error(exc, text, 0)}") from None
    depth = 0
    for token in tokens:
        # Parentheses must balance within the fragment itself: `true) OR (1=1` only parses
        # because of the wrapper around it, which is exactly the trick being refused.
        piece = text[token.start : token.end + 1]
        depth += {"(": 1, ")": -1}.get(piece, 0)
        if depth < 0:
            raise SpecError(f"{what} {text!r} closes a parenthesis it did not open")
        if token.name in _REFUSED_TOKENS:
            raise SpecError(f"{what} {text!r} contains {_REFUSED_TOKENS[token.name]}, which are not allowed")
        if token.name == "SCONST" and text[token.start : token.end + 1].startswith("$"):
            raise SpecError(f"{what} {text!r} uses dollar quoting; write a plain 'string' instead")
    if depth != 0:
        raise SpecError(f"{what} {text!r} leaves a parenthesis open")
    # A newline before the closing parenthesis so nothing in `text` can swallow it.
    wrapped = f"{_WRAP_HEAD}{text}\n)"
    try:
        statements = parse_sql(wrapped)
    except ParseError as exc:
        raise SpecError(f"{what} {text!r} is not a valid SQL expression: {_parse_error(exc, text, len(_WRAP_HEAD))}") from None
    if len(statements) != 1:
        raise SpecError(f"{what} {text!r} must be a single expression, not several statements")
    stmt = statements[0].stmt
    if not isinstance(stmt, ast.SelectStmt) or stmt.whereClause is None:
        raise SpecError(f"{what} {text!r} must be a single expression")
    extra = [
        name
        for name in (
            "distinctClause", "intoClause", "fromClause", "groupClause", "havingClause", "windowClause",
            "valuesLists", "sortClause", "limitOffset", "limitCount", "lockingClause", "withClause",
            "larg", "rarg",
        )
        if getattr(stmt, name, None)
    ]
    targets = stmt.targetList or ()
    if extra or len(targets) != 1 or stmt.op != 0:
        raise SpecError(f"{what} {text!r} must be a single expression, it changes the statement around it")
    return stmt.whereClause


_WRAP_HEAD = "SELECT 1 WHERE (\n"


def _parse_error(exc: ParseError, text: str, head: int) -> str:
    """The parser's message with its position counted in what the user wrote (1-based, as psql
    counts), not in the wrapper around it."""
    message, position = (*exc.args, None)[:2] if exc.args else (str(exc), None)
    if not isinstance(position, int):
        return str(message)
    where = position - head + 1  # pglast counts from 0
    if where < 1 or where > len(text):
        return f"{message}, at the end of the expression"
    return f"{message}, at character {where}"


def _children(node: ast.Node) -> Iterator[Any]:
    slots: dict[str, object] = getattr(type(node), "__slots__", {})
    for slot in slots:
        value = getattr(node, slot, None)
        if isinstance(value, ast.Node):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from value


def _check_tree(root: ast.Node, what: str, allowed_functions: frozenset[str]) -> None:
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
            continue
        if not isinstance(node, ast.Node):
            continue
        kind = type(node)
        if kind not in _ALLOWED_NODES:
            raise SpecError(f"{what} may not contain {_describe(node)}")
        if isinstance(node, ast.FuncCall):
            _check_function(node, what, allowed_functions)
        elif isinstance(node, ast.A_Expr):
            _check_operator(node, what)
        elif isinstance(node, ast.ColumnRef):
            fields = node.fields or ()
            if not 1 <= len(fields) <= 2 or not all(isinstance(f, ast.String) for f in fields):
                raise SpecError(f"{what}: only plain column references are allowed (no '*')")
        elif isinstance(node, ast.TypeName):
            _check_type(node, what)
        elif isinstance(node, ast.CollateClause):
            if len(node.collname or ()) > 1 and _sval((node.collname or ())[0]) != "pg_catalog":
                raise SpecError(f"{what}: collations must be built-in (unqualified or pg_catalog)")
        stack.extend(_children(node))


def _sval(node: Any) -> str:
    return str(getattr(node, "sval", ""))


def _check_function(node: ast.FuncCall, what: str, allowed: frozenset[str]) -> None:
    parts = [_sval(p) for p in node.funcname or ()]
    name = parts[-1].lower() if parts else ""
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog"):
        raise SpecError(f"{what}: function {'.'.join(parts)}() is not allowed (only built-in functions)")
    if node.over is not None or node.agg_filter is not None or node.agg_order or node.agg_star:
        raise SpecError(f"{what}: aggregate and window calls are not allowed ({name})")
    if node.agg_distinct or node.agg_within_group or node.func_variadic:
        raise SpecError(f"{what}: aggregate syntax is not allowed ({name})")
    if name not in allowed:
        raise SpecError(
            f"{what}: function {name}() is not in the allowlist of immutable built-in functions"
        )


def _check_operator(node: ast.A_Expr, what: str) -> None:
    if node.kind not in _ALLOWED_A_EXPR_KINDS:
        raise SpecError(f"{what}: this kind of operator expression is not allowed")
    names = [_sval(p) for p in node.name or ()]
    if not names:
        raise SpecError(f"{what}: operator without a name")
    if len(names) > 2 or (len(names) == 2 and names[0] != "pg_catalog"):
        raise SpecError(f"{what}: operator {'.'.join(names)} is not allowed (only built-in operators)")
    op = names[-1]
    # LIKE/ILIKE/SIMILAR/BETWEEN carry their keyword-derived operator names.
    if node.kind in (
        A_Expr_Kind.AEXPR_BETWEEN,
        A_Expr_Kind.AEXPR_NOT_BETWEEN,
        A_Expr_Kind.AEXPR_BETWEEN_SYM,
        A_Expr_Kind.AEXPR_NOT_BETWEEN_SYM,
    ):
        return
    if op not in SAFE_OPERATORS:
        raise SpecError(f"{what}: operator {op} is not a built-in operator")


def _check_type(node: ast.TypeName, what: str) -> None:
    parts = [_sval(p) for p in node.names or ()]
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog"):
        raise SpecError(f"{what}: type {'.'.join(parts)} is not allowed (only built-in types)")
    if node.setof or node.pct_type:
        raise SpecError(f"{what}: this type syntax is not allowed")
    name = parts[-1].lower() if parts else ""
    if name not in SAFE_TYPES:
        raise SpecError(f"{what}: cast to type {name} is not allowed")


def _describe(node: ast.Node) -> str:
    names = {
        "SubLink": "sub-queries",
        "ParamRef": "parameters",
        "A_Star": "'*'",
        "SQLValueFunction": "current_date/current_user-style values (not immutable)",
        "RowExpr": "row constructors",
        "RangeVar": "table references",
        "GroupingFunc": "GROUPING()",
        "XmlExpr": "XML expressions",
        "XmlSerialize": "XML expressions",
        "SetToDefault": "DEFAULT",
        "MultiAssignRef": "multi-assignment",
    }
    kind = type(node).__name__
    return names.get(kind, f"{kind} nodes")
