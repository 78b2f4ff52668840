"""MLflow at the edge: a Session answers the tracking protocol with MlflowClient calls.

A Session belongs to one Tracker and answers its requests in order: open the store, create
runs, log batches of epochs, end runs with their status, close the sweep's parent. It runs in
the helper process (service.py) or in the job's own process; either way it (with summary.py,
for the parent's end) is the only code that writes to MLflow, and it ends every run it opens.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from linreg_exp.errors import ConfigError, LinregError, TrackingError
from linreg_exp.history import History
from linreg_exp.tracking import summary
from linreg_exp.tracking.messages import (
    FAILED,
    KILLED,
    TAG_CONFIG_HASH,
    TAG_ERROR,
    TAG_FAILURE,
    TAG_OUTCOME,
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
    Pictures,
    Reply,
    Request,
    Started,
    StartRun,
    Stored,
    describe_error,
)
from linreg_exp.tracking.uris import mask_uri, sqlite_path

log = logging.getLogger(__name__)

JOB_IDENTITY = (TAG_CONFIG_HASH, "linreg.job_num")  # a resumed sweep keeps a FINISHED job by these
SOURCE_NAME = "linreg_exp"  # the UI's Source column: the entry point, not the process logging
# The experiment kind MLflow 3's UI may open an experiment by (model training, not GenAI);
# 3.17.2's UI goes by its own GenAI / Model training switch instead (README: The MLflow UI).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}

# Fail fast on an unreachable server instead of MLflow's default of minutes of retries.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class Session:
    """The MLflow side of one Tracker (see messages.py for the protocol)."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.request: Open | None = None
        self.experiment_id = ""
        self.parent_run_id: str | None = None
        self.run_id: str | None = None  # the run that is open
        self.last_step = -1  # the open run's last epoch stored
        self.failure: str | None = None  # the first outcome that could not be logged
        self.resumed = False

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
                rows = [row for row in request.rows if row[0] > self.last_step]
                self._client.log_batch(self._open_run, metrics=epoch_metrics(rows))
                self.last_step = rows[-1][0] if rows else self.last_step
                return Stored(len(rows))
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
    def _open_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("no run is open")
        return self.run_id

    def _open(self, request: Open) -> Opened:
        self.client, self.experiment_id = open_store(request.tracking_uri, request.experiment_name)
        self.request = request
        parent = request.parent
        self.parent_run_id = request.parent_run_id
        if parent is not None:
            self.parent_run_id = self._reopen_parent(parent)
            if self.parent_run_id is None and parent.jobs != "here":
                self._create_parent()
        self.resumed = bool(self.parent_run_id and self._children("FINISHED"))
        if request.plots:
            import linreg_exp.plots  # noqa: F401  (matplotlib, while the job imports torch)
        return Opened(self.experiment_id, self.parent_run_id, self.resumed)

    def _children(self, status: str, tags: Mapping[str, str] | None = None) -> list[Run]:
        """A child of the parent with this status (and these tags), if any."""
        query = f"tags.mlflow.parentRunId = '{self.parent_run_id}'"
        query += f" and attributes.status = '{status}'"
        query += "".join(f" and tags.`{key}` = '{value}'" for key, value in (tags or {}).items())
        return list(self._client.search_runs([self.experiment_id], query, max_results=1))

    def _reopen_parent(self, parent: Parent) -> str | None:
        """The parent an earlier run of this sweep left in the same sweep dir, RUNNING again."""
        sweep_dir = parent.tags.get("linreg.sweep_dir")
        query = f"tags.`linreg.kind` = 'sweep' and tags.`linreg.sweep_dir` = '{sweep_dir}'"
        earlier = self._client.search_runs([self.experiment_id], query, max_results=1)
        if not earlier:
            return None
        tags = earlier[0].data.tags
        if tags.get("linreg.overrides") != parent.tags.get("linreg.overrides"):
            raise ConfigError(
                f"hydra.sweep.dir={sweep_dir} holds another sweep ({tags.get('linreg.overrides')}"
                "): rerun it with those overrides to resume it, or choose a new hydra.sweep.dir"
            )
        if parent.tags.get("linreg.sweeper") == "OptunaSweeper":
            raise ConfigError(
                f"hydra.sweep.dir={sweep_dir} holds an Optuna search, which cannot be resumed "
                "(its study lived in the sweep's memory): choose a new hydra.sweep.dir"
            )
        self._client.update_run(earlier[0].info.run_id, status="RUNNING")
        return str(earlier[0].info.run_id)

    def _create_parent(self) -> str:
        assert self.request is not None and self.request.parent is not None
        parent = self.request.parent
        self.parent_run_id = self._client.create_run(
            self.experiment_id,
            run_name=parent.run_name,
            tags={**default_tags(), **parent.tags},
        ).info.run_id
        return self.parent_run_id

    def _start(self, request: StartRun) -> Started:
        if self.run_id is not None:  # a job that never reported: its run must not stay open
            self._end(KILLED, {TAG_OUTCOME: "interrupted", TAG_FAILURE: "never finished"})
        job = {key: request.tags[key] for key in JOB_IDENTITY if key in request.tags}
        if self.resumed and len(job) == len(JOB_IDENTITY):
            for kept in self._children("FINISHED", job):
                loss = kept.data.metrics.get("final_loss", math.inf)
                return Started(kept.info.run_id, self.experiment_id, self.parent_run_id, loss)
        if self._owns_parent and self.parent_run_id is None:
            self._create_parent()
        tags = {**default_tags(), **request.tags}
        if self.parent_run_id is not None:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self._client.create_run(self.experiment_id, run_name=request.run_name, tags=tags)
        self.run_id, self.last_step = run.info.run_id, -1
        try:
            params = [Param(k, str(v)[:6000]) for k, v in flatten(request.config).items()]
            self._client.log_batch(self.run_id, params=params)
            self._client.log_dict(self.run_id, request.config, "config.yaml")
            if request.dataset is not None:
                self._client.log_inputs(self.run_id, [dataset_input(request.dataset)])
        except BaseException as error:
            self._end(FAILED, {TAG_OUTCOME: "error", TAG_ERROR: describe_error(error)})
            raise
        return Started(self.run_id, self.experiment_id, self.parent_run_id)

    def _finish(self, request: FinishRun) -> Finished:
        run_id = self._open_run
        status, extra_tags = request.status, {}
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, 0) for k, v in request.metrics.items()]
            self._client.log_batch(run_id, metrics=metrics, tags=run_tags(request.tags))
            if request.pictures is not None and request.history.epochs_done > 0:
                for path in draw_pictures(request.history, request.pictures):
                    self._client.log_artifact(run_id, str(path))
            for log_file in request.logs:
                if Path(log_file).is_file():
                    self._client.log_artifact(run_id, log_file, "logs")
        except BaseException as error:
            status = FAILED
            extra_tags = {TAG_OUTCOME: "error", TAG_ERROR: describe_error(error)}
            self.failure = self.failure or f"could not log a job's outcome: {extra_tags[TAG_ERROR]}"
            raise
        finally:
            self._end(status, extra_tags)
        return Finished(run_id)

    def _close(self, status: str | None, reason: str = "the job never finished") -> Closed:
        if self.run_id is not None:
            self._end(KILLED, {TAG_OUTCOME: "interrupted", TAG_FAILURE: reason})
        text = None
        if self._owns_parent and self.parent_run_id is not None:
            if self.failure is not None:
                status = FAILED
            assert self.request is not None and self.request.parent is not None
            # a child still RUNNING has vanished, unless its job may outlive this launcher
            reap = status is None or self.request.parent.jobs != "scheduler"
            parent_id, self.parent_run_id = self.parent_run_id, None
            text = summary.close_parent(self._client, self.experiment_id, parent_id, status, reap)
        return Closed(text, self.failure)

    @property
    def _owns_parent(self) -> bool:
        """A sweep's parent is closed by the tracker that opened it, not by its jobs'."""
        return self.request is not None and self.request.parent is not None

    def close_all(self, reason: str) -> None:
        """The job is gone without a word (killed outright): end what it left open, KILLED."""
        with contextlib.suppress(Exception):
            self._close(KILLED, reason)

    def _end(self, status: str, tags: Mapping[str, str]) -> None:
        run_id, self.run_id = self.run_id, None
        if run_id is None:
            return
        try:
            if tags:
                self._client.log_batch(run_id, tags=run_tags(tags))
        except Exception:  # the status matters more than these tags
            log.warning("could not tag run %s", run_id, exc_info=True)
        finally:
            self._client.set_terminated(run_id, status)


@functools.cache
def default_tags() -> dict[str, str]:
    """What MLflow's fluent API would add (user, source type), named after us, and the git
    state of linreg_exp's source: its commit and whether the work tree had changes, so the
    run's reproduce command (linreg.command) is not taken on trust."""
    tags = {**resolve_tags(), "mlflow.source.name": SOURCE_NAME}
    source = Path(__file__).resolve().parents[1]
    try:
        import git

        repo = git.Repo(source, search_parent_directories=True)
        tags["mlflow.source.git.commit"] = repo.head.commit.hexsha
        tags["linreg.git_dirty"] = str(repo.is_dirty(untracked_files=True)).lower()
    except Exception:  # not a git checkout (an installed wheel), or no git at all
        tags.pop("mlflow.source.git.commit", None)
    return tags


def dataset_input(info: DatasetInfo) -> DatasetInput:
    """The data as MLflow's UI shows it (the Dataset column): generated by code from a config."""
    source = CodeDatasetSource(info.source).to_json()
    dataset = DatasetEntity(info.name, info.digest, source_type="code", source=source)
    return DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])


def run_tags(tags: Mapping[str, str]) -> list[RunTag]:
    return [RunTag(key, value[:5000]) for key, value in tags.items()]


def epoch_metrics(rows: list[tuple[int, int, float, float, float]]) -> list[Metric]:
    """Epochs as MLflow metrics with step = epoch."""
    return [
        Metric(key, value, timestamp, step)
        for step, timestamp, loss, weight, bias in rows
        for key, value in (("loss", loss), ("weight", weight), ("bias", bias))
    ]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optimizer': {'lr': 0.01}} -> {'optimizer.lr': 0.01}, the shape of MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def draw_pictures(history: History, pictures: Pictures) -> list[Path]:
    """loss_curve.png, fit.png and training.gif in the job's output dir."""
    from linreg_exp import plots

    trajectory = history.trajectory()
    lines = plots.FitLines(pictures.true, history.final, pictures.optimum)
    gif = pictures.out_dir / "training.gif"
    gif.write_bytes(plots.training_gif(pictures.x, pictures.y, trajectory, pictures.frames))
    return [
        plots.save_figure(
            plots.loss_curve(trajectory, pictures.optimum_loss),
            pictures.out_dir / "loss_curve.png",
        ),
        plots.save_figure(
            plots.fit_figure(pictures.x, pictures.y, lines), pictures.out_dir / "fit.png"
        ),
        gif,
    ]


def _first_open_lock(uri: str) -> contextlib.AbstractContextManager[object]:
    """A lock beside a SQLite store, held while opening it: MLflow migrates a new store's
    schema on first open, and processes that do that at once lose runs or break the file."""
    db_file = sqlite_path(uri)
    if db_file is None:
        return contextlib.nullcontext()
    try:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TrackingError(
            f"mlflow.tracking_uri={uri}: cannot create {db_file.parent}: {error.strerror}"
        ) from error
    return FileLock(db_file.with_name(f".{db_file.name}.lock"))


def open_store(uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """Open (creating if new) the store and the experiment; return a client and the id.

    The experiment is looked up and created by id-returning client calls, never
    `set_experiment`, which can drop runs of concurrent processes into `Default`.
    """
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    try:
        with _first_open_lock(uri):
            client = MlflowClient(uri)
            return client, _experiment_id(client, uri, experiment_name)
    except TrackingError:
        raise
    except Exception as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        raise TrackingError(
            f"mlflow.tracking_uri={mask_uri(uri)}: cannot open the tracking store: {lines[0]}"
        ) from error


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        db_file = sqlite_path(uri)
        artifacts = None if db_file is None else (db_file.parent / "mlruns").as_uri()
        try:
            return str(client.create_experiment(name, artifacts, tags=EXPERIMENT_TAGS))
        except MlflowException as error:  # another process created it meanwhile
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment is None:  # pragma: no cover - deleted between the two calls
        raise TrackingError(f"experiment {name!r} vanished while opening it")
    if experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"mlflow.experiment_name={name}: the experiment is deleted in {mask_uri(uri)}; "
            "restore it (mlflow experiments restore) or choose another name"
        )
    for key, value in EXPERIMENT_TAGS.items():
        if key not in experiment.tags:  # an experiment made before this tag, or by hand
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return str(experiment.experiment_id)
