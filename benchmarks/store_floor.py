"""The store's floor for a sweep (§8, issue #25): the same runs and metric points written to a
SQLite store through MlflowClient directly, by as many writer processes as the batched launcher
uses (`hydra.launcher.writers`), with nothing of ours in the way.

Each writer imports MLflow and opens the store first; the clock starts when all of them are
ready (a barrier) and stops when the last has ended its last run. Per run: create it, log its
epochs' points (3 a epoch: loss, weight, bias) in batches of MLflow's 1,000-metric limit, end
it. A sweep's own wall time also holds Python's and torch's start, training, params, configs,
datasets and models, so this floor is below anything a sweep can reach.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from typing import Any

NAMES = ("loss", "weight", "bias")
MAX_METRICS = 1000  # MLflow's log_batch limit


def _writer(uri: str, experiment_id: str, runs: int, epochs: int, ready: Barrier) -> float:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.get_experiment(experiment_id)  # the store open (its schema checked) before the clock
    ready.wait(timeout=300)
    started = time.perf_counter()
    now = int(time.time() * 1000)
    for _ in range(runs):
        run_id = client.create_run(experiment_id).info.run_id
        points = [Metric(name, 1.0 / (epoch + 1), now, epoch)
                  for epoch in range(epochs) for name in NAMES]  # fmt: skip
        for start in range(0, len(points), MAX_METRICS):
            client.log_batch(run_id, metrics=points[start : start + MAX_METRICS])
        client.set_terminated(run_id, "FINISHED")
    return time.perf_counter() - started


def in_parallel(
    target: Callable[..., Any], argument_lists: list[tuple[Any, ...]]
) -> tuple[list[Any], float]:
    """`target(*arguments, ready)` in a process each (spawned: no state shared by a fork): their
    results (in the order they end), and the seconds from all of them ready (the barrier) until
    the last is done. A multiprocessing Barrier travels only by inheritance, so each gets it as
    a Process argument. A writer that fails, or dies, fails the measurement: never a hang."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(len(argument_lists) + 1)
    results = context.Queue()
    processes = [context.Process(target=_call, args=(target, arguments, ready, results),
                                 daemon=True) for arguments in argument_lists]  # fmt: skip
    values: list[Any] = []
    try:
        for process in processes:
            process.start()
        try:
            ready.wait(timeout=300)
        except threading.BrokenBarrierError:
            raise RuntimeError(
                f"a writer failed before it was ready: {_first(results)!r}"
            ) from None
        started = time.perf_counter()
        deadline = started + 3600
        while len(values) < len(processes):
            try:
                values.append(results.get(timeout=1))
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if dead or time.perf_counter() > deadline:
                    raise RuntimeError(f"a writer died (exit codes {dead})") from None
        elapsed = time.perf_counter() - started
    finally:
        ready.abort()  # (a no-op once passed) nobody waits for a writer that will not come
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    errors = [value for value in values if isinstance(value, BaseException)]
    if errors:
        raise RuntimeError(f"a writer failed: {errors[0]!r}")
    return values, elapsed


def _first(results: Any) -> object:
    try:
        return results.get(timeout=5)
    except queue.Empty:
        return "no word from it"


def _call(target: Callable[..., Any], arguments: tuple[Any, ...], ready: Barrier,
          results: Any) -> None:  # fmt: skip
    try:
        results.put(target(*arguments, ready))
    except BaseException as error:
        ready.abort()  # the parent stops waiting for a writer that will never be ready
        results.put(RuntimeError(repr(error)))  # (plain: the error itself may not pickle)
        raise


def floor_seconds(uri: str, configs: int, epochs: int, writers: int) -> float:
    """Seconds from all writers ready until the last run has ended."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(uri).create_experiment(f"floor-{time.time_ns()}")
    shares = [configs // writers + (i < configs % writers) for i in range(writers)]
    _, seconds = in_parallel(_writer, [(uri, experiment_id, share, epochs) for share in shares])
    return seconds
