"""§3 the logging floor: a run's epochs through the Session (the code that writes to MLflow)
against MlflowClient called directly with the same metrics, and each store's sustained rate.

In this process, on a SQLite store and on a local `mlflow server` (tests/support/servers.py):
the default run's 500 epochs x 3 metrics through the Session as one Epochs batch, against
MlflowClient.log_batch (the floor) and MlflowClient.log_metric per value (timed on a sample
and scaled). Then a Tracker with its Session in this process (`InProcess`), fed epochs as fast
as a loop can call run.epoch for a while, gives the store's sustained rate under a run's
batching; MlflowClient.log_batch back to back as long gives its floor.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any, TypeVar

from benchmarks.harness import Context, Row, Target, progress, rotated, seconds_of
from benchmarks.questions.loop import LR
from linreg_exp.data import make_dataset
from linreg_exp.schema import DataConfig
from linreg_exp.train import Member, fit, set_cpu_threads
from linreg_exp.vocab import Outcome
from tests.support.servers import mlflow_server

NAMES = ("loss", "weight", "bias")  # a default run's metrics per epoch, as fit yields them
EPOCHS = 500  # the default run: it sends them all in one batch (FIRST_BATCH, < 1 s)
T = TypeVar("T")
Row3 = tuple[int, int, tuple[float, ...]]


@dataclass(frozen=True)
class Sizes:
    log_sample: int  # per-value calls timed, scaled to all 1500 values
    log_reps: int
    stream_seconds: float  # epochs streamed as fast as a loop can, per store


FULL = Sizes(log_sample=300, log_reps=9, stream_seconds=10.0)
QUICK = Sizes(log_sample=60, log_reps=2, stream_seconds=4.0)


def epoch_rows(epochs: int) -> list[Row3]:
    """A default run's epochs as a tracker sends them: (step, ms timestamp, (loss, w, b))."""
    data = make_dataset(DataConfig(), seed=0)
    set_cpu_threads(1_000)
    member = Member(0, "torch.nn.L1Loss", "torch.optim.SGD", LR)
    return [
        (step, time.time_ns() // 1_000_000, tuple(metrics.values()))
        for step, metrics in enumerate(fit(data, member, epochs))
    ]


def as_metrics(rows: list[Row3]) -> list[Any]:
    """The rows as MLflow Metric entities, step = epoch (what the Session hands MLflow)."""
    from mlflow.entities import Metric

    return [Metric(name, value, timestamp, step)
            for step, timestamp, values in rows
            for name, value in zip(NAMES, values, strict=True)]  # fmt: skip


def start_run() -> Any:
    from linreg_exp.tracking.messages import StartRun

    return StartRun("run", None, {}, {}, {})


def answer(reply: object, kind: type[T]) -> T:
    """The Session's reply, or the error it reports."""
    if not isinstance(reply, kind):
        raise RuntimeError(f"expected {kind.__name__}, got {reply!r}")
    return reply


@dataclass(frozen=True)
class Stream:
    epochs: int  # submitted by the loop
    stored: int  # epochs the store acknowledged
    seconds: float  # first epoch to the finish's completion
    batches: int
    max_ahead: int  # epochs submitted minus epochs stored, at most (sampled)

    @property
    def rate(self) -> float:
        """Epochs stored a second."""
        return self.stored / self.seconds


def stream_epochs(uri: str, seconds: float) -> Stream:
    """A real Tracker (its Session in this process) fed epochs as fast as a loop can call
    run.epoch for `seconds`, then finished: the store's sustained rate under a run's batching."""
    from linreg_exp.tracking.messages import Open, Reply, Request, Stored
    from linreg_exp.tracking.recorder import Tracker, finished
    from linreg_exp.tracking.session import InProcess

    class Counting(InProcess):
        """InProcess, counting the epochs the store acknowledged."""

        def __init__(self) -> None:
            super().__init__()
            self.stored = self.batches = 0

        def request(self, message: Request) -> Reply:
            reply = super().request(message)
            if isinstance(reply, Stored):
                self.stored += reply.count
                self.batches += 1
            return reply

    transport = Counting()
    tracker = Tracker(transport, Open(uri, "bench-stream"))
    with redirect_stdout(io.StringIO()):  # MLflow prints the run's URL
        try:
            tracker.opened()
            run = tracker.start_run(start_run())
            run.started()
            step = max_ahead = 0
            started = time.perf_counter()
            deadline = started + seconds
            while True:
                run.epoch(step, {"loss": 1.0 / (step + 1), "weight": 2.0, "bias": 3.0})
                step += 1
                if step % 16 == 0:
                    max_ahead = max(max_ahead, step - transport.stored)
                    if step % 256 == 0 and time.perf_counter() >= deadline:
                        break
            finished(run.finish(Outcome.COMPLETED))
            elapsed = time.perf_counter() - started
        finally:
            tracker.close()
    return Stream(step, transport.stored, elapsed, transport.batches, max_ahead)


def store_rate_direct(uri: str, seconds: float, batch: int) -> float:
    """Epochs a second that MLflow's client takes when called directly, back to back, with
    `batch`-epoch batches on one run for `seconds`: the floor of the sustained rate."""
    from linreg_exp.tracking.messages import FinishRun, Open, Opened, Started
    from linreg_exp.tracking.session import Session

    session = Session()
    answer(session.handle(Open(uri, "bench-stream")), Opened)
    run_id = answer(session.handle(start_run()), Started).run_id
    assert session.client is not None
    client = session.client
    step = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        now = time.time_ns() // 1_000_000
        metrics = as_metrics([(step + i, now, (1.0 / (step + i + 1), 2.0, 3.0))
                              for i in range(batch)])  # fmt: skip
        client.log_batch(run_id, metrics=metrics)
        step += batch
    elapsed = time.perf_counter() - started
    with redirect_stdout(io.StringIO()):  # MLflow prints the run's URL
        session.handle(FinishRun("run", Outcome.COMPLETED))
    return step / elapsed


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    root = ctx.folder("logging")
    result: list[Row] = []
    rows = epoch_rows(EPOCHS)
    progress("3: starting a local mlflow server")
    server_log = root / "server.log"
    with mlflow_server(f"sqlite:///{root / 'server.db'}", server_log, wait=False, cwd=root) as srv:
        server_url = srv.wait_healthy(timeout=120)
        stores = [
            ("SQLite", f"sqlite:///{root / 'mlflow.db'}"),
            ("local HTTP server", server_url),
        ]
        for name, uri in stores:
            result += _one_store(sizes, name, uri, rows)
    return result


def _one_store(sizes: Sizes, name: str, uri: str, rows: list[Row3]) -> list[Row]:
    from linreg_exp.tracking.messages import (
        EpochBatch,
        Epochs,
        Finished,
        FinishRun,
        Open,
        Opened,
        Started,
        Stored,
    )
    from linreg_exp.tracking.session import Session

    epochs = EPOCHS
    metrics = as_metrics(rows)
    sample = max(1, min(sizes.log_sample, len(metrics)))
    chunk = 1000  # MLflow's MAX_METRICS_PER_BATCH, as MlflowClient.log_batch splits

    def through_session(session: Session, run_id: str) -> float:
        request = Epochs([EpochBatch("run", NAMES, rows)])
        return seconds_of(lambda: answer(session.handle(request), Stored))

    def store_direct(session: Session, run_id: str) -> float:
        """The floor: MLflow's client called directly with the same metrics."""
        assert session.client is not None
        client = session.client
        return seconds_of(lambda: client.log_batch(run_id, metrics=metrics))

    def per_value(session: Session, run_id: str) -> float:
        assert session.client is not None
        client = session.client
        part = metrics[:sample]

        def log_each() -> None:
            for m in part:
                client.log_metric(run_id, m.key, m.value, m.timestamp, m.step)

        return seconds_of(log_each) * len(metrics) / sample

    progress(f"3: logging to {name}, {sizes.log_reps} repetitions")
    session = Session()
    answer(session.handle(Open(uri, "bench")), Opened)  # schema created here

    def new_run() -> str:
        return answer(session.handle(start_run()), Started).run_id

    def end_run() -> None:
        with redirect_stdout(io.StringIO()):  # MLflow prints the run's URL
            answer(session.handle(FinishRun("run", Outcome.COMPLETED)), Finished)

    new_run()  # warm-up: every path once
    answer(session.handle(Epochs([EpochBatch("run", NAMES, rows[:10])])), Stored)
    end_run()
    times: dict[str, list[float]] = {"session": [], "each": [], "store": []}
    variants: list[tuple[str, Callable[[Session, str], float]]] = [
        ("session", through_session),
        ("each", per_value),
        ("store", store_direct),
    ]
    for rep in range(sizes.log_reps):
        for key, fn in rotated(variants, rep):
            run_id = new_run()
            times[key].append(fn(session, run_id))
            end_run()
    calls = -(-len(metrics) // chunk)
    result = [
        Row(
            3,
            f"log {epochs} epochs x 3 metrics, {name}: through the Session (one Epochs "
            f"batch of {epochs}, as the default run sends them) vs MlflowClient.log_batch "
            "called directly with the same metrics (the floor)",
            times["session"],
            times["store"],
            "s",
            Target(1.1, True, "≤ 1.1x"),
            f"{calls} store call(s) each side; the floor skips the Session (its request, "
            "its skipping of stored steps, its Metric entities); the rest is MLflow's",
        ),
        Row(
            3,
            f"log {epochs} epochs x 3 metrics, {name}: through the Session vs "
            "MlflowClient.log_metric per value",
            times["session"],
            times["each"],
            "s",
            None,
            f"per-value time: {sample} calls timed, scaled to {len(metrics)}",
        ),
    ]
    result.append(_sustained(sizes, name, uri))
    return result


def _sustained(sizes: Sizes, name: str, uri: str) -> Row:
    progress(f"3: streaming epochs to {name} for {sizes.stream_seconds:g} s")
    stream = stream_epochs(uri, sizes.stream_seconds)
    if stream.stored != stream.epochs:
        raise RuntimeError(f"{name}: {stream.epochs} epochs sent, {stream.stored} stored")
    batch = round(stream.stored / stream.batches)
    progress(f"3: MLflow's store directly, {batch}-epoch batches for the same time")
    floor = store_rate_direct(uri, stream.seconds, batch)
    ahead_s = stream.max_ahead / stream.rate
    return Row(
        3,
        f"sustained store rate, {name}: metric points/s stored (epochs/s in the "
        "note), a loop calling run.epoch as fast as it can",
        [3 * stream.rate],
        [],
        "points/s",
        None,
        f"{stream.rate:.0f} epochs/s: {stream.stored} epochs stored in "
        f"{stream.seconds:.1f} s (first epoch to the run's end) in {stream.batches} "
        "batches, through Tracker(InProcess()) with the defaults (log_every_n_epochs=1,"
        f" log_every_seconds=1.0); MlflowClient.log_batch directly, back to back, "
        f"{batch}-epoch batches on one run as long: {3 * floor:.0f} points/s "
        f"({floor:.0f} epochs/s); training was at most {stream.max_ahead} epochs "
        f"≈ {ahead_s:.1f} s of store time ahead of the store",
    )
