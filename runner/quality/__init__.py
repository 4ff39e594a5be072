"""The data-quality gate: a Great Expectations 1.x suite per model, evaluated in the warehouse.

Where expectations come from, in this order (a later one with the same name replaces an earlier
one, so a file can change the severity of a default):

1. project-wide defaults: the model's `unique_key` (header) is not null and unique; a compound key
   uses `expect_compound_columns_to_be_unique`;
2. `expectations:` in the model's SQL header;
3. `models/<layer>/<model>.yml` beside `<model>.sql`:

   ```yaml
   expectations:
     - type: expect_column_values_to_be_between    # any GX 1.x expectation, snake_case
       column: [arpu, arppu]                       # a list of columns expands to one per column
       min_value: 0
       severity: warn                              # error (default) | warn
     - type: unexpected_rows                       # GX UnexpectedRowsExpectation: the query
       description: sum(product_count) = count(fct_product_purchases)   # returns the bad rows
       query: |
         select ... from {{ this }} ... {{ ref('fct_product_purchases') }} ... {{ in_range('x') }}
       requires: [raw_loads]                       # skipped when one of these does not exist
   ```

   Queries are Jinja like models (`this`, `ref`, `source`, `var` and the project's macros), written
   in DuckDB's dialect and transpiled by sqlglot to the target's. A query may only `ref` the
   model's ancestors: anything else may not be built yet when the model is validated.

How it runs: one ephemeral GX context per Validator (one per build); GX is imported in a
background thread from the moment the Validator is made. One table asset per relation and two
passes per relation: the whole suite in BOOLEAN_ONLY format (GX bundles the aggregate metrics of
all expectations into a few queries), then, for the failed expectations only, SUMMARY (COMPLETE
for unexpected_rows) for the observed values and up to five failing rows, keyed by the unique
key. Every metric is computed by the warehouse through SQLAlchemy; only counts and a handful of
example rows come back to Python. Nothing is written to disk: no `gx/` folder, no progress bars.

Targets: each engine makes GX's datasource (`Engine.gx_datasource`): DuckDB through
`duckdb-engine` on cursors of the engine's own connection; PostgreSQL through its SQLAlchemy URL;
Spark as data frames (`spark.table(...)`). ClickHouse has none: there the plain-SQL checks
(`sqlcheck.verdicts`) are the verdict (`Engine.validates_with_gx`).

Modules, bottom to top: `spec` (the types, importing none of the others), `suites` (where
expectations are declared), `sqlcheck` (plain-SQL checks), `gx` (Great Expectations), `junit`
(target/junit.xml), `validator` (the `Validator` the build calls).
"""
