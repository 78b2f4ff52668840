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
import time
from multiprocessing.synchronize import Barrier

NAMES = ("loss", "weight", "bias")
MAX_METRICS = 1000  # MLflow's log_batch limit


def _writer(uri: str, experiment_id: str, runs: int, epochs: int, ready: Barrier) -> float:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.get_experiment(experiment_id)  # the store open (its schema checked) before the clock
    ready.wait()
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


def floor_seconds(uri: str, configs: int, epochs: int, writers: int) -> float:
    """Seconds from all writers ready until the last run has ended."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(uri).create_experiment(f"floor-{time.time_ns()}")
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(writers + 1)
    shares = [configs // writers + (i < configs % writers) for i in range(writers)]
    with context.Pool(writers) as pool:
        pending = [pool.apply_async(_writer, (uri, experiment_id, share, epochs, ready))
                   for share in shares]  # fmt: skip
        ready.wait()
        started = time.perf_counter()
        for result in pending:
            result.get(timeout=3600)
        return time.perf_counter() - started
