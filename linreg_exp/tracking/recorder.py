"""The job's side of tracking: one API, wherever MLflow runs.

    tracker = Tracker(transport, Open(uri, "linreg"))   # the store starts opening
    tracker.opened()                                     # open, or TrackingError
    run = tracker.start_run(StartRun("run", ...), log_every_n_epochs=1, log_every_seconds=1.0)
    for each epoch: run.epoch(step, {"loss": ..., "weight": ..., "bias": ...})
    run.finish(Outcome.COMPLETED, metrics, ...)          # a Future: wait for it, or not (sweeps)
    tracker.close()                                      # the sweep's parent, the helper: done

Many runs at once (a batched sweep's) are a RunGroup (`tracker.start_runs`): their epochs travel
together, one Epochs request for all of them; a single run is a group of one.

Requests travel in order through a bounded queue to one worker thread, which hands each to the
transport (the helper's pipe, or a Session in this process) and waits for its reply. So the
training loop never waits for the store, unless the store falls behind: epochs leave in
batches every `log_every_seconds`, a batch is capped at about a second of the store's measured
time, and the queue holds one batch. When the store is slower than training, training waits:
it is never more than a few seconds of store time ahead, and stopping never means minutes of
catch-up. Signals reach only the main thread, never the thread writing to the pipe.

Nothing here imports MLflow or torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Protocol, TypeVar

from linreg_exp.errors import TrackingError
from linreg_exp.tracking.messages import (
    Artifact,
    Close,
    Closed,
    EpochBatch,
    Epochs,
    Failed,
    Finished,
    FinishRun,
    LinearModelSpec,
    Open,
    Opened,
    Reply,
    Request,
    Row,
    Started,
    StartRun,
    Task,
)
from linreg_exp.tracking.spool import Spool, with_report_drawn
from linreg_exp.tracking.tasks import run_task
from linreg_exp.vocab import Outcome, Tag

FIRST_BATCH = 1000  # epochs in a batch until the store's rate is known
SMALLEST_BATCH = 50
# A batch of many runs costs a store call a run: at least this many epochs a run, ~1000 points
MIN_ROWS_A_RUN = 333
BATCH_SECONDS = 1.0  # a full batch is about this long of the store's time
CLOSE_WAIT_SECONDS = 120  # logging over HTTP with retries can take this long in the worst case


class Transport(Protocol):
    def request(self, message: Request) -> Reply:
        """Deliver one request and return its reply."""

    def stop_waiting(self) -> None:
        """The job is stopping: stop waiting for a store that does not answer; spool."""

    def close(self) -> None: ...


class Tracker:
    """Where a job's requests go; shared by the jobs of a sweep run in one process."""

    def __init__(self, transport: Transport, open_request: Open) -> None:
        self.transport = transport
        self.tracking_uri = open_request.tracking_uri
        self.store_rate: float | None = None  # epochs a second, measured on the last batch
        self.parent_run_id = open_request.parent_run_id  # the sweep's, once the store names it
        self.runs_started = 0  # StartRun requests made: has a job got as far as its run?
        self.open_request = open_request
        self.spool: Spool | None = None  # the helper is gone: the job spools its requests
        self._run_ids: dict[str, str] = {}  # the runs the store named, by key
        # epochs the store could not take, by run: the worker notes them in reply order, so no
        # lost batch goes unseen however many were queued after it (RunGroup raises it, and a
        # run with a hole never ends FINISHED: FinishRun is turned into an error here)
        self.lost: dict[str, LostEpochs] = {}
        self._stopping = False  # stop_waiting was said
        self._queue: queue.Queue[tuple[Request, Future[Reply]]] = queue.Queue(maxsize=1)
        self._worker = threading.Thread(target=self._serve, name="linreg-tracker", daemon=True)
        self._worker.start()
        self._opened = self.submit(open_request)

    def submit(self, message: Request) -> Future[Reply]:
        """Queue a request (waits while the queue is full); its reply comes as a Future."""
        future: Future[Reply] = Future()
        self._queue.put((message, future))
        return future

    @property
    def busy(self) -> bool:
        return self._queue.full()

    @property
    def batch_limit(self) -> int:
        """Epochs in a full batch: about BATCH_SECONDS of the store's time at its last rate."""
        if self.store_rate is None:
            return FIRST_BATCH
        return max(SMALLEST_BATCH, int(self.store_rate * BATCH_SECONDS))

    def opened(self) -> Opened:
        """Wait until the store is open; TrackingError (before any run exists) if it cannot be."""
        return reply_of(self._opened, Opened)

    def start_run(
        self, request: StartRun, log_every_n_epochs: int = 1, log_every_seconds: float = 1.0
    ) -> RunStream:
        """Create a run; returns at once, the run is created while the job goes on."""
        group = self.start_runs([request], log_every_n_epochs, log_every_seconds)
        return RunStream(group, request.run)

    def start_runs(
        self,
        requests: Sequence[StartRun],
        log_every_n_epochs: int = 1,
        log_every_seconds: float = 1.0,
    ) -> RunGroup:
        """Create runs whose epochs travel together; returns at once."""
        started = {request.run: self.begin_run(request) for request in requests}
        return RunGroup(self, started, log_every_n_epochs, log_every_seconds)

    def begin_run(self, request: StartRun) -> Future[Reply]:
        """Ask for a run (a RunGroup takes it from there): its Started reply, as a Future."""
        self.runs_started += 1
        return self.submit(request)

    def stop_waiting(self) -> None:
        """The job is stopping: a store that does not answer is waited for no more (said
        once; called from a signal handler, too)."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            self.transport.stop_waiting()

    def close(self, status: str | None = None) -> Closed:
        """End what is left (the sweep's parent, with `status`), stop the worker and transport.
        A store that does not answer is waited for up to its outage timeout (then spooled)."""
        wait = self.open_request.outage_timeout + CLOSE_WAIT_SECONDS
        try:
            return reply_of(self.submit(Close(status)), Closed, wait)
        finally:
            self._worker.join(CLOSE_WAIT_SECONDS)  # it stops after Close
            self.transport.close()

    def _serve(self) -> None:
        message: Request | None = None
        while not isinstance(message, Close):
            try:  # a timeout, not a bare get(): a signal in put() may cost the wake-up call
                message, future = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            started = time.monotonic()
            if isinstance(message, FinishRun) and message.run in self.lost:
                message = self.lost[message.run].failing(message)
            try:
                reply = self._spooled(message) if self.spool else self.transport.request(message)
            except BaseException as error:  # the helper is gone: every later request fails too
                reply = self._spool_instead(message, error)
            if isinstance(message, Epochs) and isinstance(reply, Failed):
                for batch in message.batches:
                    self.lost.setdefault(batch.run, LostEpochs(reply.message)).add(batch.rows)
            elif isinstance(message, Epochs):
                epochs = sum(len(batch.rows) for batch in message.batches)
                self.store_rate = epochs / max(time.monotonic() - started, 1e-3)
            if isinstance(reply, Opened | Started) and reply.parent_run_id is not None:
                self.parent_run_id = reply.parent_run_id
            if isinstance(reply, Started):
                self._run_ids[reply.run] = reply.run_id
            if isinstance(message, FinishRun) and not isinstance(reply, Failed):
                self._run_ids.pop(message.run, None)  # ended: a spool must not end it again
            future.set_result(reply)

    def _spool_instead(self, message: Request, error: BaseException) -> Reply:
        """The process that records the runs is gone mid-run (killed, say, while the store was
        down): from here on, this job spools its requests itself, this one first."""
        directory = self.open_request.spool_dir
        if directory is None or isinstance(message, Open):
            return Failed(str(error), user_error=False)
        self.spool = Spool(directory)
        self.spool.begin(self.open_request, dict(self._run_ids), self.parent_run_id)
        print(f"linreg_exp: {error}; the runs are kept in {self.spool.path}: deliver them "
              f"with: linreg-exp sync {directory}", file=sys.stderr, flush=True)  # fmt: skip
        try:
            return self._spooled(message)
        except Exception as failed:
            return Failed(f"{error}; and spooling failed: {failed}", user_error=False)

    def _spooled(self, message: Request) -> Reply:
        """A request kept in this job's spool; a run's pictures are drawn first, here."""
        assert self.spool is not None
        if isinstance(message, FinishRun) and message.report is not None:
            report = message.report
            message = with_report_drawn(message, run_task(report.function, report.argument))
        return self.spool.append(message)


class LostEpochs:
    """The epochs of a run that the store could not take, and why: the run ends FAILED."""

    def __init__(self, error: str) -> None:
        self.error = error
        self.steps: list[int] = []

    def add(self, rows: Sequence[Row]) -> None:
        self.steps.extend(row[0] for row in rows)

    def describe(self) -> str:
        first, last = min(self.steps), max(self.steps)
        span = f"epoch {first}" if first == last else f"epochs {first}-{last}"
        return f"{self.error} ({span} not stored: {len(self.steps)} lost)"

    def failing(self, request: FinishRun) -> FinishRun:
        """The run's end as it must be: FAILED, naming the lost epochs, whatever it thought."""
        lost = self.describe()
        error = request.tags.get(Tag.ERROR)
        error = lost if error is None or lost in error else f"{error}; {lost}"
        return dataclasses.replace(request, outcome=Outcome.ERROR,
                                   tags={**request.tags, Tag.ERROR: error})  # fmt: skip


class RunGroup:
    """The epochs of one or more runs on their way to the store: one Epochs request carries
    every run's rows since the last (see the module docstring for when they leave)."""

    def __init__(
        self,
        tracker: Tracker,
        started: dict[str, Future[Reply]],
        log_every_n_epochs: int,
        log_every_seconds: float,
    ) -> None:
        self.tracker = tracker
        self._started = started
        self.every_n = log_every_n_epochs
        self.interval = log_every_seconds
        self._due = time.monotonic() + log_every_seconds
        self.names: tuple[str, ...] = ()  # the metrics of an epoch, the same for every run
        self._rows: dict[str, list[Row]] = {run: [] for run in started}
        self._skipped: dict[str, Row] = {}  # each run's last epoch thinned out
        self._pending = 0  # rows waiting, all runs together

    def started(self, run: str) -> Started:
        return reply_of(self._started[run], Started)

    def epoch(self, step: int, runs: Sequence[str], values: Sequence[tuple[float, ...]]) -> None:
        """Queue one epoch of each of `runs`, its metrics' values in `names` order. Each run's
        change is one list operation, so a signal arriving in the middle loses nothing (a batch
        whose send it cut short is sent again at the end, and the store skips steps it has)."""
        timestamp = time.time_ns() // 1_000_000
        if step % self.every_n:
            for run, row in zip(runs, values, strict=True):
                self._skipped[run] = (step, timestamp, row)
            return
        for run, row in zip(runs, values, strict=True):
            self._rows[run].append((step, timestamp, row))
        self._pending += len(runs)
        limit = max(self.tracker.batch_limit, MIN_ROWS_A_RUN * len(self._rows))
        if self._pending >= limit:
            self._send()  # waits while the queue holds a batch: the store is behind
        elif time.monotonic() >= self._due and not self.tracker.busy:
            self._send()

    def finish(
        self,
        run: str,
        outcome: Outcome,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        files: list[Artifact] | None = None,
        report: Task | None = None,
        model: LinearModelSpec | None = None,
    ) -> Future[Reply]:
        """Send the epochs left (the run's last one always), then end the run, however it
        went."""
        skipped, rows = self._skipped.pop(run, None), self._rows[run]
        if skipped is not None and (not rows or rows[-1] < skipped):
            rows.append(skipped)
            self._pending += 1
        if self._pending:
            self._send(check=False)
        request = FinishRun(run, outcome, dict(metrics or {}), dict(tags or {}),
                            list(files or []), report, model)  # fmt: skip
        return self.tracker.submit(request)

    def _send(self, check: bool = True) -> None:
        """Queue the batch; first raise what kept a run, or any batch sent before, out of the
        store, which stops training (the runs then end FAILED with that error)."""
        if check:
            for future in self._started.values():
                if future.done():
                    reply_of(future, Started)
            for run in self._rows:
                if run in self.tracker.lost:
                    raise RuntimeError(self.tracker.lost[run].describe())
        batches = [EpochBatch(run, self.names, rows) for run, rows in self._rows.items() if rows]
        self.tracker.submit(Epochs(batches))
        self._rows = {run: [] for run in self._rows}
        self._pending = 0
        self._due = time.monotonic() + self.interval


class RunStream:
    """One run's epochs on their way to the store: a group of one."""

    def __init__(self, group: RunGroup, run: str) -> None:
        self.group, self.run = group, run

    def started(self) -> Started:
        return self.group.started(self.run)

    def epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue an epoch's metrics (the same names every epoch)."""
        if not self.group.names:
            self.group.names = tuple(metrics)
        self.group.epoch(step, (self.run,), (tuple(metrics.values()),))

    def finish(
        self,
        outcome: Outcome,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        files: list[Artifact] | None = None,
        report: Task | None = None,
        model: LinearModelSpec | None = None,
    ) -> Future[Reply]:
        """Send the epochs left (the last one always), then end the run, however it went."""
        return self.group.finish(self.run, outcome, metrics, tags, files, report, model)

    def _send(self) -> None:
        self.group._send()


def finished(future: Future[Reply], timeout: float | None = None) -> Finished:
    """The run's end, once stored (raises what kept it from being stored)."""
    return reply_of(future, Finished, timeout)


R = TypeVar("R", bound=Reply)


def reply_of(future: Future[Reply], kind: type[R], timeout: float | None = None) -> R:
    """The reply of the expected kind; a Failed reply raised (TrackingError for the user's)."""
    reply = future.result(timeout)
    if isinstance(reply, Failed):
        raise TrackingError(reply.message) if reply.user_error else RuntimeError(reply.message)
    if not isinstance(reply, kind):  # pragma: no cover - a protocol error
        raise RuntimeError(f"expected {kind.__name__}, got {reply!r}")
    return reply
