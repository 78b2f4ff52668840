"""The MLflow writer: tracking messages turned into MlflowClient calls, and nothing else.

A Writer answers a Tracker's requests in order: open the store, create runs, store their
epochs, end them with their outcome's status, close the sweep's parent. It is, with parent.py
for the sweep's parent, the only code that writes to MLflow, and it ends every run it opens.
A store that does not answer is not its business: it raises, and the transport above it
(transport.py) decides to wait, retry or spool. What it has done for each run is noted, so
that a request sent again after an outage does not do it twice (steps it has are skipped,
the model is logged once).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from mlflow.entities import Metric, Param
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from linreg_exp.errors import TrackingError
from linreg_exp.tracking import model, parent
from linreg_exp.tracking.context import default_tags
from linreg_exp.tracking.entities import log_dataset, quiet_samplers, run_tags
from linreg_exp.tracking.messages import (
    Close,
    Closed,
    DatasetInfo,
    Epochs,
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
from linreg_exp.tracking.store import is_outage, open_store
from linreg_exp.vocab import FAILED, KILLED, Outcome, Tag

log = logging.getLogger(__name__)


@dataclass
class _OpenRun:
    """A run this writer has created and not yet ended, and what is already done for it."""

    run_id: str
    last_step: int = -1  # the last epoch stored
    monitor: SystemMetricsMonitor | None = None  # MLflow's sampler of the machine, if asked
    set_up: bool = False  # its params, config and dataset are logged
    model_id: str | None = None  # its model, once logged
    artifacts: ArtifactRepository | None = None  # where its files go (MLflow's), once known


class Writer:
    """Messages (messages.py) to MlflowClient calls. `write` raises what the store raised."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.request: Open | None = None
        self.experiment_id = ""
        self.parent_run_id: str | None = None
        self.resumed = False
        self.runs: dict[str, _OpenRun] = {}  # by the tracker's key
        self.failure: str | None = None  # the first outcome that could not be logged
        quiet_samplers()

    def write(self, request: Request) -> Reply:
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
                return self._close(request.status, request.reason)

    @staticmethod
    def is_outage(error: Exception) -> bool:
        return is_outage(error)

    def probe(self) -> None:
        """One cheap call that needs the store and its database (raises if they are down)."""
        self._client.get_experiment(self.experiment_id)

    def open_runs(self) -> dict[str, tuple[str, int]]:
        """The runs not yet ended: their ids and last stored epochs, by key."""
        return {key: (run.run_id, run.last_step) for key, run in self.runs.items()}

    def stop_samplers(self) -> None:
        """The store is gone for a while: MLflow's samplers stop (they would log errors)."""
        for run in self.runs.values():
            if run.monitor is not None:
                run.monitor.finish()

    def restart_samplers(self) -> None:
        """The store is back: each run's system-metrics sampler, which stopped when the store
        did not answer, goes on from its last step."""
        for run in self.runs.values():
            if run.monitor is not None:
                run.monitor.finish()
                run.monitor = self._sampler(run.run_id, resume=True)

    def adopt(self, key: str, run_id: str, last_step: int = -1) -> bool:
        """Take over a run the store has (sync: a spool's requests for it come next), if it is
        still RUNNING there; one that ended before (a sync stopped half-way) is left alone."""
        if self._client.get_run(run_id).info.status != "RUNNING":
            return False
        self.runs[key] = _OpenRun(run_id, last_step, set_up=True)
        return True

    def _sampler(self, run_id: str, resume: bool = False) -> SystemMetricsMonitor:
        """MLflow's sampler of the machine for a run, started (from its last step: `resume`)."""
        assert self.request is not None
        sampler = SystemMetricsMonitor(run_id, tracking_uri=self.request.tracking_uri,
                                       resume_logging=resume)  # fmt: skip
        sampler.start()
        return sampler

    @property
    def _client(self) -> MlflowClient:
        if self.client is None:
            raise TrackingError("the tracking store is not open")
        return self.client

    @property
    def _parent(self) -> Parent | None:
        """The sweep's parent this writer owns (it closes it), if any."""
        return self.request.parent if self.request is not None else None

    def _open(self, request: Open) -> Opened:
        self.request, self.parent_run_id = request, request.parent_run_id
        self.client, self.experiment_id = open_store(request.tracking_uri, request.experiment_name)
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
        open_run = self.runs.get(request.run)
        if open_run is not None and not open_run.set_up:  # sent again after an outage
            return self._set_up(request, open_run)
        if open_run is not None:  # its job never reported: the run must not stay open
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
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
        run = self._client.create_run(self.experiment_id, run_name=request.name, tags=tags)
        artifacts = get_artifact_repository(run.info.artifact_uri,
                                            tracking_uri=self._client.tracking_uri)  # fmt: skip
        self.runs[request.run] = open_run = _OpenRun(run.info.run_id, artifacts=artifacts)
        return self._set_up(request, open_run)

    def _set_up(self, request: StartRun, open_run: _OpenRun) -> Started:
        """Log a new run's params, config and dataset. An outage leaves it open, to be set up
        when the request comes again; another error ends it FAILED."""
        run_id = open_run.run_id
        try:
            if request.system_metrics and open_run.monitor is None:
                open_run.monitor = self._sampler(run_id)
            params = [Param(key, value[:6000]) for key, value in request.params.items()]
            self._client.log_batch(run_id, params=params)
            self._log_config(open_run, request.config)
            if request.dataset is not None:
                self._log_dataset(run_id, request.dataset)
        except BaseException as error:
            if not (isinstance(error, Exception) and is_outage(error)):
                self._end(request.run, FAILED, {Tag.OUTCOME: Outcome.ERROR,
                                                Tag.ERROR: describe_error(error)})  # fmt: skip
            raise
        open_run.set_up = True
        return Started(request.run, run_id, self.experiment_id, self.parent_run_id)

    def _files(self, open_run: _OpenRun) -> ArtifactRepository:
        """The run's ArtifactRepository, made from the location that creating the run returned
        (`_start`): `MlflowClient.log_artifact` and `log_dict` would read the whole run back
        from the store first (to find that location), once a run, and a sweep creates
        hundreds (docs/performance.md §8). A run this writer did not create (sync) is asked."""
        if open_run.artifacts is None:
            client = self._client
            uri = client.get_run(open_run.run_id).info.artifact_uri
            open_run.artifacts = get_artifact_repository(uri, tracking_uri=client.tracking_uri)
        return open_run.artifacts

    def _log_config(self, open_run: _OpenRun, config: Mapping[str, Any]) -> None:
        """The job's config as the run's config.yaml, in the config's own order."""
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "config.yaml"
            path.write_text(yaml.dump(dict(config), Dumper=yaml.CSafeDumper, sort_keys=False,
                                      default_flow_style=False, indent=2))  # fmt: skip
            self._files(open_run).log_artifact(str(path))

    def _log_dataset(self, run_id: str, info: DatasetInfo) -> None:
        log_dataset(self._client, run_id, info)

    def _store(self, request: Epochs) -> Stored:
        """Store each run's new epochs in one call (MLflow's client splits it at its batch
        limit). A run's epochs may come in several parts (a row where its sweep's objective was
        scored has more metrics than its neighbours: Tracker.report), and each call costs the
        store a transaction, which in a pruned search costs more than its points. A run's last
        stored step moves only once its call succeeded: sent again, the rest is stored."""
        points: dict[str, list[Metric]] = {}
        last: dict[str, int] = {}
        stored = 0
        for batch in request.batches:
            after = last.get(batch.run, self._run(batch.run).last_step)
            rows = [row for row in batch.rows if row[0] > after]
            if not rows:
                continue
            points.setdefault(batch.run, []).extend(
                Metric(name, value, timestamp, step)
                for step, timestamp, values in rows
                for name, value in zip(batch.names, values, strict=True)
            )
            last[batch.run], stored = rows[-1][0], stored + len(rows)
        for key, metrics in points.items():
            run = self.runs[key]
            self._client.log_batch(run.run_id, metrics=metrics)
            run.last_step = last[key]
        return Stored(stored)

    def _run(self, key: str) -> _OpenRun:
        if key not in self.runs:
            raise RuntimeError(f"no run {key!r} is open")
        return self.runs[key]

    def _finish(self, request: FinishRun) -> Finished:
        """Log a run's files and model, then its outcome (its scores, the model's too, with its
        tags, in one call), and end it. An outage leaves it open (sent again, it logs what it
        has not: the model once), another error ends it FAILED."""
        open_run = self._run(request.run)
        run_id = open_run.run_id
        try:
            files = [(file.path, file.directory) for file in request.files]
            if request.report is not None:
                report = request.report
                files += [(path, None) for path in report.run()]
            for path, directory in files:
                if Path(path).is_file():
                    self._files(open_run).log_artifact(path, directory)
            if request.model is not None and open_run.model_id is None:
                open_run.model_id = model.log_model(self._client, self.experiment_id, run_id,
                                                    request.model)  # fmt: skip
            now = int(time.time() * 1000)
            metrics = [Metric(key, value, now, 0, model_id=open_run.model_id)
                       for key, value in request.metrics.items()]  # fmt: skip
            tags = run_tags({Tag.OUTCOME: request.outcome, **request.tags})
            self._client.log_batch(run_id, metrics=metrics, tags=tags)
        except BaseException as error:
            if isinstance(error, Exception) and is_outage(error):
                raise
            self.failure = self.failure or f"could not log a job's outcome: {describe_error(error)}"
            self._end(request.run, FAILED, {Tag.OUTCOME: Outcome.ERROR,
                                            Tag.ERROR: describe_error(error)})  # fmt: skip
            raise
        self._end(request.run, request.outcome.status, {})
        return Finished(run_id)

    def _close(self, status: str | None, reason: str = "the job never finished") -> Closed:
        """End what is still open, each run KILLED, then the sweep's parent. Sent again after
        an outage, it ends what it had not."""
        for key in list(self.runs):
            try:
                self._end(key, KILLED, {Tag.OUTCOME: Outcome.INTERRUPTED, Tag.FAILURE: reason})
            except Exception as error:
                if is_outage(error):
                    raise
                log.exception("could not end run %s", self.runs[key].run_id)
                self.failure = self.failure or f"could not end a run: {describe_error(error)}"
                del self.runs[key]
        summary = None
        sweep = self._parent
        if sweep is not None and self.parent_run_id is not None:
            if self.failure is not None:
                status = FAILED
            # a child still RUNNING has vanished, unless its job may outlive this launcher
            reap = status is None or sweep.jobs != "scheduler"
            summary = parent.close(self._client, self.experiment_id, self.parent_run_id, status,
                                   reap, sweep)  # fmt: skip
            self.parent_run_id = None
        return Closed(summary, self.failure)

    def _end(self, key: str, status: str, tags: Mapping[str, str]) -> None:
        """End an open run; it stays open (to be ended when asked again) if the store is out."""
        run = self.runs.get(key)
        if run is None:
            return
        if run.monitor is not None:  # its last samples are stored before the run ends
            run.monitor.finish()
            run.monitor = None
        try:
            if tags:
                self._client.log_batch(run.run_id, tags=run_tags(tags))
        except Exception as error:  # the status matters more than these tags
            if is_outage(error):
                raise
            log.warning("could not tag run %s", run.run_id, exc_info=True)
        self._client.set_terminated(run.run_id, status)
        del self.runs[key]
