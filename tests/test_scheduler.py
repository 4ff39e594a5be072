"""The build's scheduler on its own (runner/scheduler.py): no engine, no SQL, models whose work
is a Python function. Dependency order, the concurrency bound, skips downstream of a failure
(also through a model not selected), --fail-fast, and the typed events in the order they
happen, on the calling thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.artifacts import ModelResult
from runner.events import BuildEvent, ModelFinished, ModelStarted
from runner.project import Graph, Model, ModelConfig
from runner.scheduler import Scheduler

# a diamond with a tail, and one model on its own:  a -> b, c -> d -> e;  solo
DAG = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"], "solo": []}
ORDER = ["a", "solo", "b", "c", "d", "e"]  # a dependency order


def graph(edges: dict[str, list[str]]) -> Graph:
    return Graph({name: Model(name, Path(f"models/{name}.sql"), "", ModelConfig(), "marts",
                              depends_on=parents) for name, parents in edges.items()})


class Recorder:
    """The listener: every event, and the thread it arrived on."""

    def __init__(self) -> None:
        self.events: list[BuildEvent] = []
        self.threads: set[str] = set()

    def __call__(self, event: BuildEvent) -> None:
        self.events.append(event)
        self.threads.add(threading.current_thread().name)

    def started(self) -> list[str]:
        return [e.model for e in self.events if isinstance(e, ModelStarted)]


def succeed(model: Model) -> ModelResult:
    return ModelResult(model.name, "success", materialized=model.materialized)


def failing(*names: str) -> Callable[[Model], ModelResult]:
    def work(model: Model) -> ModelResult:
        if model.name in names:
            return ModelResult(model.name, "error", error="boom")
        return succeed(model)

    return work


def run(names: list[str], work: Callable[[Model], ModelResult], workers: int = 1,
        fail_fast: bool = False, edges: dict[str, list[str]] | None = None
        ) -> tuple[dict[str, ModelResult], Recorder]:
    recorder = Recorder()
    scheduler = Scheduler(graph(edges or DAG), workers, recorder, fail_fast)
    results = list(scheduler.run(names, work))
    assert len(results) == len(names)
    return {r.model: r for r in results}, recorder


@pytest.mark.parametrize("workers", [1, 3])
def test_each_model_starts_after_its_parents_finish(workers: int) -> None:
    results, recorder = run(ORDER, succeed, workers)
    assert {r.status for r in results.values()} == {"success"}
    finished_before: set[str] = set()
    for event in recorder.events:
        if isinstance(event, ModelStarted):
            assert set(DAG[event.model]) <= finished_before, event.model
        elif isinstance(event, ModelFinished):
            finished_before.add(event.model)
    assert sorted(recorder.started()) == sorted(ORDER)
    assert recorder.threads == {threading.current_thread().name}  # events on the caller


def test_no_more_than_workers_models_run_at_once() -> None:
    edges: dict[str, list[str]] = {f"m{i}": [] for i in range(6)}
    live: set[str] = set()
    most, lock = 0, threading.Lock()
    both_running = threading.Barrier(2, timeout=10)  # two models wait for each other

    def work(model: Model) -> ModelResult:
        nonlocal most
        with lock:
            live.add(model.name)
            most = max(most, len(live))
        if model.name in ("m0", "m1"):
            both_running.wait()
        with lock:
            live.discard(model.name)
        return succeed(model)

    results, _ = run(list(edges), work, workers=2, edges=edges)
    assert most == 2
    assert all(r.status == "success" for r in results.values())


def test_a_failure_skips_its_descendants_and_nothing_else() -> None:
    results, recorder = run(ORDER, failing("b"), workers=2)
    assert results["b"].status == "error"
    for name in ("d", "e"):
        assert results[name].status == "skipped"
        assert results[name].error == "upstream failed: b"
    assert {n: results[n].status for n in ("a", "c", "solo")} == dict.fromkeys(
        ("a", "c", "solo"), "success")
    assert "d" not in recorder.started() and "e" not in recorder.started()
    skipped = [e for e in recorder.events if isinstance(e, ModelFinished)
               and e.result.status == "skipped"]
    assert [e.model for e in skipped] == ["d", "e"]  # one event each, no ModelStarted


def test_a_failure_skips_through_a_model_not_selected() -> None:
    """`d` is not selected: `e` still descends from `b` through it."""
    results, _ = run(["a", "b", "c", "e"], failing("b"))
    assert results["e"].status == "skipped"
    assert results["e"].error == "upstream failed: b"
    assert results["c"].status == "success"


def test_fail_fast_starts_nothing_after_a_failure() -> None:
    results, recorder = run(ORDER, failing("a"), workers=1, fail_fast=True)
    assert results["a"].status == "error"
    assert recorder.started() == ["a"]
    assert results["solo"].error == "--fail-fast: a failed"
    assert results["b"].error == "upstream failed: a"  # a descendant says why first


def test_fail_fast_lets_running_models_finish() -> None:
    """`a` fails while `solo` runs: `solo` ends as it would have; nothing starts after."""
    a_done = threading.Event()

    def work(model: Model) -> ModelResult:
        if model.name == "a":
            a_done.set()
            return ModelResult("a", "error", error="boom")
        assert a_done.wait(10)
        return succeed(model)

    results, recorder = run(["a", "solo", "b"], work, workers=2, fail_fast=True,
                            edges={"a": [], "solo": [], "b": ["a"]})
    assert (results["a"].status, results["solo"].status) == ("error", "success")
    assert results["b"].status == "skipped"
    assert sorted(recorder.started()) == ["a", "solo"]


def test_a_listener_that_raises_stops_the_schedule() -> None:
    """Ctrl-C arrives through the listener (runner/report.py raises KeyboardInterrupt): no
    model starts after it, and the models already running finish before it propagates."""
    ran: list[str] = []

    def listener(event: BuildEvent) -> None:
        if isinstance(event, ModelFinished) and event.model == "a":
            raise KeyboardInterrupt

    def work(model: Model) -> ModelResult:
        ran.append(model.name)
        return succeed(model)

    with pytest.raises(KeyboardInterrupt):
        list(Scheduler(graph(DAG), 1, listener).run(ORDER, work))
    assert ran == ["a"]
