"""§12 servers: a PostgreSQL-backed `mlflow server` taking 1, 2 and 4 parallel writers, in
points a second, against the SQLite floor (MlflowClient on a SQLite file, one writer, no server).

Each writer is a process of its own with a run of its own, logging 1,000-metric batches back to
back (MLflow's log_batch limit) for as long; the clock starts when every writer has imported
MLflow and reached the store (a barrier). What a sweep's writers do, without a sweep around them:
which store to choose when is in docs/operations.md ("Which store, when").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier

from benchmarks.harness import Context, Row, progress
from benchmarks.store_floor import in_parallel
from tests.support.servers import mlflow_server, postgres_available, postgres_cluster

NAMES = ("loss", "weight", "bias")
BATCH = 1000  # metrics a log_batch call: MLflow's limit


@dataclass(frozen=True)
class Sizes:
    seconds: float  # each writer's logging time
    writers: tuple[int, ...]
    server_workers: int  # uvicorn workers of the server


FULL = Sizes(seconds=10.0, writers=(1, 2, 4), server_workers=2)
QUICK = Sizes(seconds=4.0, writers=(1, 2, 4), server_workers=2)


def _writer(uri: str, experiment_id: str, seconds: float, ready: Barrier) -> int:
    """Points one writer logged to a run of its own in `seconds` after the barrier."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id).info.run_id
    ready.wait(timeout=300)
    started, step, points = time.perf_counter(), 0, 0
    while time.perf_counter() - started < seconds:
        now = int(time.time() * 1000)
        epochs = BATCH // len(NAMES)
        batch = [Metric(name, 1.0 / (step + i + 1), now, step + i)
                 for i in range(epochs) for name in NAMES]  # fmt: skip
        client.log_batch(run_id, metrics=batch)
        step, points = step + epochs, points + len(batch)
    client.set_terminated(run_id, "FINISHED")
    return points


def points_per_second(uri: str, writers: int, seconds: float) -> float:
    """All writers' points a second, the clock from the barrier to the last writer's end."""
    from mlflow.tracking import MlflowClient

    experiment_id = MlflowClient(uri).create_experiment(f"writers-{writers}-{time.time_ns()}")
    points, elapsed = in_parallel(_writer, [(uri, experiment_id, seconds)] * writers)
    return sum(points) / elapsed


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    root = ctx.folder("servers")
    progress("12: the SQLite floor (MlflowClient on a file, one writer)")
    floor = points_per_second(f"sqlite:///{root / 'floor.db'}", 1, sizes.seconds)
    if not postgres_available():
        progress("12: skipped: no PostgreSQL here (make system-deps installs it)")
        return []
    rows: list[Row] = []
    with postgres_cluster() as database:
        database.create_database("mlflow")
        log = root / "server.log"
        with mlflow_server(database.uri("mlflow"), log, cwd=root,
                           workers=sizes.server_workers) as server:  # fmt: skip
            for writers in sizes.writers:
                progress(f"12: PostgreSQL behind mlflow server, {writers} writer(s)")
                rate = points_per_second(server.url, writers, sizes.seconds)
                rows.append(Row(
                    12, f"PostgreSQL behind `mlflow server` ({sizes.server_workers} workers), "
                    f"{writers} parallel writer(s), vs the SQLite floor (one writer, no server)",
                    [rate], [floor], "points/s", None,
                    f"{rate:.0f} points/s against {floor:.0f}; each writer a process with a run "
                    f"of its own, {BATCH}-metric batches back to back for {sizes.seconds:.0f} s",
                ))  # fmt: skip
    return rows
