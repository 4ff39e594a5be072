"""Validation gates `arpu build` like `dbt build`; `arpu test` checks a warehouse in place."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import duckdb
import pytest
from support.built import Built
from support.project import FIXTURES, ProjectHarness, scratch_build
from support.project import run_arpu as _arpu

from runner.context import Context


@pytest.fixture(scope="module")
def sample(sample_built_by_context: Built, tmp_path_factory: pytest.TempPathFactory
           ) -> ProjectHarness:
    assert sample_built_by_context.outcome.success
    return sample_built_by_context.copy(tmp_path_factory.mktemp("gate") / "project")


def test_fast_precheck_agrees_with_great_expectations(sample: ProjectHarness) -> None:
    """Every suite passes both in the SQL pre-check and in GX on the sample."""
    from runner.quality.sqlcheck import may_fail
    from runner.quality.validator import Validator

    with sample.context() as ctx:
        compiler = ctx.compiler()
        scratch_build(ctx)
        with Validator(ctx.project_dir, ctx.engine(), compiler.relation,
                       ctx.config.vars.model_dump(), graph=compiler.graph) as gx:
            for name in compiler.graph.order:
                model = compiler.models[name]
                specs = gx.suite_for(model)
                assert may_fail(ctx.engine(), compiler.relation(name), specs) == [], name
                assert all(r.success for r in gx.validate(model)), name


def test_existing_asks_once_for_models_and_raw_tables(sample: ProjectHarness) -> None:
    """What a build looks up in one query: the models in the file being built and the raw
    tables of the work database, in the order asked, and nothing that is not there."""
    with sample.context() as ctx:
        engine = scratch_build(ctx)
        engine.execute("drop table fct_orders")
        asked = ["stg_events", "no_such_model", "raw_loads", "fct_orders", "category_funnel"]
        assert engine.existing(asked) == ["stg_events", "raw_loads", "category_funnel"]
        assert engine.existing([]) == []
        assert [engine.relation_exists(n) for n in asked] == [True, False, True, False, True]


@pytest.mark.parametrize(("name", "key", "expectation"), [
    ("fct_orders", "order_id", "expect_column_values_to_be_unique(order_id)"),
    ("fct_product_purchases", "order_id, line_number",
     "expect_compound_columns_to_be_unique(order_id, line_number)"),
])
def test_fast_precheck_fails_where_gx_fails(sample: ProjectHarness, name: str, key: str,
                                            expectation: str) -> None:
    """One duplicated row: the pre-check (hashes of the key on DuckDB) sends the suite to GX,
    and GX names the key expectation."""
    from runner.quality.sqlcheck import may_fail
    from runner.quality.validator import Validator

    with sample.context() as ctx:
        engine, compiler = scratch_build(ctx), ctx.compiler()
        engine.execute(f"insert into {name} select * from {name} limit 1")
        with Validator(ctx.project_dir, engine, compiler.relation,
                       ctx.config.vars.model_dump(), graph=compiler.graph) as gx:
            model = compiler.models[name]
            assert may_fail(engine, compiler.relation(name), gx.suite_for(model)) != []
            failed = [r for r in gx.validate(model) if not r.success]
            assert [r.expectation for r in failed][:1] == [expectation]
    rows = sample.rows(name, order_by=key)  # the duplicate never reached the published file
    assert len({tuple(r[c.strip()] for c in key.split(",")) for r in rows}) == len(rows) > 0


def test_fast_precheck_passes_an_empty_relation_and_fails_a_null(tmp_path: Path) -> None:
    """A sum over no rows is null: an empty relation (no rejected lines, no experiment) must
    pass the pre-check, or every such build loads Great Expectations (about 3 s) to agree."""
    from runner.config import DuckDBTarget
    from runner.engines.duckdb import DuckDBEngine
    from runner.quality.spec import ExpectationSpec
    from runner.quality.sqlcheck import may_fail

    engine = DuckDBEngine(tmp_path, DuckDBTarget(type="duckdb", path="t.duckdb"))
    engine.execute("create table t (id varchar, n integer)")
    specs = [ExpectationSpec("t", "expect_column_values_to_not_be_null", {"column": "id"}),
             ExpectationSpec("t", "expect_column_values_to_be_between",
                             {"column": "n", "min_value": 0})]
    assert may_fail(engine, '"t"', specs) == []
    engine.execute("insert into t values (null, 1)")
    assert may_fail(engine, '"t"', specs) != []
    engine.close()


@pytest.mark.parametrize("hashes", [True, False])
def test_fast_precheck_fails_on_each_kind_of_problem(tmp_path: Path, hashes: bool) -> None:
    """A range, a compound key and two `unexpected_rows` checks, in one query: each problem
    alone fails the pre-check, and rows an `unexpected_rows` query does not return do not. With
    `hashes` off the compound key is counted by a group-by (PostgreSQL's and Spark's path)."""
    from runner.config import DuckDBTarget
    from runner.engines.duckdb import DuckDBEngine
    from runner.quality.spec import ExpectationSpec
    from runner.quality.sqlcheck import may_fail

    engine = DuckDBEngine(tmp_path, DuckDBTarget(type="duckdb", path="t.duckdb"))
    engine.hashes_uniqueness = hashes
    engine.execute("create table t (a integer, b integer, n integer)")
    engine.execute("insert into t values (1, 1, 5), (1, 2, 7)")
    specs = [ExpectationSpec("t", "expect_column_values_to_be_between",
                             {"column": "n", "min_value": 0}),
             ExpectationSpec("t", "expect_compound_columns_to_be_unique",
                             {"column_list": ["a", "b"]}),
             ExpectationSpec("t", "unexpected_rows", {"query": 'select * from "t" where n > 9'},
                             description="n above 9"),
             ExpectationSpec("t", "unexpected_rows", {"query": 'select * from "t" where n = 6'},
                             description="n is 6")]
    queries: list[str] = []
    fetch = engine.fetch
    engine.fetch = lambda sql, params=None: (  # type: ignore[method-assign]
        queries.append(sql) or fetch(sql, params))
    assert may_fail(engine, '"t"', specs) == []
    assert len(queries) == 1, queries  # one query for the whole suite (a job each on Spark)
    for problem, spec in zip(["(1, 3, -1)", "(1, 1, 8)", "(2, 1, 10)", "(2, 2, 6)"], specs,
                             strict=True):
        engine.execute(f"insert into t values {problem}")
        assert may_fail(engine, '"t"', specs) == [spec], problem  # that check, and only it
        engine.execute(f"delete from t where (a, b, n) = {problem}")
    assert may_fail(engine, '"t"', specs) == []
    engine.close()


def test_checks_that_cannot_run_and_a_warehouse_that_is_gone(tmp_path: Path) -> None:
    """The pre-check's one query fails: when the warehouse still answers, it is a check's
    fault (None: each check runs on its own and says which); when it does not, the
    warehouse's error is the cause, raised as it is."""
    from runner.config import DuckDBTarget
    from runner.engines.duckdb import DuckDBEngine
    from runner.errors import ArpuError
    from runner.quality.spec import ExpectationSpec
    from runner.quality.sqlcheck import may_fail

    engine = DuckDBEngine(tmp_path, DuckDBTarget(type="duckdb", path="t.duckdb"))
    engine.execute("create table t (n integer)")
    specs = [ExpectationSpec("t", "expect_column_values_to_not_be_null", {"column": "n"}),
             ExpectationSpec("t", "unexpected_rows", {"query": 'select * from "t" where m > 1'},
                             description="a typo")]
    assert may_fail(engine, '"t"', specs) is None
    fetch = engine.fetch

    def gone(sql: str, params: list[Any] | None = None) -> Any:
        raise ArpuError("the connection is lost", location="t.duckdb")

    engine.fetch = gone  # type: ignore[method-assign]
    with pytest.raises(ArpuError, match="the connection is lost"):
        may_fail(engine, '"t"', specs)
    engine.fetch = fetch  # type: ignore[method-assign]
    engine.close()


def test_error_expectation_fails_build_and_skips_descendants(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project", with_sample=True)
    funnel = project.root / "models" / "marts" / "category_funnel.sql"
    # a bug that doubles the conversion rate: rates above 1 break an error expectation
    funnel.write_text(funnel.read_text().replace(
        "{{ safe_div('purchasers', 'viewers') }} as conversion_rate",
        "2 * {{ safe_div('purchasers', 'viewers') }} as conversion_rate"))
    proc = _arpu(project.root, "build")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    results = json.loads((project.root / "target" / "run_results.json").read_text())
    status = {r["model"]: r for r in results["results"]}
    assert status["category_funnel"]["status"] == "error"
    assert "expect_column_values_to_be_between(conversion_rate" in \
        status["category_funnel"]["error"]
    for skipped in ("category_opportunities", "derived_user_segments", "arpu_timeseries",
                    "category_conversion_timeseries"):
        assert status[skipped]["status"] == "skipped", skipped
        assert "category_funnel" in status[skipped]["error"]
    for unrelated in ("fct_orders", "cohort_non_converted", "experiment_results"):
        assert status[unrelated]["status"] == "success", unrelated
    failing = [e for e in status["category_funnel"]["expectations"] if not e["success"]]
    assert failing and failing[0]["failing_examples"], failing
    assert "Traceback" not in proc.stderr


def test_a_check_that_cannot_run_fails_as_that_expectation(tmp_path: Path) -> None:
    """A typo in an `unexpected_rows` query and a check of a column that does not exist: the
    pre-check's one query cannot run, so each check runs on its own and those expectations
    fail, naming the cause; the model fails, what depends on it is skipped, the rest is built.
    (It stopped the whole build with the database's message, naming neither check nor
    model.)"""
    project = ProjectHarness(tmp_path / "project")
    checks = project.root / "models" / "marts" / "category_funnel.yml"
    typo = "where abs(conversion_rte - cast(purchasers"
    checks.write_text(checks.read_text().replace(typo.replace("rte", "rate"), typo)
                      + "  - type: expect_column_values_to_not_be_null\n    column: nope\n")
    # and checks that end in a comment or a semicolon run as written (a `--` comment at the
    # end swallowed the parenthesis of the query wrapping them)
    for model, query in [("fct_orders", "select order_id from {{ this }} where revenue < 0; "
                          "-- refunds are events of their own"),
                         ("dim_users", "select user_key from {{ this }} where user_key is null "
                          "-- never")]:
        path = project.root / "models" / "marts" / f"{model}.yml"
        path.write_text(path.read_text() + "  - type: unexpected_rows\n"
                        "    description: ends in a comment\n"
                        f"    query: {json.dumps(query)}\n")
    with Context(project.root) as ctx:
        ctx.ingest([FIXTURES / "multi_category.ndjson"])
        result = ctx.build()
    status = {r.model: r for r in result.results}
    funnel = status["category_funnel"]
    assert not result.success and funnel.status == "error"
    assert funnel.error is not None and funnel.error.startswith(
        "expectation failed on category_funnel: unexpected_rows(conversion_rate = purchasers / "
        "viewers), observed error: "), funnel.error
    assert "conversion_rte" in funnel.error
    failed = {e["expectation"]: e["observed"] for e in funnel.expectations if not e["success"]}
    assert list(failed) == ["unexpected_rows(conversion_rate = purchasers / viewers)",
                            "expect_column_values_to_not_be_null(nope)"], failed
    # GX's own message, once called an error (it began "Error: ")
    assert failed["expect_column_values_to_not_be_null(nope)"] == (
        'error: The column "nope" in BatchData does not exist.')
    assert status["category_opportunities"].status == "skipped"
    assert status["fct_orders"].status == status["experiment_results"].status == "success"
    for model in ("fct_orders", "dim_users"):
        assert status[model].status == "success", status[model].error
        assert [e["success"] for e in status[model].expectations
                if e["expectation"] == "unexpected_rows(ends in a comment)"] == [True], model


def test_a_failed_row_count_alone_is_decided_without_great_expectations(tmp_path: Path
                                                                        ) -> None:
    """Views and no orders: fct_orders' warn row count (at least 1) fails, and only it. That
    check's SQL is exactly GX's, so the build gives its verdict and observed value itself and
    never imports GX (a process of its own, to see its modules)."""
    project = ProjectHarness(tmp_path / "project")
    views = tmp_path / "views.ndjson"
    views.write_text("".join(json.dumps({
        "type": "track", "event": "Product Viewed", "messageId": f"m{i}", "anonymousId": "a1",
        "timestamp": f"2026-03-02T10:0{i}:00Z", "properties": {"category": "Toys"}}) + "\n"
        for i in range(3)))
    code = ("import json, sys; from pathlib import Path; from runner.context import Context\n"
            "with Context(Path(sys.argv[1])) as ctx:\n"
            "    ctx.ingest([Path(sys.argv[2])]); result = ctx.build()\n"
            "orders = next(r for r in result.results if r.model == 'fct_orders')\n"
            "print(json.dumps([[e['expectation'], e['severity'], e['success'], e['observed']] "
            "for e in orders.expectations if not e['success']]))\n"
            "print(result.success, 'great_expectations' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(project.root), str(views)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    failed, summary = out.stdout.splitlines()
    assert json.loads(failed) == [["expect_table_row_count_to_be_between(min_value=1)", "warn",
                                   False, "0 rows"]]
    assert summary == "True False"


def test_warn_expectation_is_reported_and_build_goes_on(tmp_path: Path) -> None:
    project = ProjectHarness(tmp_path / "project", with_sample=True)
    yml = project.root / "models" / "marts" / "fct_orders.yml"
    yml.write_text(yml.read_text() + "  - type: expect_table_row_count_to_be_between\n"
                   "    max_value: 10\n    severity: warn\n")
    proc = _arpu(project.root, "build")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 warned" in proc.stdout.replace("\n", " ")
    junit = ET.parse(project.root / "target" / "junit.xml").getroot()
    assert junit.get("skipped") == "1" and junit.get("failures") == "0"


def test_arpu_test_names_relation_expectation_and_observed(sample: ProjectHarness) -> None:
    published = duckdb.connect(str(sample.root / "arpu.duckdb"))  # what BI tools read
    published.execute("create table dim_users_copy as select * from dim_users")
    published.execute("insert into dim_users select * from dim_users limit 1")
    published.close()
    try:
        proc = _arpu(sample.root, "test", "--select", "dim_users")
        out = " ".join((proc.stdout + proc.stderr).split())
        assert proc.returncode == 1, out
        assert "dim_users" in out and "expect_column_values_to_be_unique(user_key)" in out
        assert "1 unexpected" in out or "unexpected_count" in out or "observed" in out
        junit = ET.parse(sample.root / "target" / "junit.xml").getroot()
        cases = junit.findall(".//testcase")
        assert int(junit.get("tests", "0")) == len(cases) > 0
        failures = [c for c in cases if c.find("failure") is not None]
        # the duplicate breaks the key and the "one row per user of stg_events" reconciliation
        assert int(junit.get("failures", "0")) == len(failures) == 2
        names = sorted(c.get("name", "") for c in failures)
        assert names[0] == "expect_column_values_to_be_unique(user_key)"
        assert names[1].startswith("unexpected_rows(one row per user_key")
    finally:
        published = duckdb.connect(str(sample.root / "arpu.duckdb"))
        published.execute("create or replace table dim_users as select * from dim_users_copy")
        published.execute("drop table dim_users_copy")
        published.close()


def test_run_skips_validation(sample: ProjectHarness) -> None:
    with Context(sample.root) as ctx:
        result = ctx.build(["fct_orders"], validate=False)
    assert result.success and result.expectations == []
