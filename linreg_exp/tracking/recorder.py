"""The job's side of tracking: one API, wherever MLflow runs.

    tracker = Tracker(transport, Open(uri, "linreg"))   # nothing asked of the store yet
    tracker.opened()                                     # open, or TrackingError
    run = tracker.start_run(StartRun("run", ...), log_every_n_epochs=1, log_every_seconds=1.0)
    for each epoch: run.epoch(step, {"loss": ..., "weight": ..., "bias": ...})
    run.finish(Outcome.COMPLETED, metrics, ...)          # a Future: wait for it, or not (sweeps)
    tracker.close()                                      # the sweep's parent, the helper: done

Many runs at once (a batched sweep's) are a RunGroup (`tracker.start_runs`, stream.py): their
epochs travel together, one Epochs request for all of them; a single run is a group of one.

Requests travel in order through a queue to one worker thread, which hands each to the
transport (the helper's pipe, or a Session in this process) and waits for its reply. So the
training loop never waits for the store, unless the store falls behind: epochs leave in
batches every `log_every_seconds`, a batch is capped at about a second of the store's measured
time, and the queue holds one batch of epochs. When the store is slower than training, training
waits: it is never more than a few seconds of store time ahead, and stopping never means
minutes of catch-up. A run's start and end never wait: they are small, a job has one of each,
and a sweep's next batch of jobs composes, starts and trains while the last one's runs are
ended and their models logged. Signals reach only the main thread, never the thread writing
to the pipe.

The store is asked to open by the first request that needs it (`opened`, a run's start), or
sooner by `open` where a launch knows its runs will come. Until then a helper process only
imports MLflow, beside the job's own start: a launch rejected before (a job's config, its device)
leaves no store behind, and its helper is ended without a word.

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
from typing import Protocol

from linreg_exp.tracking.messages import (
    Close,
    Closed,
    EpochBatch,
    Epochs,
    Failed,
    FinishRun,
    Open,
    Opened,
    Reply,
    Request,
    Row,
    Started,
    StartRun,
)
from linreg_exp.tracking.spool import Spool, with_report_drawn
from linreg_exp.tracking.stream import (  # re-exported: the job's side is one API, here
    MIN_ROWS_A_RUN as MIN_ROWS_A_RUN,
)
from linreg_exp.tracking.stream import LostEpochs as LostEpochs
from linreg_exp.tracking.stream import RunGroup as RunGroup
from linreg_exp.tracking.stream import RunStream as RunStream
from linreg_exp.tracking.stream import finished as finished
from linreg_exp.tracking.stream import reply_of as reply_of

FIRST_BATCH = 1000  # epochs in a batch until the store's rate is known
SMALLEST_BATCH = 50
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
        self._reports: dict[str, list[tuple[int, dict[str, float]]]] = {}  # see `report`
        self._queue: queue.Queue[tuple[Request, Future[Reply]]] = queue.Queue()
        # Epochs requests queued and taken by the worker: a batch waits while one is queued.
        # Counted after the put, so a signal between the two can only let one more through.
        self._epochs_queued = self._epochs_taken = 0
        self._taken = threading.Condition()
        self._worker = threading.Thread(target=self._serve, name="linreg-tracker", daemon=True)
        self._worker.start()
        self._opened: Future[Reply] | None = None  # Open's reply, once it is asked (`open`)
        self._open_taken = False  # the worker took Open: only it reads and writes this

    def open(self, parent_run_id: str | None = None) -> Future[Reply]:
        """Ask the store to open (once): the runs will come, whatever the job does next. Open's
        reply, as a Future. `parent_run_id`: the sweep's parent, for a tracker made before the
        store had named it (a batched launch's extra writers start while its jobs compose)."""
        if self._opened is None:
            if parent_run_id is not None:
                self.open_request = dataclasses.replace(self.open_request,
                                                        parent_run_id=parent_run_id)  # fmt: skip
                self.parent_run_id = parent_run_id
            self._opened = self.submit(self.open_request)
        return self._opened

    def report(self, run: str, step: int, values: Mapping[str, float]) -> None:
        """Metrics of a run at an epoch's step beyond the epoch's own (a sweep's objective every
        sweep.report_every epochs). Reported before that epoch is queued, they ride in the Epochs
        request that carries it, merged into its row: the store takes a run's steps in order,
        once each (it skips a step it has), so they could not follow on their own."""
        self._reports.setdefault(run, []).append((step, dict(values)))

    def submit(self, message: Request) -> Future[Reply]:
        """Queue a request (a batch of epochs waits while another is queued: the store is
        behind); its reply comes as a Future."""
        if self._opened is None and not isinstance(message, Open | Close):
            self.open()  # the store first
        if self._reports and isinstance(message, Epochs):
            message = Epochs([part for batch in message.batches for part in self._merged(batch)])
        elif self._reports and isinstance(message, FinishRun) and message.run in self._reports:
            left = self._reports.pop(message.run)  # their epochs were thinned out: on their own
            self.submit(Epochs([EpochBatch(message.run, tuple(values), [
                (step, time.time_ns() // 1_000_000, tuple(values.values()))])
                for step, values in left]))  # fmt: skip
        future: Future[Reply] = Future()
        if isinstance(message, Epochs):
            with self._taken:
                while self.busy:
                    self._taken.wait(0.5)
        self._queue.put((message, future))
        if isinstance(message, Epochs):
            self._epochs_queued += 1
        return future

    def _merged(self, batch: EpochBatch) -> list[EpochBatch]:
        """A run's epochs with its reports up to its last one: each in its epoch's row, or in
        a row of its own where log_every_n_epochs left that epoch out, in step order."""
        reports = self._reports.get(batch.run)
        if not reports or not batch.rows or reports[0][0] > batch.rows[-1][0]:
            return [batch]
        parts: list[EpochBatch] = []
        plain: list[Row] = []
        for row in batch.rows:
            while reports and reports[0][0] <= row[0]:
                step, values = reports.pop(0)
                if plain:
                    parts.append(EpochBatch(batch.run, batch.names, plain))
                    plain = []
                names, extra = tuple(values), tuple(values.values())
                if step == row[0]:
                    parts.append(EpochBatch(batch.run, (*batch.names, *names),
                                            [(step, row[1], (*row[2], *extra))]))  # fmt: skip
                    break
                parts.append(EpochBatch(batch.run, names, [(step, row[1], extra)]))
            else:
                plain.append(row)
        if plain:
            parts.append(EpochBatch(batch.run, batch.names, plain))
        if not reports:
            del self._reports[batch.run]
        return parts

    @property
    def busy(self) -> bool:
        """A batch of epochs is queued, not yet taken: the store is behind."""
        return self._epochs_queued > self._epochs_taken

    @property
    def batch_limit(self) -> int:
        """Epochs in a full batch: about BATCH_SECONDS of the store's time at its last rate."""
        if self.store_rate is None:
            return FIRST_BATCH
        return max(SMALLEST_BATCH, int(self.store_rate * BATCH_SECONDS))

    def opened(self) -> Opened:
        """Wait until the store is open; TrackingError (before any run exists) if it cannot be."""
        return reply_of(self.open(), Opened)

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
            if isinstance(message, Epochs):
                with self._taken:
                    self._epochs_taken += 1
                    self._taken.notify_all()
            self._open_taken = self._open_taken or isinstance(message, Open)
            if isinstance(message, FinishRun) and message.run in self.lost:
                message = self.lost[message.run].failing(message)
            try:
                reply: Reply
                if isinstance(message, Close) and not self._open_taken:
                    reply = Closed(None, None)  # the store was never asked for anything
                elif self.spool:
                    reply = self._spooled(message)
                else:
                    reply = self.transport.request(message)
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
            message = with_report_drawn(message, report.run())
        return self.spool.append(message)
