"""MLflow at the edge: a Session answers the tracking protocol with MlflowClient calls.

A Session belongs to one Tracker and answers its requests in order: open the store, create runs,
store their epochs, end them with their outcome's status, close the sweep's parent. It runs in
the helper process (helper_main.py) or in the job's own (InProcess); either way it is, with
parent.py for the sweep's parent, the only code that writes to MLflow, and it ends every run it
opens.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient

from linreg_exp.errors import LinregError, TrackingError
from linreg_exp.tracking import model, parent
from linreg_exp.tracking.context import default_tags
from linreg_exp.tracking.messages import (
    Close,
    Closed,
    DatasetInfo,
    Epochs,
    Failed,
    Finished,
    FinishRun,
    Open,
    Opened,
    Parent,
    Reply,
    Request,
    Started,
    StartRun,
    Stored,
    describe_error,
)
from linreg_exp.tracking.store import open_store
from linreg_exp.tracking.tasks import run_task
from linreg_exp.vocab import FAILED, KILLED, Outcome, Tag

log = logging.getLogger(__name__)


@dataclass
class _OpenRun:
    run_id: str
    last_step: int = -1  # the last epoch stored
    monitor: SystemMetricsMonitor | None = None  # MLflow's sampler of the machine, if asked


class Session:
    """The MLflow side of one Tracker (see messages.py for the protocol)."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.request: Open | None = None
        self.experiment_id = ""
        self.parent_run_id: str | None = None
        self.resumed = False
        self.runs: dict[str, _OpenRun] = {}  # by the tracker's key
        self.failure: str | None = None  # the first outcome that could not be logged

    def handle(self, request: Request) -> Reply:
        """Answer one request; an error is a Failed reply, and the session goes on."""
        try:
            return self._dispatch(request)
        except LinregError as error:
            return Failed(str(error), user_error=True)
        except Exception as error:
            log.exception("tracking failed on %s", type(request).__name__)
            return Failed(describe_error(error), user_error=False)

    def _dispatch(self, request: Request) -> Reply:
        match request:
            case Open():
                return self._open(request)
            case StartRun():
                return self._start(request)
            case Epochs():
                return self._store(request)
            case FinishRun():
                return self._finish(request)
            case Close():
                return self._close(request.status)

    @property
    def _client(self) -> MlflowClient:
        if self.client is None:
            raise TrackingError("the tracking store is not open")
        return self.client

    @property
    def _parent(self) -> Parent | None:
        """The sweep's parent this session owns (it closes it), if any."""
        return self.request.parent if self.request is not None else None

    def _open(self, request: Open) -> Opened:
        self.client, self.experiment_id = open_store(request.tracking_uri, request.experiment_name)
        self.request, self.parent_run_id = request, request.parent_run_id
        if request.parent is not None:
            self.parent_run_id = parent.reopen(self.client, self.experiment_id, request.parent)
            if self.parent_run_id is None and request.parent.jobs != "here":
                self._create_parent()
        self.resumed = self.parent_run_id is not None and (
            parent.finished_child(self.client, self.experiment_id, self.parent_run_id) is not None
        )
        return Opened(self.experiment_id, self.parent_run_id, self.resumed)

    def _create_parent(self) -> str:
        assert self._parent is not None
        self.parent_run_id = self._client.create_run(
            self.experiment_id,
            run_name=self._parent.run_name,
            tags={**default_tags(), **self._parent.tags},
        ).info.run_id
        return self.parent_run_id

    def _start(self, request: StartRun) -> Started:
        if request.run in self.runs:  # its job never reported: the run must not stay open
            self._end(request.run, KILLED, {Tag.OUTCOME: Outcome.INTERRUPTED,
                                            Tag.FAILURE: "never finished"})  # fmt: skip
        identity = {key: request.tags[key] for key in parent.IDENTITY if key in request.tags}
        if self.resumed and self.parent_run_id and len(identity) == len(parent.IDENTITY):
            kept = parent.finished_child(self._client, self.experiment_id, self.parent_run_id,
                                         identity)  # fmt: skip
            if kept is not None:
                return Started(request.run, kept.info.run_id, self.experiment_id,
                               self.parent_run_id, dict(kept.data.metrics))  # fmt: skip
        if self._parent is not None and self.parent_run_id is None:
            self._create_parent()
        tags = {**default_tags(), **request.tags}
        if self.parent_run_id is not None:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self._client.create_run(self.experiment_id, run_name=request.name, tags=tags)
        run_id = run.info.run_id
        self.runs[request.run] = open_run = _OpenRun(run_id)
        try:
            if request.system_metrics:
                open_run.monitor = SystemMetricsMonitor(run_id, tracking_uri=self._uri)
                open_run.monitor.start()
            params = [Param(key, value[:6000]) for key, value in request.params.items()]
            self._client.log_batch(run_id, params=params)
            self._client.log_dict(run_id, request.config, "config.yaml")
            if request.dataset is not None:
                self._client.log_inputs(run_id, [dataset_input(request.dataset)])
        except BaseException as error:
            self._end(request.run, FAILED, {Tag.OUTCOME: Outcome.ERROR,
                                            Tag.ERROR: describe_error(error)})  # fmt: skip
            raise
        return Started(request.run, run_id, self.experiment_id, self.parent_run_id)

    def _store(self, request: Epochs) -> Stored:
        stored = 0
        for batch in request.batches:
            run = self._run(batch.run)
            rows = [row for row in batch.rows if row[0] > run.last_step]
            if not rows:
                continue
            metrics = [Metric(name, value, timestamp, step)
                       for step, timestamp, values in rows
                       for name, value in zip(batch.names, values, strict=True)]  # fmt: skip
            self._client.log_batch(run.run_id, metrics=metrics)
            run.last_step, stored = rows[-1][0], stored + len(rows)
        return Stored(stored)

    def _run(self, key: str) -> _OpenRun:
        if key not in self.runs:
            raise RuntimeError(f"no run {key!r} is open")
        return self.runs[key]

    def _finish(self, request: FinishRun) -> Finished:
        run_id = self._run(request.run).run_id
        status, extra_tags = request.outcome.status, {}
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(key, value, now, 0) for key, value in request.metrics.items()]
            tags = run_tags({Tag.OUTCOME: request.outcome, **request.tags})
            self._client.log_batch(run_id, metrics=metrics, tags=tags)
            files = [(file.path, file.directory) for file in request.files]
            if request.report is not None:
                report = request.report
                files += [(path, None) for path in run_task(report.function, report.argument)]
            for path, directory in files:
                if Path(path).is_file():
                    self._client.log_artifact(run_id, path, directory)
            if request.model is not None:
                model.log_model(self._client, self.experiment_id, run_id, request.model,
                                request.metrics)  # fmt: skip
        except BaseException as error:
            status = FAILED
            extra_tags = {Tag.OUTCOME: Outcome.ERROR, Tag.ERROR: describe_error(error)}
            self.failure = self.failure or f"could not log a job's outcome: {describe_error(error)}"
            raise
        finally:
            self._end(request.run, status, extra_tags)
        return Finished(run_id)

    def _close(self, status: str | None, reason: str = "the job never finished") -> Closed:
        for key in list(self.runs):
            self._end(key, KILLED, {Tag.OUTCOME: Outcome.INTERRUPTED, Tag.FAILURE: reason})
        summary = None
        sweep = self._parent
        if sweep is not None and self.parent_run_id is not None:
            if self.failure is not None:
                status = FAILED
            # a child still RUNNING has vanished, unless its job may outlive this launcher
            reap = status is None or sweep.jobs != "scheduler"
            parent_id, self.parent_run_id = self.parent_run_id, None
            summary = parent.close(self._client, self.experiment_id, parent_id, status, reap,
                                   sweep)  # fmt: skip
        return Closed(summary, self.failure)

    def close_all(self, reason: str) -> None:
        """The job is gone without a word (killed outright): end what it left open, KILLED."""
        with contextlib.suppress(Exception):
            self._close(KILLED, reason)

    @property
    def _uri(self) -> str:
        assert self.request is not None
        return self.request.tracking_uri

    def _end(self, key: str, status: str, tags: Mapping[str, str]) -> None:
        run = self.runs.pop(key, None)
        if run is None:
            return
        if run.monitor is not None:  # its last samples are stored before the run ends
            run.monitor.finish()
        try:
            if tags:
                self._client.log_batch(run.run_id, tags=run_tags(tags))
        except Exception:  # the status matters more than these tags
            log.warning("could not tag run %s", run.run_id, exc_info=True)
        finally:
            self._client.set_terminated(run.run_id, status)


class InProcess:
    """A Session in this process (a Transport), answering on the tracker's worker thread."""

    def __init__(self) -> None:
        self.session = Session()

    def request(self, message: Request) -> Reply:
        return self.session.handle(message)

    def close(self) -> None:
        """Nothing to hang up: Close has ended what was open."""


def dataset_input(info: DatasetInfo) -> DatasetInput:
    """The data as MLflow's UI shows it (the Dataset column): generated by code from a config."""
    source = CodeDatasetSource(info.source).to_json()
    dataset = DatasetEntity(info.name, info.digest, source_type="code", source=source)
    return DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])


def run_tags(tags: Mapping[str, str]) -> list[RunTag]:
    return [RunTag(key, str(value)[:5000]) for key, value in tags.items()]
