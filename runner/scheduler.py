"""The build's scheduler: which model runs when. Each model starts once its parents are done,
up to `workers` at once (models that do not depend on each other overlap); a failed model skips
everything downstream of it, and with `fail_fast` every model not started yet. What running a
model means (compile, materialize, validate) is the caller's `work`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from runner.artifacts import ModelResult
from runner.events import Listener, ModelFinished, ModelStarted, ignore

if TYPE_CHECKING:
    from runner.project import Graph, Model


class Scheduler:
    """Runs models of `graph` in dependency order on `workers` threads. Events reach the
    listener on the calling thread, in the order things happen."""

    def __init__(self, graph: Graph, workers: int = 1, listener: Listener = ignore,
                 fail_fast: bool = False) -> None:
        self.graph = graph
        self.workers = max(1, workers)
        self.listener = listener
        self.fail_fast = fail_fast

    def run(self, names: list[str], work: Callable[[Model], ModelResult]
            ) -> Iterator[ModelResult]:
        """`work` on each of `names` (given in dependency order), once its selected parents
        have finished; the results in completion order. A model whose ancestor failed (even
        through a model not selected) is skipped, not run; models running when another fails
        finish."""
        parents = {n: set(self.graph.models[n].depends_on) & set(names) for n in names}
        waiting = list(names)
        finished: set[str] = set()
        failed: set[str] = set()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="arpu-model") as pool:
            running: dict[Future[ModelResult], str] = {}
            while waiting or running:
                for name in [n for n in waiting if parents[n] <= finished]:
                    if len(running) >= self.workers:
                        break
                    waiting.remove(name)
                    why = self._skip_reason(name, failed)
                    if why is not None:
                        finished.add(name)
                        yield self._finished(ModelResult(
                            name, "skipped", materialized=self.graph.models[name].materialized,
                            error=why))
                        continue
                    self.listener(ModelStarted(name))
                    running[pool.submit(work, self.graph.models[name])] = name
                if not running:
                    continue  # skipped models may have made others ready
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    result = future.result()
                    if result.status != "success":
                        failed.add(name)
                    finished.add(name)
                    yield self._finished(result)

    def _skip_reason(self, name: str, failed: set[str]) -> str | None:
        upstream = failed & self.graph.ancestors(name)
        if upstream:
            return f"upstream failed: {', '.join(sorted(upstream))}"
        if self.fail_fast and failed:
            return f"--fail-fast: {', '.join(sorted(failed))} failed"
        return None

    def _finished(self, result: ModelResult) -> ModelResult:
        self.listener(ModelFinished(result))
        return result
