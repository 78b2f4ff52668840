"""A Tracker's runs on their way to the store: their epochs, batched (see recorder.py).

A RunGroup holds the epochs of one or more runs since the last batch and hands them to the
tracker as one Epochs request; a RunStream is a group of one. A batch the store could not take
is remembered by the tracker (LostEpochs) and raised here, at the next batch, which stops
training; such a run never ends FINISHED. Nothing here imports MLflow.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Protocol, TypeVar

from linreg_exp.errors import TrackingError
from linreg_exp.tracking.messages import (
    Artifact,
    EpochBatch,
    Epochs,
    Failed,
    Finished,
    FinishRun,
    LinearModelSpec,
    Reply,
    Request,
    Row,
    Started,
    Task,
)
from linreg_exp.vocab import Outcome, Tag

# A batch of many runs costs a store call a run: at least this many epochs a run, ~1000 points
MIN_ROWS_A_RUN = 333


class Queue(Protocol):
    """What a RunGroup needs of its Tracker."""

    lost: dict[str, LostEpochs]

    def submit(self, message: Request) -> Future[Reply]: ...

    @property
    def busy(self) -> bool: ...

    @property
    def batch_limit(self) -> int: ...


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
        tracker: Queue,
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
        last: tuple[int, tuple[float, ...]] | None = None,
    ) -> Future[Reply]:
        """Send the epochs left (the run's last one always), then end the run, however it
        went. `last`: the run's last epoch as its engine saw it, sent too unless it is already
        on its way (a signal may stop the engine between seeing an epoch and queueing it; the
        store skips a step it has)."""
        skipped, rows = self._skipped.pop(run, None), self._rows[run]
        if last is not None and (skipped is None or skipped[0] < last[0]):
            skipped = (last[0], time.time_ns() // 1_000_000, last[1])
        if skipped is not None and (not rows or rows[-1][0] < skipped[0]):
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
