"""The data-quality gate (runner/quality/): suites per model, GX in the warehouse, JUnit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.project import ROOT, ProjectHarness, scratch_build

from runner.context import Context
from runner.errors import ConfigError
from runner.quality.junit import write_junit
from runner.quality.spec import ExpectationResult
from runner.quality.validator import Validator

SPEC_RELATIONS = [
    "stg_events", "fct_orders", "fct_product_purchases", "fct_product_views", "dim_users",
    "category_funnel", "category_price_stats", "category_opportunities", "cohort_non_converted",
    "arpu_timeseries", "category_conversion_timeseries", "experiment_results", "rejected_events",
]


class Built:
    """A project built once from a small generated sample, with an open Context and Validator."""

    def __init__(self, harness: ProjectHarness) -> None:
        self.harness = harness
        self.ctx = Context(harness.root)
        self.compiler = self.ctx.compiler()
        self.engine = scratch_build(self.ctx)
        self.validator = self.new_validator()

    def new_validator(self) -> Validator:
        return Validator(self.harness.root, self.engine, self.compiler.relation,
                         self.ctx.config.vars.model_dump(), graph=self.compiler.graph)

    def validate(self, name: str,
                 validator: Validator | None = None) -> dict[str, ExpectationResult]:
        results = (validator or self.validator).validate(self.compiler.models[name])
        return {r.expectation: r for r in results}

    def scalar(self, sql: str) -> Any:
        return self.engine.scalar(sql)

    @contextmanager
    def tampered(self, table: str, *statements: str) -> Iterator[None]:
        """Apply `statements` to `table`, restore it afterwards."""
        backup = f"_backup_{table}"
        self.engine.execute(f'create or replace table {backup} as select * from "{table}"')
        try:
            for sql in statements:
                self.engine.execute(sql)
            yield
        finally:
            if table.startswith("raw_"):  # in place: it lives in the work database
                self.engine.execute(f'delete from "{table}"')
                self.engine.execute(f'insert into "{table}" select * from {backup}')
            else:  # the tampering may have changed its columns
                self.engine.execute(f'create or replace table "{table}" as select * from {backup}')
            self.engine.execute(f"drop table {backup}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    from runner.seed import generate

    root = tmp_path_factory.mktemp("validate")
    sample = root / "sample.ndjson.gz"
    generate(sample, events=4000)
    harness = ProjectHarness(root / "project")
    harness.ingest(sample)
    result = harness.build()
    assert result.success, [r.error for r in result.failed]
    project = Built(harness)
    yield project
    project.validator.close()
    project.ctx.close()


def test_importing_the_module_does_not_import_great_expectations() -> None:
    code = "import sys, runner.quality.validator; print('great_expectations' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_every_spec_relation_has_keys_columns_and_yaml_checks(built: Built) -> None:
    for name in SPEC_RELATIONS:
        model = built.compiler.models[name]
        names = [s.name for s in built.validator.suite_for(model)]
        key = model.config.unique_key
        assert key, name
        assert all(f"expect_column_values_to_not_be_null({c})" in names for c in key), name
        if len(key) == 1:
            assert f"expect_column_values_to_be_unique({key[0]})" in names
        else:
            assert f"expect_compound_columns_to_be_unique({', '.join(key)})" in names
        assert any(n.startswith("expect_table_columns_to_match_set(") for n in names), name
        assert (ROOT / "models" / model.path.parent.name / f"{name}.yml").exists()


def test_sample_passes_every_expectation_including_reconciliations(built: Built) -> None:
    results: list[ExpectationResult] = []
    for name in built.compiler.graph.order:
        results += built.validator.validate(built.compiler.models[name])
    failed = [(r.relation, r.expectation, r.observed) for r in results if not r.success]
    # the only tolerated failures are warn-level; the generated sample has none at all
    assert failed == []
    names = {(r.relation, r.expectation) for r in results}
    assert len(results) >= 150
    for expected in [
        ("fct_orders", "unexpected_rows(sum(fct_orders.product_count) = "
                       "count(fct_product_purchases))"),
        ("stg_events", "unexpected_rows(input lines = loaded + rejected, per file)"),
        ("arpu_timeseries", "unexpected_rows(revenue of segment all = sum(fct_orders.revenue) "
                            "in range, per grain)"),
        ("category_funnel", "expect_column_pair_values_a_to_be_greater_than_b(viewers, "
                            "purchasers, or_equal=true)"),
        ("arpu_timeseries", "expect_column_values_to_be_in_set(grain, value_set=[day, week, "
                            "month])"),
    ]:
        assert expected in names
    assert all(r.observed == "ok" and r.seconds > 0 for r in results)


def test_duplicated_row_fails_the_unique_key_with_examples(built: Built) -> None:
    order_id = built.scalar("select min(order_id) from fct_orders")
    rows = built.scalar("select count(*) from fct_orders")
    lines = built.scalar("select count(*) from fct_product_purchases")
    count = built.scalar(f"select product_count from fct_orders where order_id = '{order_id}'")
    with built.tampered("fct_orders", "insert into fct_orders select * from fct_orders "
                                      f"where order_id = '{order_id}'"):
        results = built.validate("fct_orders")
    unique = results["expect_column_values_to_be_unique(order_id)"]
    assert (unique.relation, unique.severity, unique.success) == ("fct_orders", "error", False)
    assert unique.is_error and unique.exception is None
    assert unique.observed.startswith(f"2 of {rows + 1} rows unexpected")
    assert unique.failing_examples == [{"order_id": order_id}, {"order_id": order_id}]
    # the duplicate also breaks the SPEC reconciliation, with the two sums as the example
    recon = results["unexpected_rows(sum(fct_orders.product_count) = "
                    "count(fct_product_purchases))"]
    assert not recon.success and recon.observed == "1 violating row"
    assert recon.failing_examples == [{"product_count_sum": lines + count,
                                       "purchase_lines": lines}]
    assert results["expect_column_values_to_not_be_null(order_id)"].success


def test_duplicated_line_fails_the_compound_key(built: Built) -> None:
    with built.tampered("fct_product_purchases",
                        "insert into fct_product_purchases select * from fct_product_purchases "
                        "order by order_id, line_number limit 1"):
        results = built.validate("fct_product_purchases")
    res = results["expect_compound_columns_to_be_unique(order_id, line_number)"]
    assert not res.success and res.is_error
    assert res.observed.startswith("2 of ")
    first = built.engine.fetch("select order_id, line_number from fct_product_purchases "
                               "order by order_id, line_number limit 1")[1][0]
    assert res.failing_examples[0]["order_id"] == first[0]
    assert res.failing_examples[0]["line_number"] == first[1]


def test_rate_above_one_fails(built: Built) -> None:
    category = built.scalar("select min(category) from category_funnel")
    total = built.scalar("select count(*) from category_funnel")
    with built.tampered("category_funnel", "update category_funnel set conversion_rate = 1.5 "
                                           f"where category = '{category}'"):
        results = built.validate("category_funnel")
    rate = results["expect_column_values_to_be_between(conversion_rate, min_value=0, "
                   "max_value=1)"]
    assert not rate.success and rate.is_error
    assert rate.observed.startswith(f"1 of {total} rows unexpected")
    assert rate.failing_examples == [{"category": category, "conversion_rate": 1.5}]
    ratio = results["unexpected_rows(conversion_rate = purchasers / viewers)"]
    assert not ratio.success
    assert [e["category"] for e in ratio.failing_examples] == [category]
    failed = sorted(name for name, r in results.items() if not r.success)
    assert len(failed) == 2, failed


def test_a_dropped_public_column_fails(built: Built) -> None:
    with built.tampered("dim_users", "alter table dim_users drop column phone"):
        results = built.validate("dim_users")
    res = next(r for name, r in results.items()
               if name.startswith("expect_table_columns_to_match_set("))
    assert (res.success, res.observed) == (False, "missing columns: phone")
    assert [name for name, r in results.items() if not r.success] == [res.expectation]


def test_purchasers_above_viewers_fails(built: Built) -> None:
    with built.tampered("category_conversion_timeseries",
                        "update category_conversion_timeseries set purchasers = viewers + 1 "
                        "where grain = 'month'"):
        months = built.scalar("select count(*) from category_conversion_timeseries "
                              "where grain = 'month'")
        results = built.validate("category_conversion_timeseries")
    res = results["expect_column_pair_values_a_to_be_greater_than_b(viewers, purchasers, "
                  "or_equal=true)"]
    assert not res.success
    assert res.observed.startswith(f"{months} of ")
    assert len(res.failing_examples) == 5
    assert all(e["purchasers"] == e["viewers"] + 1 for e in res.failing_examples)


def test_lost_input_lines_fail_the_accounting(built: Built) -> None:
    with built.tampered("raw_loads", "update raw_loads set loaded = loaded - 1"):
        results = built.validate("stg_events")
    res = results["unexpected_rows(input lines = loaded + rejected, per file)"]
    assert not res.success and res.is_error
    assert res.observed == "1 violating row"
    (row,) = res.failing_examples
    assert row["source_file"].endswith("sample.ndjson.gz")
    assert row["lines_read"] == row["loaded"] + 1 + row["rejected"]
    assert row["rows_in_raw_events"] == row["loaded"] + 1


def test_arpu_revenue_reconciliation(built: Built) -> None:
    with built.tampered("arpu_timeseries", "update arpu_timeseries set revenue = revenue + 10 "
                                           "where grain = 'week' and segment = 'all'"):
        results = built.validate("arpu_timeseries")
    res = results["unexpected_rows(revenue of segment all = sum(fct_orders.revenue) in range, "
                  "per grain)"]
    assert not res.success
    (row,) = res.failing_examples
    weeks = built.scalar("select count(*) from arpu_timeseries where grain = 'week' "
                         "and segment = 'all'")
    assert row["grain"] == "week"
    assert row["series_revenue"] == pytest.approx(row["order_revenue"] + 10 * weeks)
    assert not results["unexpected_rows(cohort + non_cohort = all, per period)"].success


def test_warn_failure_is_reported_but_is_not_an_error(built: Built) -> None:
    path = ROOT / "models" / "marts" / "category_funnel.yml"
    copy = built.harness.root / "models" / "marts" / "category_funnel.yml"
    assert copy.read_text() == path.read_text()
    copy.write_text(copy.read_text() + (
        "  - type: expect_table_row_count_to_be_between\n"
        "    max_value: 2\n"
        "    severity: warn\n"))
    try:
        with built.new_validator() as validator:
            results = built.validate("category_funnel", validator)
    finally:
        copy.write_text(path.read_text())
    rows = built.scalar("select count(*) from category_funnel")
    warn = results["expect_table_row_count_to_be_between(max_value=2)"]
    assert (warn.success, warn.severity, warn.observed) == (False, "warn", f"{rows} rows")
    assert warn.is_warning and not warn.is_error
    assert not any(r.is_error for r in results.values())


def test_junit_counts_messages_and_examples(built: Built, tmp_path: Path) -> None:
    order_id = built.scalar("select min(order_id) from fct_orders")
    with built.tampered("fct_orders", "insert into fct_orders select * from fct_orders "
                                      f"where order_id = '{order_id}'"):
        results = list(built.validate("fct_orders").values())
    results += list(built.validate("dim_users").values())
    results.append(ExpectationResult("dim_users", "expect_table_row_count_to_be_between("
                                     "max_value=2)", "warn", False, "338 rows"))
    results.append(ExpectationResult("dim_users", "unexpected_rows(broken)", "error", False,
                                     "error: no such table", exception="no such table"))
    path = tmp_path / "target" / "junit.xml"
    write_junit(path, results)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    cases = root.findall("testsuite/testcase")
    assert len(cases) == len(results) == int(root.get("tests", "-1"))
    errors = [r for r in results if r.is_error and r.exception is None]
    assert len(errors) == 2  # unique key and the product_count reconciliation
    assert int(root.get("failures", "-1")) == len(root.findall(".//failure")) == 2
    assert int(root.get("skipped", "-1")) == len(root.findall(".//skipped")) == 1
    assert int(root.get("errors", "-1")) == len(root.findall(".//error")) == 1
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"fct_orders", "dim_users"}
    assert suites["fct_orders"].get("failures") == "2"
    assert suites["dim_users"].get("skipped") == "1"
    unique = next(c for c in cases if c.get("name") == "expect_column_values_to_be_unique"
                  "(order_id)")
    assert unique.get("classname") == "arpu.fct_orders"
    failure = unique.find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("[error] observed: 2 of ")
    examples = [json.loads(line) for line in (failure.text or "").splitlines()
                if line.startswith("{")]
    assert examples == [{"order_id": order_id}, {"order_id": order_id}]


def test_bad_declarations_are_config_errors_with_file_and_line(built: Built) -> None:
    model = built.compiler.models["category_funnel"]
    copy = built.harness.root / "models" / "marts" / "category_funnel.yml"
    original = copy.read_text()
    cases = {
        "  - type: expect_column_values_to_be_unique\n    column: category\n"
        "    severity: fatal\n": "severity must be error or warn",
        "  - type: unexpected_rows\n    description: refs a later model\n"
        "    query: select * from {{ ref('arpu_timeseries') }}\n": "is not upstream of",
        "  - type: unexpected_rows\n    description: batch\n"
        "    query: select * from {batch}\n": "not {batch}",
    }
    lines = original.count("\n")
    try:
        for extra, message in cases.items():
            copy.write_text(original + extra)
            with pytest.raises(ConfigError, match=message) as info:
                built.new_validator().suite_for(model)
            assert info.value.location == f"{copy}:{lines + 1}"
        copy.write_text(original + "  - type: expect_column_values_to_be_purple\n"
                                   "    column: category\n")
        with built.new_validator() as validator, pytest.raises(ConfigError, match="purple"):
            validator.validate(model)
    finally:
        copy.write_text(original)


def test_nothing_is_written_outside_target(arpu_project: ProjectHarness,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    arpu_project.ingest(ROOT / "tests" / "fixtures" / "multi_category.ndjson")
    assert arpu_project.build().success
    monkeypatch.chdir(arpu_project.root)  # a relative gx/ folder would land here

    def snapshot() -> dict[str, int]:
        return {str(p.relative_to(arpu_project.root)): p.stat().st_mtime_ns
                for p in arpu_project.root.rglob("*") if p.is_file()}

    before = snapshot()
    with Context(arpu_project.root) as ctx:
        compiler = ctx.compiler()
        results: list[ExpectationResult] = []
        scratch_build(ctx)
        with Validator(arpu_project.root, ctx.engine(), compiler.relation,
                       ctx.config.vars.model_dump(), graph=compiler.graph) as validator:
            for name in compiler.graph.order:
                results += validator.validate(compiler.models[name])
        write_junit(arpu_project.root / "target" / "junit.xml", results)
    after = snapshot()
    assert not [r for r in results if r.is_error]
    changed = {p for p in after if before.get(p) != after[p]}
    database = {p for p in changed if p.startswith("arpu.duckdb")}  # opened, never written
    assert changed - database == {os.path.join("target", "junit.xml")}
    assert not [p for p in arpu_project.root.rglob("*") if p.name in ("gx", "great_expectations")]


def test_queries_are_transpiled_for_the_target(built: Built) -> None:
    class PostgresLike:
        dialect = "postgres"

    validator = Validator(built.harness.root, PostgresLike(),  # type: ignore[arg-type]
                          lambda name: f'"arpu"."{name}"', built.ctx.config.vars.model_dump(),
                          graph=built.compiler.graph, background=False)
    specs = {s.name: s for s in validator.suite_for(built.compiler.models["fct_product_purchases"])}
    query = specs["unexpected_rows(line_revenue = price * quantity)"].kwargs["query"]
    assert 'FROM "arpu"."fct_product_purchases"' in query
    assert "GREATEST(1, ABS(price * quantity))" in query


_PG_TYPES = {"VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "DATE": "date",
             "DOUBLE": "double precision", "TIMESTAMP": "timestamp", "BOOLEAN": "boolean",
             "HUGEINT": "numeric", "JSON": "text"}


@pytest.mark.postgres
def test_the_same_suites_run_on_postgres(built: Built) -> None:
    """GX's SQL path on PostgreSQL: the sample's relations copied to a scratch schema."""
    import psycopg
    password = os.environ.get("ARPU_PG_PASSWORD")
    params = "host=127.0.0.1 user=postgres dbname=test connect_timeout=3" + (
        f" password={password}" if password else "")
    try:
        pg = psycopg.connect(params, autocommit=True)
    except psycopg.OperationalError:
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server at 127.0.0.1 (.ci/run starts it)")
        pytest.skip("no PostgreSQL server at 127.0.0.1")
    schema = f"arpu_validate_{os.getpid()}"
    pg.execute(f"create schema {schema}")
    try:
        for name in [*built.compiler.graph.order, "raw_events", "raw_rejected", "raw_loads"]:
            columns = built.engine.fetch(
                "select column_name, data_type from information_schema.columns "
                f"where table_name = '{name}' order by ordinal_position")[1]
            types = [_PG_TYPES.get(t, "numeric" if t.startswith("DECIMAL") else "text")
                     for _, t in columns]
            pg.execute(f'create table {schema}."{name}" ('
                       + ", ".join(f'"{c}" {t}'
                                   for (c, _), t in zip(columns, types, strict=True)) + ")")
            rows = built.engine.fetch(f'select * from "{name}"')[1]
            with pg.cursor().copy(f'copy {schema}."{name}" from stdin') as copy:
                for row in rows:
                    copy.write_row([v if t != "text" or v is None else str(v)
                                    for v, t in zip(row, types, strict=True)])

        from runner.engines.postgres import PostgresEngine

        class Postgres(PostgresEngine):  # the engine's GX datasource, on the scratch schema
            sqlalchemy_url = f"postgresql+psycopg://postgres{':' + password if password else ''}" \
                             "@127.0.0.1:5432/test"  # type: ignore[assignment]

            def __init__(self) -> None:  # no connection of its own
                pass

            def relation_exists(self, name: str) -> bool:
                return bool(pg.execute("select count(*) from information_schema.tables where "
                                       "table_schema = %s and table_name = %s",
                                       (schema, name)).fetchone()[0])  # type: ignore[index]

        pg.execute(f"update {schema}.category_funnel set conversion_rate = 2 "
                   f"where category = (select min(category) from {schema}.category_funnel)")
        results: list[ExpectationResult] = []
        with Validator(built.harness.root, Postgres(),  # type: ignore[arg-type]
                       lambda name: f'"{schema}"."{name}"', built.ctx.config.vars.model_dump(),
                       graph=built.compiler.graph) as validator:
            for name in built.compiler.graph.order:
                results += validator.validate(built.compiler.models[name])
        failed = sorted(r.expectation for r in results if not r.success)
        assert len(results) >= 150
        assert failed == [
            "expect_column_values_to_be_between(conversion_rate, min_value=0, max_value=1)",
            "unexpected_rows(conversion_rate = purchasers / viewers)",
        ], [(r.expectation, r.observed) for r in results if not r.success]
    finally:
        pg.execute(f"drop schema {schema} cascade")
        pg.close()
