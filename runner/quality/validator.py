"""The `Validator` the build loop calls: each model's suite, run against the built relation
(plain SQL first when `fast`, Great Expectations for the verdict and the details, unless all
that fails is a check whose plain SQL is exactly GX's: a row count)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from runner.dialect import transpile, without_trailing
from runner.errors import ConfigError
from runner.quality.spec import UNEXPECTED_ROWS, ExpectationResult, ExpectationSpec
from runner.quality.suites import (
    default_specs,
    expectations_file,
    read_expectations_file,
    specs_from_items,
)

if TYPE_CHECKING:
    from runner.engines.base import Engine
    from runner.project import Graph, Model


class Validator:
    """Builds each model's suite and runs it against the built relation.

    `relation_name(name)` is the quoted name of a relation in the target, written in the models'
    source dialect (DuckDB), as `Compiler.relation` returns it; `vars` are the
    resolved vars of the run (defaults plus --vars). `graph` (the compiler's DAG) enables the
    rule that a query only refs the model's ancestors; without it the rule is not checked.
    GX starts loading in a background thread at once (pass `background=False` to load it on
    the first `validate`). Call `close()` (or use `with`) before closing the engine.
    """

    def __init__(
        self,
        project_dir: Path,
        engine: Engine,
        relation_name: Callable[[str], str],
        vars: dict[str, Any],
        *,
        graph: Graph | None = None,
        macros_dir: Path | None = None,
        background: bool = True,
        fast: bool = False,
    ) -> None:
        self.project_dir = Path(project_dir)
        self.engine = engine
        self.relation_name = relation_name
        self.vars = dict(vars)
        self.graph = graph
        self.macros_dir = macros_dir or self.project_dir / "macros"
        self._env: jinja2.Environment | None = None
        self._refs: list[str] = []  # ref() calls of the query being rendered
        self._suites: dict[str, list[ExpectationSpec]] = {}
        # fast: pass/fail first in plain SQL (quality/sqlcheck.py); GX only when something fails
        self.fast = fast
        from runner.quality.gx import GXSession

        self._gx = GXSession(engine, relation_name, background=background and not fast
                             and getattr(engine, "validates_with_gx", True))
        self._gx_lock = threading.Lock()

    # -- suites ------------------------------------------------------------------------------
    def suite_for(self, model: Model) -> list[ExpectationSpec]:
        """Defaults, then the header's `expectations:`, then `<model>.yml`; queries rendered."""
        if model.name in self._suites:
            return self._suites[model.name]
        specs = default_specs(model)
        if model.config.expectations:
            specs += specs_from_items(model.name, list(model.config.expectations), model.path)
        path = expectations_file(model)
        if path.exists():
            specs += specs_from_items(model.name, read_expectations_file(path), path)
        by_name: dict[str, ExpectationSpec] = {}
        for spec in specs:
            if spec.type == UNEXPECTED_ROWS:
                spec.kwargs = {"query": self._render(model, spec)}
            by_name.pop(spec.name, None)  # a later declaration replaces an earlier one
            by_name[spec.name] = spec
        self._suites[model.name] = list(by_name.values())
        return self._suites[model.name]

    def _render(self, model: Model, spec: ExpectationSpec) -> str:
        """Jinja (this, ref, source, var, macros) -> SQL in the target's dialect, escaped for
        GX (which runs `str.format` on the query)."""
        from runner.compile import template

        env = self._environment()
        self._refs = []
        if "{batch}" in spec.kwargs["query"]:
            raise ConfigError(f"{spec.name}: write {{{{ this }}}} for the relation, not {{batch}}",
                              location=spec.origin)
        try:
            sql = template(env, spec.kwargs["query"]).render(
                this=self.relation_name(model.name))
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"{spec.name}: {exc.message}", location=spec.origin) from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"{spec.name}: {exc}", location=spec.origin) from None
        if self.graph is not None:
            upstream = self.graph.ancestors(model.name)
            for name in self._refs:
                if name not in self.graph.models:
                    raise ConfigError(f"{spec.name}: ref('{name}') is not a model",
                                      location=spec.origin)
                if name != model.name and name not in upstream:
                    raise ConfigError(
                        f"{spec.name}: ref('{name}') is not upstream of {model.name}, so it may "
                        f"not be built yet when {model.name} is validated; declare it on a model "
                        "that depends on both", location=spec.origin)
        from sqlglot.errors import SqlglotError

        try:
            sql = transpile(sql, self.engine.dialect)
        except SqlglotError as exc:
            raise ConfigError(f"{spec.name}: {str(exc).splitlines()[0]}",
                              location=spec.origin) from None
        return without_trailing(sql, self.engine.dialect).replace("{", "{{").replace("}", "}}")

    def _environment(self) -> jinja2.Environment:
        if self._env is None:
            from runner.compile import TargetInfo, macro_environment

            self._env = macro_environment(
                self.macros_dir, var=self._var, ref=self._ref,
                source=lambda _source, table: self.relation_name(table),
                target=TargetInfo("", self.engine.dialect, None), source_format="messages",
            )
        return self._env

    def _ref(self, name: str) -> str:
        self._refs.append(name)
        return self.relation_name(name)

    def _var(self, name: str) -> Any:
        from runner.compile import SqlValue

        if name not in self.vars:
            raise ConfigError(f"var '{name}' is not defined (see vars in arpu.yml)")
        return SqlValue(self.vars[name])

    # -- running -----------------------------------------------------------------------------
    def validate(self, model: Model, built: bool = False) -> list[ExpectationResult]:
        """Run the model's suite against its built relation, in the warehouse (`built`: the
        caller has just written it, so it is not looked for).

        Raises ConfigError for a bad declaration (exit 2); a check that cannot run (bad SQL,
        missing column) is a failed result carrying `exception`."""
        specs = self.suite_for(model)
        if not specs:
            return []
        if not built and not self.engine.relation_exists(model.name):
            why = f"relation {model.name} does not exist: run `arpu build`"
            return [ExpectationResult(model.name, s.name, s.severity, False, f"error: {why}",
                                      exception=why) for s in specs]
        required = sorted({name for spec in specs for name in spec.requires})
        present = set(self.engine.existing(required))
        runnable = [s for s in specs if present.issuperset(s.requires)]
        gx = getattr(self.engine, "validates_with_gx", True)
        if self.fast or not gx:
            from runner.quality.sqlcheck import exact, may_fail, verdicts

            started = time.perf_counter()
            relation = self.relation_name(model.name)
            failing = may_fail(self.engine, relation, runnable)
            # all pass, or what fails is checked here exactly as GX would (a row count)
            if failing is not None and all(exact(spec) for spec in failing):
                seconds = round((time.perf_counter() - started) / max(len(runnable), 1), 4)
                checked = dict(zip(map(id, failing), verdicts(
                    self.engine, model.name, relation, failing, []), strict=True))
                return [checked.get(id(s)) or ExpectationResult(
                    model.name, s.name, s.severity, True, "ok", seconds=seconds)
                    for s in runnable]
        if not gx:  # GX cannot run on this target: the plain-SQL checks are the verdict
            from runner.quality.sqlcheck import verdicts

            return verdicts(self.engine, model.name, self.relation_name(model.name), runnable,
                            list(model.config.unique_key))
        with self._gx_lock:  # one GX context, not made for threads
            return self._gx.run(model.name, runnable, list(model.config.unique_key))

    @property
    def gx_setup_seconds(self) -> float:
        """How long importing GX and creating the context took (mostly in the background)."""
        return self._gx.setup_seconds

    @property
    def gx_wait_seconds(self) -> float:
        """How long `validate` calls waited for that background setup."""
        return self._gx.wait_seconds

    def close(self) -> None:
        self._gx.close()

    def __enter__(self) -> Validator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
