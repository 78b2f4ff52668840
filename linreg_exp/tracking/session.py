"""MLflow at the edge: a Session answers the tracking protocol with MlflowClient calls.

A Session belongs to one Tracker and answers its requests in order: open the store, create runs,
store their epochs, end them with their outcome's status, close the sweep's parent. It runs in
the helper process (helper_main.py) or in the job's own (InProcess); either way it is, with
parent.py for the sweep's parent, the only code that writes to MLflow, and it ends every run it
opens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

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
from linreg_exp.tracking.spool import Spool, is_offline, with_report_drawn
from linreg_exp.tracking.store import is_outage, open_store
from linreg_exp.tracking.tasks import run_task
from linreg_exp.tracking.uris import mask_uri
from linreg_exp.vocab import FAILED, KILLED, Outcome, Tag

log = logging.getLogger(__name__)

OUTAGE_LOG = "mlflow-outages.log"  # an outage's whole error, beside the spool
SAMPLER_LOG = "mlflow.system_metrics.system_metrics_monitor"


class _SamplerLostTheStore(logging.Filter):
    """MLflow's system-metrics sampler stops when the store does not answer, and says so: an
    outage is the Session's to say (two lines), and it starts the samplers again after."""

    SAYINGS = ("Failed to get mlflow run", "Failed to log system metrics",
               "Error terminating system metrics")  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.SAYINGS)


def say(line: str) -> None:
    """One line for the user, wherever this Session runs (the helper shares the console)."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class _OpenRun:
    """A run this session has created and not yet ended. What is already done for it is noted,
    so that a request sent again after an outage does not do it twice."""

    run_id: str
    last_step: int = -1  # the last epoch stored
    monitor: SystemMetricsMonitor | None = None  # MLflow's sampler of the machine, if asked
    set_up: bool = False  # its params, config and dataset are logged
    model_logged: bool = False
    outages: list[float] = dataclasses.field(default_factory=list)  # seconds, each it lived through


class Session:
    """The MLflow side of one Tracker (see messages.py for the protocol).

    A store that stops answering mid-run is ridden out: the request waits (and with it, the
    job: its queue is full) and is sent again, until the store answers or `outage_timeout`
    passes, or `stop_waiting()` says the job is stopping or gone. From then on, requests go to
    the spool (spool.py), as they do from the start for an offline run.
    """

    def __init__(self, stop_waiting: Callable[[], bool] = lambda: False) -> None:
        self.stop_waiting = stop_waiting
        self.spool: Spool | None = None  # spooling: every request goes there
        self.outages: list[float] = []  # how long each outage lasted (runs: their own, too)
        self.client: MlflowClient | None = None
        self.request: Open | None = None
        self.experiment_id = ""
        self.parent_run_id: str | None = None
        self.resumed = False
        self.runs: dict[str, _OpenRun] = {}  # by the tracker's key
        self.failure: str | None = None  # the first outcome that could not be logged
        self.closed = False  # Close was answered: nothing is left to end
        sampler_log = logging.getLogger(SAMPLER_LOG)
        if not any(isinstance(f, _SamplerLostTheStore) for f in sampler_log.filters):
            sampler_log.addFilter(_SamplerLostTheStore())

    def handle(self, request: Request) -> Reply:
        """Answer one request; an error is a Failed reply, and the session goes on."""
        try:
            if self.spool is not None:
                return self._to_spool(request)
            try:
                return self._dispatch(request)
            except Exception as error:
                if not is_outage(error) or isinstance(request, Open) or not self._can_spool:
                    raise
                return self._ride_out(request, error)
        except LinregError as error:
            return Failed(str(error), user_error=True)
        except Exception as error:
            log.exception("tracking failed on %s", type(request).__name__)
            return Failed(describe_error(error), user_error=False)

    def _ride_out(self, request: Request, error: Exception) -> Reply:
        """Wait for a store that stopped answering and send `request` again; spool it after
        the outage timeout, or at once if the job is stopping or gone."""
        assert self.request is not None
        began, delay, uri = time.monotonic(), 1.0, mask_uri(self.request.tracking_uri)
        timeout = self.request.outage_timeout
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        say(f"linreg_exp: the tracking store {uri} does not answer ({first_line[:200]}); "
            f"the run waits for it, up to {timeout:g} s")  # fmt: skip
        self._log_outage(error)
        while True:
            if self.stop_waiting() or time.monotonic() - began >= timeout:
                self._note_outage(time.monotonic() - began)
                return self._start_spooling(request, f"after {time.monotonic() - began:.0f} s")
            self._pause(min(delay, max(0.0, timeout - (time.monotonic() - began))))
            delay = min(2 * delay, 15.0)
            try:
                reply = self._dispatch(request)
            except Exception as again:
                if not is_outage(again):
                    raise
                continue
            lasted = time.monotonic() - began
            self._note_outage(lasted)
            self._restart_samplers()
            late = sum(len(b.rows) for b in request.batches) if isinstance(request, Epochs) else 0
            say(f"linreg_exp: the tracking store {uri} is back after {lasted:.0f} s; "
                f"{late} epochs delivered late")  # fmt: skip
            return reply

    def _restart_samplers(self) -> None:
        """The store is back: each run's system-metrics sampler, which stopped when the store
        did not answer, goes on from its last step."""
        for run in self.runs.values():
            if run.monitor is not None:
                run.monitor.finish()
                run.monitor = self._sampler(run.run_id, resume=True)

    def _sampler(self, run_id: str, resume: bool = False) -> SystemMetricsMonitor:
        """MLflow's sampler of the machine for a run, started (from its last step: `resume`)."""
        sampler = SystemMetricsMonitor(run_id, tracking_uri=self._uri, resume_logging=resume)
        sampler.start()
        return sampler

    def _pause(self, seconds: float) -> None:
        """Sleep between tries, but not past the job saying it stops."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and not self.stop_waiting():
            time.sleep(min(0.25, max(0.0, until - time.monotonic())))

    def _note_outage(self, lasted: float) -> None:
        """An outage, on the runs that were open through it (their linreg.outages)."""
        self.outages.append(lasted)
        for run in self.runs.values():
            run.outages.append(lasted)

    def _start_spooling(self, request: Request, why: str) -> Reply:
        """From now on every request goes to the spool, this one first."""
        assert self.request is not None and self.request.spool_dir is not None
        self.spool = Spool(self.request.spool_dir)
        runs = self.runs.items()
        self.spool.begin(self.request, {k: run.run_id for k, run in runs}, self.parent_run_id,
                         {k: run.last_step for k, run in runs})  # fmt: skip
        self.spool.experiment_id = self.experiment_id or self.spool.experiment_id
        for run in self.runs.values():
            if run.monitor is not None:
                run.monitor.finish()
        say(
            f"linreg_exp: the tracking store did not come back ({why}): the runs are kept in "
            f"{self.spool.path}; deliver them with: linreg-exp sync {self.request.spool_dir}"
        )
        return self._to_spool(request)

    def _to_spool(self, request: Request) -> Reply:
        assert self.spool is not None
        if isinstance(request, FinishRun):
            request = self._with_outages(request)
            if request.report is not None:  # drawn now, where its data is: the files wait
                report = request.report
                request = with_report_drawn(request, run_task(report.function, report.argument))
            self.runs.pop(request.run, None)
        if isinstance(request, Close):
            self.runs.clear()
            self.closed = True
        return self.spool.append(request)

    def _with_outages(self, request: FinishRun) -> FinishRun:
        """Its run's outages in a tag; a run started while spooling had the last one's."""
        run = self.runs.get(request.run)
        outages = run.outages if run is not None else self.outages[-1:]
        if not outages:
            return request
        lasted = ", ".join(f"{seconds:.0f} s" for seconds in outages)
        return dataclasses.replace(request, tags={**request.tags, Tag.OUTAGES: lasted})

    def _log_outage(self, error: Exception) -> None:
        """The whole error, in the log file beside the spool (the console has one line)."""
        if self.request is None or self.request.spool_dir is None:
            return
        with contextlib.suppress(OSError):
            Path(self.request.spool_dir).mkdir(parents=True, exist_ok=True)
            with (Path(self.request.spool_dir) / OUTAGE_LOG).open("a") as out:
                out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} the tracking store does not "
                          f"answer: {describe_error(error)}\n")  # fmt: skip

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
                return self._close(request.status, request.reason)

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
        self.request, self.parent_run_id = request, request.parent_run_id
        if is_offline(request.tracking_uri):  # nothing is sent: it all goes to the spool
            if request.spool_dir is None:
                raise TrackingError("mlflow.tracking_uri=offline: no directory to spool runs in")
            self.spool = Spool(request.spool_dir)
            self.spool.begin(request, {}, request.parent_run_id)
            return Opened(self.spool.experiment_id, self.spool.parent_run_id)
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
        self.runs[request.run] = open_run = _OpenRun(run.info.run_id)
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
            self._client.log_dict(run_id, request.config, "config.yaml")
            if request.dataset is not None:
                self._log_dataset(run_id, request.dataset)
        except BaseException as error:
            if not (isinstance(error, Exception) and is_outage(error)):
                self._end(request.run, FAILED, {Tag.OUTCOME: Outcome.ERROR,
                                                Tag.ERROR: describe_error(error)})  # fmt: skip
            raise
        open_run.set_up = True
        return Started(request.run, run_id, self.experiment_id, self.parent_run_id)

    def _log_dataset(self, run_id: str, info: DatasetInfo) -> None:
        """The run's dataset input. Jobs of one sweep often share their data (the same seed), and
        two logging it at once race in MLflow's store, which looks a dataset up before inserting
        it: the loser hits the unique key, and its second try finds the dataset stored."""
        try:
            self._client.log_inputs(run_id, [dataset_input(info)])
        except MlflowException as error:
            if is_outage(error) or "unique" not in str(error).lower():
                raise
            self._client.log_inputs(run_id, [dataset_input(info)])

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
        """Log a run's outcome and end it. An outage leaves it open (sent again, it logs what
        it has not: the model once), another error ends it FAILED."""
        open_run = self._run(request.run)
        run_id = open_run.run_id
        request = self._with_outages(request)
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
            if request.model is not None and not open_run.model_logged:
                model.log_model(self._client, self.experiment_id, run_id, request.model,
                                request.metrics)  # fmt: skip
                open_run.model_logged = True
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
        self.closed = True
        return Closed(summary, self.failure)

    def adopt(self, key: str, run_id: str, last_step: int = -1) -> bool:
        """Take over a run the store has (sync: a spool's requests for it come next), if it is
        still RUNNING there; one that ended before (a sync stopped half-way) is left alone."""
        if self._client.get_run(run_id).info.status != "RUNNING":
            return False
        self.runs[key] = _OpenRun(run_id, last_step, set_up=True)
        return True

    def close_all(self, reason: str) -> None:
        """The job is gone without a word (killed outright): end what it left open, KILLED."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.handle(Close(KILLED, reason))

    @property
    def _can_spool(self) -> bool:
        return self.request is not None and self.request.spool_dir is not None

    @property
    def _uri(self) -> str:
        assert self.request is not None
        return self.request.tracking_uri

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


class InProcess:
    """A Session in this process (a Transport), answering on the tracker's worker thread."""

    def __init__(self) -> None:
        self.stopping = False  # a plain flag: set in a signal handler, where no lock is safe
        self.session = Session(stop_waiting=lambda: self.stopping)

    def stop_waiting(self) -> None:
        self.stopping = True

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
