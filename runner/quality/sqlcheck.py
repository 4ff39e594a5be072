"""A plain-SQL pre-check of an expectation suite, for the build's hot path.

Importing Great Expectations and running a suite costs seconds, most of a small build. During
`arpu build` each suite is first checked here with one query per relation: its aggregates, and
the count of each `unexpected_rows` query and key group-by, cross joined into one row (a
warehouse plans and schedules each query it is sent: on Spark ~0.3 s each); only when something
fails, or a check type is not known here, does GX run the suite and give the verdict, the
observed values and the failing rows. The checks are written to be at least as strict as GX's
(nulls count against them where GX might ignore them), so a pass here is a pass in GX; a failure
here is only a reason to ask GX, unless all that fails is a check whose SQL here is exactly GX's
(`EXACT`: a table's row count), whose verdict is given here: an empty relation on a small load
then starts no GX. Where the engine says so (`Engine.hashes_uniqueness`: DuckDB), uniqueness
counts distinct 64-bit hashes: distinct hashes prove distinct values, and a collision is only a
reason to ask GX. `arpu test` always uses GX.

On a target GX cannot run on (ClickHouse: no SQLAlchemy dialect), `verdicts` checks each
expectation on its own and is the verdict, with observed values and failing rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlglot import exp

from runner.dialect import SOURCE_DIALECT as SOURCE
from runner.dialect import quoted as _col  # a column name, quoted
from runner.dialect import transpile
from runner.errors import ArpuError
from runner.quality.spec import MAX_EXAMPLES, ExpectationResult, ExpectationSpec

if TYPE_CHECKING:
    from runner.engines.base import Engine


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


# Checks whose plain-SQL form is exactly Great Expectations' (no null or rounding question):
# when only these fail, `verdicts` gives the verdict without starting GX.
EXACT = {"expect_table_row_count_to_be_between": {"min_value", "max_value"}}


def exact(spec: ExpectationSpec) -> bool:
    return spec.type in EXACT and set(spec.kwargs) <= EXACT[spec.type]


def may_fail(engine: Engine, relation: str, specs: list[ExpectationSpec]
             ) -> list[ExpectationSpec] | None:
    """The specs that may fail (none: every spec surely passes); None when a spec is not
    known here, not all or nothing (`mostly`), or the checks cannot run (a typo in a query:
    each check on its own then says which)."""
    if any(s.kwargs.get("mostly") not in (None, 1, 1.0) for s in specs):
        return None
    sums: list[tuple[ExpectationSpec, str]] = []  # aggregates over the relation
    counts: list[tuple[ExpectationSpec, str]] = []  # one-row queries, in the target's dialect
    column_sets: list[ExpectationSpec] = []
    for spec in specs:
        kw = spec.kwargs
        predicate = _violations(spec)
        if predicate is not None:
            # coalesce: the sum over an empty relation is null, and an empty relation passes
            sums.append((spec, f"coalesce(sum(case when {predicate} then 1 else 0 end), 0)"))
        elif spec.type == "expect_column_values_to_be_unique":
            c = _col(kw["column"])
            # DuckDB: distinct 64-bit hashes are distinct values, and a hash table of integers
            # is cheaper than one of strings; a collision only sends the suite to GX
            distinct = (f"count(distinct case when {c} is not null then hash({c}) end)"
                        if engine.hashes_uniqueness else f"count(distinct {c})")
            sums.append((spec, f"count({c}) - {distinct}"))
        elif spec.type == "expect_table_row_count_to_be_between":
            lo, hi = kw.get("min_value"), kw.get("max_value")
            cond = " or ".join(
                ([f"count(*) < {_lit(lo)}"] if lo is not None else [])
                + ([f"count(*) > {_lit(hi)}"] if hi is not None else [])) or "false"
            sums.append((spec, f"case when {cond} then 1 else 0 end"))
        elif spec.type == "expect_compound_columns_to_be_unique":
            cols = ", ".join(_col(c) for c in kw["column_list"])
            if engine.hashes_uniqueness:  # all rows, nulls included: stricter than GX
                sums.append((spec, f"count(*) - count(distinct hash({cols}))"))
            else:
                dup = f"select {cols} from {relation} group by {cols} having count(*) > 1"
                counts.append((spec, transpile(
                    f"select count(*) as t{len(counts)} from ({dup}) as dup", engine.dialect)))
        elif spec.type == "unexpected_rows":  # rendered in the target's dialect already
            query = kw["query"].replace("{{", "{").replace("}}", "}")
            counts.append((spec, f"select count(*) as t{len(counts)} from ({query}) as unexpected"))
        elif spec.type == "expect_table_columns_to_match_set":
            column_sets.append(spec)
        else:
            return None
    # One query for all the counts (each part one row, cross joined): a warehouse plans and
    # schedules one job per query, ~0.3 s each on Spark, so a model's checks cost one of them
    parts = [([spec], sql) for spec, sql in counts]
    if sums:
        select = ", ".join(f"{sql} as s{i}" for i, (_, sql) in enumerate(sums))
        parts.insert(0, ([spec for spec, _ in sums],
                         transpile(f"select {select} from {relation}", engine.dialect)))
    failing: list[ExpectationSpec] = []
    if parts:
        try:
            row = engine.fetch(_cross_joined([sql for _, sql in parts]))[1][0]
        except ArpuError:
            # a check that cannot run (a typo in a query): each on its own says which, as a
            # failed expectation; unless the warehouse is gone, whose error is the cause
            if not _answers(engine):
                raise
            return None
        values = iter(row)
        failing += [spec for specs_of_part, _ in parts for spec in specs_of_part
                    if (v := next(values)) is None or v != 0]
    if column_sets:  # the relation's columns, asked once
        columns = set(engine.fetch(transpile(f"select * from {relation} limit 0",
                                             engine.dialect))[0])
        for spec in column_sets:
            wanted = set(spec.kwargs["column_set"])
            exact_match = spec.kwargs.get("exact_match") is not False
            if not (wanted == columns if exact_match else wanted <= columns):
                failing.append(spec)
    return failing


def _answers(engine: Engine) -> bool:
    """Whether the warehouse still runs a query."""
    try:
        engine.fetch("select 1")
    except ArpuError:
        return False
    return True


def _cross_joined(queries: list[str]) -> str:
    """One-row queries (in the target's dialect) as one query returning their columns in order;
    one query is returned as it is."""
    if len(queries) == 1:
        return queries[0]
    return "select * from " + " cross join ".join(
        f"({sql}) as part{i}" for i, sql in enumerate(queries))


def verdicts(engine: Engine, model: str, relation: str, specs: list[ExpectationSpec],
             key: list[str]) -> list[ExpectationResult]:
    """Each spec's outcome, observed value and up to five failing rows (keyed by `key`), for a
    target Great Expectations cannot run on (no SQLAlchemy dialect): there these checks are
    the verdict. A check type not known here fails, saying so."""
    import time

    def run(sql: str) -> list[tuple[Any, ...]]:
        return engine.fetch(transpile(sql, engine.dialect))[1]

    def examples(where_sql: str) -> list[dict[str, Any]]:
        order = f" order by {', '.join(_col(k) for k in key)}" if key else ""
        sql = f"select * from {relation} where {where_sql}{order} limit {MAX_EXAMPLES}"
        columns, rows = engine.fetch(transpile(sql, engine.dialect))
        return [dict(zip(columns, row, strict=True)) for row in rows]

    results = []
    for spec in specs:
        started = time.perf_counter()
        kw, t = spec.kwargs, spec.type
        failing: list[dict[str, Any]] = []
        error = None
        try:
            predicate = _violations(spec)
            if predicate is not None:
                base = ("*" if t == "expect_column_values_to_not_be_null" else
                        _col(kw["column"]) if "column" in kw else "*")
                bad, total = run(f"select sum(case when {predicate} then 1 else 0 end), "
                                 f"count({base}) from {relation}")[0]
                bad, total = int(bad or 0), int(total or 0)
                mostly = kw.get("mostly")
                success = bad == 0 if mostly is None else bad <= (1 - float(mostly)) * total
                observed = f"{bad} unexpected of {total}"
                failing = examples(predicate) if bad else []
            elif t in ("expect_column_values_to_be_unique",
                       "expect_compound_columns_to_be_unique"):
                cols = ", ".join(_col(c) for c in kw.get("column_list") or [kw["column"]])
                # rows whose key columns are all null are left out, as GX does
                not_null = "not (" + " and ".join(
                    f"{_col(c)} is null" for c in kw.get("column_list") or [kw["column"]]) + ")"
                dup = (f"select {cols} from {relation} where {not_null} group by {cols} "
                       "having count(*) > 1")
                bad = int(run(f"select count(*) from ({dup}) as dup")[0][0])
                success, observed = bad == 0, f"{bad} duplicated values"
                if bad:
                    failing = examples(f"({cols}) in ({dup})" if "," in cols
                                       else f"{cols} in ({dup})")
            elif t == "expect_table_row_count_to_be_between":
                count = int(run(f"select count(*) from {relation}")[0][0])
                lo, hi = kw.get("min_value"), kw.get("max_value")
                success = (lo is None or count >= lo) and (hi is None or count <= hi)
                observed = f"{count} rows"
            elif t == "unexpected_rows":
                query = kw["query"].replace("{{", "{").replace("}}", "}")
                bad = int(engine.fetch(f"select count(*) from ({query}) as unexpected")[1][0][0])
                success, observed = bad == 0, f"{bad} unexpected rows"
                if bad:
                    names, rows = engine.fetch(f"select * from ({query}) as unexpected "
                                               f"limit {MAX_EXAMPLES}")
                    failing = [dict(zip(names, row, strict=True)) for row in rows]
            elif t == "expect_table_columns_to_match_set":
                probe = transpile(f"select * from {relation} limit 0", engine.dialect)
                columns = engine.fetch(probe)[0]
                wanted = set(kw["column_set"])
                success = (wanted <= set(columns) if kw.get("exact_match") is False
                           else wanted == set(columns))
                observed = str(columns)
            else:
                error = (f"{t} is not checked on {engine.dialect} targets (Great Expectations "
                         "does not run there; arpu's own checks know the expectations its "
                         "models use)")
                success, observed = False, f"error: {error}"
        except Exception as exc:  # the check itself could not run: a failed result
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            success, observed = False, f"error: {error}"
        results.append(ExpectationResult(
            model, spec.name, spec.severity, bool(success), observed, failing,
            round(time.perf_counter() - started, 4), error))
    return results
