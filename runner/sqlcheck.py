"""A plain-SQL pre-check of an expectation suite, for the build's hot path.

Importing Great Expectations and running a suite costs seconds, most of a small build. During
`arpu build` each suite is first checked here with one aggregate query per relation (plus one per
`unexpected_rows` check); only when something fails, or a check type is not known here, does
GX run the suite and give the verdict, the observed values and the failing rows. The checks are
written to be at least as strict as GX's (nulls count against them where GX might ignore them),
so a pass here is a pass in GX; a failure here is only a reason to ask GX. On DuckDB, uniqueness
counts distinct 64-bit hashes: distinct hashes prove distinct values, and a collision is only a
reason to ask GX. `arpu test` always uses GX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp, transpile

if TYPE_CHECKING:
    from runner.engines.base import Engine
    from runner.validate import ExpectationSpec

SOURCE = "duckdb"


def _col(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(SOURCE)


def _lit(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return exp.Literal.string(str(value)).sql(SOURCE)


def _violations(spec: ExpectationSpec) -> str | None:
    """A SQL predicate true on a row that might violate `spec`; None when not a row check."""
    kw = spec.kwargs
    t = spec.type
    if t == "expect_column_values_to_not_be_null":
        return f"{_col(kw['column'])} is null"
    if t == "expect_column_values_to_be_between":
        c = _col(kw["column"])
        parts = []
        if kw.get("min_value") is not None:
            parts.append(f"{c} {'<=' if kw.get('strict_min') else '<'} {_lit(kw['min_value'])}")
        if kw.get("max_value") is not None:
            parts.append(f"{c} {'>=' if kw.get('strict_max') else '>'} {_lit(kw['max_value'])}")
        return " or ".join(parts) if parts else "false"
    if t == "expect_column_values_to_be_in_set":
        values = ", ".join(_lit(v) for v in kw["value_set"])
        return f"{_col(kw['column'])} not in ({values})" if values else "true"
    if t == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = _col(kw["column_A"]), _col(kw["column_B"])
        op = ">=" if kw.get("or_equal") else ">"
        return f"({a} is not null or {b} is not null) and not coalesce({a} {op} {b}, false)"
    return None


def all_pass(engine: Engine, relation: str, specs: list[ExpectationSpec]) -> bool:
    """True when every spec surely passes; False when any may fail or is not known here."""
    if any(s.kwargs.get("mostly") not in (None, 1, 1.0) for s in specs):
        return False
    sums: list[str] = []
    tail: list[tuple[str, Any]] = []
    for spec in specs:
        kw = spec.kwargs
        predicate = _violations(spec)
        if predicate is not None:
            sums.append(f"sum(case when {predicate} then 1 else 0 end)")
        elif spec.type == "expect_column_values_to_be_unique":
            c = _col(kw["column"])
            # DuckDB: distinct 64-bit hashes are distinct values, and a hash table of integers
            # is cheaper than one of strings; a collision only sends the suite to GX
            distinct = (f"count(distinct case when {c} is not null then hash({c}) end)"
                        if engine.dialect == "duckdb" else f"count(distinct {c})")
            sums.append(f"count({c}) - {distinct}")
        elif spec.type == "expect_table_row_count_to_be_between":
            lo, hi = kw.get("min_value"), kw.get("max_value")
            cond = " or ".join(
                ([f"count(*) < {_lit(lo)}"] if lo is not None else [])
                + ([f"count(*) > {_lit(hi)}"] if hi is not None else [])) or "false"
            sums.append(f"case when {cond} then 1 else 0 end")
        elif spec.type == "expect_compound_columns_to_be_unique":
            cols = ", ".join(_col(c) for c in kw["column_list"])
            if engine.dialect == "duckdb":  # all rows, nulls included: stricter than GX
                sums.append(f"count(*) - count(distinct hash({cols}))")
            else:
                tail.append(("sql", f"select count(*) from (select {cols} from {relation} "
                                    f"group by {cols} having count(*) > 1) as dup"))
        elif spec.type == "unexpected_rows":
            query = kw["query"].replace("{{", "{").replace("}}", "}")
            tail.append(("raw", f"select count(*) from ({query}) as unexpected"))
        elif spec.type == "expect_table_columns_to_match_set":
            tail.append(("columns", kw))
        else:
            return False
    queries: list[tuple[str, Any]] = []
    if sums:
        queries.append(("sql", f"select {', '.join(sums)} from {relation}"))
    queries += tail
    for kind, payload in queries:
        if kind == "columns":
            probe = transpile(f"select * from {relation} limit 0", read=SOURCE,
                              write=engine.dialect)[0]
            columns = set(engine.fetch(probe)[0])
            wanted = set(payload["column_set"])
            ok = wanted <= columns if payload.get("exact_match") is False else wanted == columns
            if not ok:
                return False
            continue
        sql = payload
        if kind == "sql" and engine.dialect != SOURCE:
            sql = transpile(sql, read=SOURCE, write=engine.dialect)[0]
        row = engine.fetch(sql)[1][0]
        if any(v is None or v != 0 for v in row):
            return False
    return True
