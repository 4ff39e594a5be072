"""Great Expectations over the target's SQL: one ephemeral context per build, one batch per
relation, results turned into ExpectationResult. Imported only when GX is needed."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.dialect import SOURCE_DIALECT
from runner.errors import ArpuError, ConfigError
from runner.quality.spec import (
    GX_SEVERITY,
    MAX_EXAMPLES,
    UNEXPECTED_ROWS,
    ExpectationResult,
    ExpectationSpec,
    short,
)

if TYPE_CHECKING:
    from runner.engines.base import Engine

# -- Great Expectations ------------------------------------------------------------------------
@dataclass
class GXState:
    gx: Any  # the great_expectations module
    context: Any
    datasource: Any
    kind: str  # "sql" (a table asset per relation) | "dataframe" (the engine's data frames)
    batch_definitions: dict[str, Any] = field(default_factory=dict)


class GXSession:
    """One ephemeral GX context and one datasource on the target for the Validator's lifetime."""

    def __init__(self, engine: Engine, relation_name: Callable[[str], str],
                 background: bool) -> None:
        self.engine = engine
        self.relation_name = relation_name
        self.setup_seconds = 0.0
        self.wait_seconds = 0.0
        self._loaded: tuple[Any, Any] | None = None  # (great_expectations, context)
        self._state: GXState | None = None
        self._error: BaseException | None = None
        self._release: Callable[[], None] | None = None  # what the datasource holds open
        self._thread: threading.Thread | None = None
        if background:  # imports only: the warehouse is touched on the caller's thread
            self._thread = threading.Thread(target=self._load_quietly, name="arpu-gx",
                                            daemon=True)
            self._thread.start()

    def _load_quietly(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # reported by the first validate()
            self._error = exc

    def _load(self) -> None:
        """Import GX (about 1.5 s) and create the ephemeral context."""
        started = time.perf_counter()
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        # GX probes pyspark at import (~0.5 s, and a pandas-3 warning). Hide it unless the
        # target is Spark; once GX is imported, pyspark is importable again.
        hide_spark = not self.engine.uses_pyspark and "pyspark" not in sys.modules
        if hide_spark:
            sys.modules["pyspark"] = None  # type: ignore[assignment]
        try:
            import great_expectations as gx
        finally:
            if hide_spark and "pyspark" in sys.modules and sys.modules["pyspark"] is None:
                del sys.modules["pyspark"]
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.core import unexpected_rows_expectation

        self.engine.gx_prepare()

        # Every instantiation of an UnexpectedRowsExpectation whose query does not use
        # `{batch}` prints a hint to stdout. Ours name the relation itself (the batch is
        # always the whole relation, and `{batch}` needs dialect-specific aliasing), so that
        # module's `print` is silenced; nothing else in it prints.
        unexpected_rows_expectation.print = lambda *args, **kwargs: None  # type: ignore[attr-defined]

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False)
        if callable(getattr(context, "_save_project_config", None)):
            # An ephemeral context "saves" by serialising its whole config to YAML in memory
            # after every asset: ~10 ms a relation for a copy nobody reads.
            context._save_project_config = lambda *args, **kwargs: None  # type: ignore[method-assign]
        self._loaded = (gx, context)
        self.setup_seconds = time.perf_counter() - started

    def ready(self) -> GXState:
        if self._state is not None:
            return self._state
        if self._thread is not None:
            waited = time.perf_counter()
            self._thread.join()
            self.wait_seconds += time.perf_counter() - waited
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, ArpuError):
                raise error
            raise ArpuError(f"cannot start Great Expectations: {type(error).__name__}: "
                            f"{_first_line(error)}") from error
        if self._loaded is None:
            self._load()
        assert self._loaded is not None
        gx, context = self._loaded
        datasource, kind, self._release = self.engine.gx_datasource(context)
        self._state = GXState(gx, context, datasource, kind)
        return self._state

    def _batch(self, state: GXState, relation: str) -> Any:
        from sqlglot import exp

        definition = state.batch_definitions.get(relation)
        # relation_name() quotes in the models' source dialect, like Compiler.relation()
        table = exp.to_table(self.relation_name(relation), dialect=SOURCE_DIALECT)
        if state.kind == "dataframe":
            if definition is None:
                asset = state.datasource.add_dataframe_asset(name=relation)
                definition = asset.add_batch_definition_whole_dataframe("all")
                state.batch_definitions[relation] = definition
            frame = self.engine.gx_dataframe(table)
            return definition.get_batch(batch_parameters={"dataframe": frame})
        if definition is None:
            import warnings

            options: dict[str, Any] = {"table_name": table.name}
            if table.db:
                options["schema_name"] = table.db
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # schema_name is deprecated in favour of URLs
                asset = state.datasource.add_table_asset(name=relation, **options)
            definition = asset.add_batch_definition_whole_table("all")
            state.batch_definitions[relation] = definition
        return definition.get_batch()

    def _expectation(self, state: GXState, spec: ExpectationSpec,
                     meta: dict[str, Any] | None = None) -> Any:
        from great_expectations.expectations.registry import get_expectation_impl

        kwargs = dict(spec.kwargs)
        if spec.type == UNEXPECTED_ROWS:
            cls = state.gx.expectations.UnexpectedRowsExpectation
            kwargs = {"unexpected_rows_query": kwargs["query"], "description": spec.description}
        else:
            try:
                cls = get_expectation_impl(spec.type)
            except Exception:
                raise ConfigError(f"unknown Great Expectations expectation '{spec.type}'",
                                  location=spec.origin) from None
        if "severity" in getattr(cls, "__fields__", {}):
            kwargs["severity"] = GX_SEVERITY[spec.severity]
        kwargs["meta"] = {**(meta or {}), "arpu": spec.name}
        try:
            return cls(**kwargs)
        except Exception as exc:
            raise ConfigError(f"{spec.name}: {_pydantic_message(exc)}",
                              location=spec.origin) from None

    def run(self, relation: str, specs: list[ExpectationSpec],
            key_columns: list[str]) -> list[ExpectationResult]:
        """Pass 1: the whole suite in BOOLEAN_ONLY format (GX bundles the unexpected counts of
        all column checks into a few aggregate queries). Pass 2, for the failed expectations
        only: observed values and up to five failing rows (SUMMARY, keyed by the unique key;
        COMPLETE for unexpected_rows, whose queries return the violations themselves)."""
        if not specs:
            return []
        state = self.ready()
        started = time.perf_counter()
        for spec in specs:  # bad declarations are configuration errors, raised before running
            self._expectation(state, spec)
        try:
            batch = self._batch(state, relation)
            outcome = self._validate(state, batch, specs, "BOOLEAN_ONLY")
        except Exception as exc:  # the relation itself could not be read
            message = _first_line(exc)
            seconds = round((time.perf_counter() - started) / len(specs), 4)
            return [ExpectationResult(relation, s.name, s.severity, False, f"error: {message}",
                                      seconds=seconds, exception=message) for s in specs]
        results = [_convert(relation, spec, r) for spec, r in zip(specs, outcome, strict=True)]
        failed = [i for i, res in enumerate(results) if not res.success and res.exception is None]
        summary: dict[str, Any] = {"result_format": "SUMMARY",
                                   "partial_unexpected_count": MAX_EXAMPLES}
        if key_columns:
            summary["unexpected_index_column_names"] = key_columns
        for rows, result_format in ((False, summary), (True, "COMPLETE")):
            indexes = [i for i in failed if (specs[i].type == UNEXPECTED_ROWS) == rows]
            if not indexes:
                continue
            try:
                detailed = self._validate(state, batch, [specs[i] for i in indexes],
                                          result_format)
            except Exception:  # keep the verdicts of pass 1, without details
                continue
            for i, gx_result in zip(indexes, detailed, strict=True):
                res = _convert(relation, specs[i], gx_result)
                if res.exception is None and not res.success:
                    results[i] = res
        seconds = round((time.perf_counter() - started) / len(specs), 4)
        for res in results:
            res.seconds = seconds
        return results

    def _validate(self, state: GXState, batch: Any, specs: list[ExpectationSpec],
                  result_format: Any) -> list[Any]:
        """One GX validation of `specs` as a suite; results in the order of `specs`."""
        suite = state.gx.ExpectationSuite(name="arpu")
        for index, spec in enumerate(specs):
            suite.add_expectation(self._expectation(state, spec, meta={"arpu_index": index}))
        outcome = batch.validate(suite, result_format=result_format)
        ordered: list[Any] = [None] * len(specs)
        for gx_result in outcome.results:
            position = (gx_result.expectation_config.meta or {}).get("arpu_index")
            if isinstance(position, int) and 0 <= position < len(specs):
                ordered[position] = gx_result
        return ordered

    def close(self) -> None:
        if self._thread is not None:  # never interrupt an import (interpreter shutdown)
            self._thread.join()
            self._thread = None
        if self._state is not None and self._state.kind == "sql":
            # Close every connection GX opened (the datasource's engine and the execution
            # engine's own), so that closing the engine really closes the DuckDB database.
            datasource = self._state.datasource
            for get in (lambda: datasource.get_engine(),
                        lambda: datasource.get_execution_engine().engine):
                with contextlib.suppress(Exception):
                    get().dispose()
        self._state = None
        self._loaded = None  # a later validate() starts a new context (GX stays imported)
        if self._release is not None:
            with contextlib.suppress(Exception):
                self._release()
            self._release = None


# -- GX results -> ExpectationResult -----------------------------------------------------------
def _convert(relation: str, spec: ExpectationSpec, gx_result: Any) -> ExpectationResult:
    if gx_result is None:
        return ExpectationResult(relation, spec.name, spec.severity, False,
                                 "error: no result from Great Expectations",
                                 exception="no result from Great Expectations")
    message = _exception_message(gx_result.exception_info or {})
    if message:
        first = message.strip().splitlines()[0] if message.strip() else message
        first = first.removeprefix("Error: ")  # GX's own word for it: "error: Error: ..."
        return ExpectationResult(relation, spec.name, spec.severity, False, f"error: {first}",
                                 exception=message)
    result = dict(gx_result.result or {})
    success = bool(gx_result.success)
    if not result:  # BOOLEAN_ONLY: the verdict alone
        return ExpectationResult(relation, spec.name, spec.severity, success,
                                 "ok" if success else "failed")
    examples = [] if success else _examples(spec, result)
    return ExpectationResult(relation, spec.name, spec.severity, success,
                             _observed(spec, result), examples)


def _exception_message(info: dict[str, Any]) -> str | None:
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "exception")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "exception")
    return None


def _observed(spec: ExpectationSpec, result: dict[str, Any]) -> str:
    if "unexpected_count" in result:
        count, total = result.get("unexpected_count") or 0, result.get("element_count")
        text = f"{count} of {total} rows unexpected"
        if count and result.get("unexpected_percent") is not None:
            text += f" ({float(result['unexpected_percent']):.3g}%)"
        return text
    value = result.get("observed_value")
    if spec.type == UNEXPECTED_ROWS:
        return f"{value} violating row{'' if value == 1 else 's'}"
    if spec.type.startswith("expect_table_row_count"):
        return f"{value} rows"
    if spec.type.startswith("expect_table_columns"):
        missing = ((result.get("details") or {}).get("mismatched") or {}).get("missing")
        if missing:
            return "missing columns: " + ", ".join(map(str, missing))
        return f"{len(value or [])} columns"
    if isinstance(value, float):
        return f"{value:.6g}"
    return short(value) if value is not None else ""


def _examples(spec: ExpectationSpec, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[Any] = []
    indexed = result.get("partial_unexpected_index_list")
    if spec.type == UNEXPECTED_ROWS:
        rows = list((result.get("details") or {}).get("unexpected_rows") or [])
    elif isinstance(indexed, list) and indexed and isinstance(indexed[0], dict):
        rows = indexed
    else:
        for item in result.get("partial_unexpected_list") or []:
            if isinstance(item, dict):
                rows.append(item)
            elif isinstance(item, (list, tuple)) and "column_A" in spec.kwargs:
                rows.append({spec.kwargs["column_A"]: item[0], spec.kwargs["column_B"]: item[1]})
            elif isinstance(item, (list, tuple)) and "column_list" in spec.kwargs:
                rows.append(dict(zip(spec.kwargs["column_list"], item, strict=False)))
            else:
                rows.append({str(spec.kwargs.get("column", "value")): item})
    return [_jsonable_row(r) for r in rows[:MAX_EXAMPLES]]


def _jsonable_row(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        return {"value": _jsonable(row)}
    return {str(k): _jsonable(v) for k, v in row.items()}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _pydantic_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        with contextlib.suppress(Exception):
            first = errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


