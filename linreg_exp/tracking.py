"""MLflow at the edge: where runs go, how a run is opened and closed, how a History is logged.

Everything that talks to MLflow lives here (and in sweep.py for the parent run of a multirun).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from linreg_exp.errors import TrackingError
from linreg_exp.train import History

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
DEFAULT_STORE_NAME = "mlflow.db"
TAG_PREFIX = "linreg."

# Fail fast on an unreachable server instead of MLflow's default of minutes of retries.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def resolve_tracking_uri(configured: str | None, launch_dir: Path) -> str:
    """Config first, then $MLFLOW_TRACKING_URI, else an absolute sqlite file in the launch dir."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(launch_dir / DEFAULT_STORE_NAME).resolve()}"


def mask_uri(uri: str) -> str:
    """Hide a password in a URI (postgresql://user:secret@host/db -> user:***@host)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def mask_override(override: str) -> str:
    """`mlflow.tracking_uri=postgresql://u:secret@h/db` -> the same with the password hidden."""
    key, sep, value = override.partition("=")
    return f"{key}{sep}{mask_uri(value)}" if sep else override


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def ui_command(uri: str, port: int = 5000) -> str:
    """The shell command that serves this store's UI (None needed for a tracking server)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {mask_uri(uri)} --host 127.0.0.1 --port {port}"


def ui_base_url(uri: str, port: int = 5000) -> str:
    return (
        uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    )


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base_url(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def open_experiment(uri: str, experiment_name: str) -> str:
    """Open (creating if new) the store and the experiment; return the experiment id.

    Call it once in the launching process before parallel jobs: a new store migrates its schema
    on first open, and concurrent first opens race. The experiment is looked up and created by
    id-returning client calls, never `set_experiment`, which can drop runs into `Default`.
    """
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    db_file = sqlite_path(uri)
    if db_file is not None:
        try:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise TrackingError(
                f"mlflow.tracking_uri={uri}: cannot create {db_file.parent}: {error.strerror}"
            ) from error
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            artifacts = None if db_file is None else (db_file.parent / "mlruns").as_uri()
            try:
                return str(client.create_experiment(experiment_name, artifacts))
            except MlflowException as error:
                if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:  # pragma: no cover - deleted between the two calls
            raise TrackingError(f"experiment {experiment_name!r} vanished while opening it")
        if experiment.lifecycle_stage != "active":
            raise TrackingError(
                f"mlflow.experiment_name={experiment_name}: the experiment is deleted in "
                f"{mask_uri(uri)}; restore it (mlflow experiments restore) or choose another name"
            )
        return str(experiment.experiment_id)
    except TrackingError:
        raise
    except Exception as error:
        raise TrackingError(
            f"mlflow.tracking_uri={mask_uri(uri)}: cannot open the tracking store: "
            f"{_one_line(error)}"
        ) from error


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


def history_metrics(history: History) -> list[Metric]:
    """Per-epoch loss, weight and bias as MLflow metrics with step = epoch."""
    return [
        Metric(key, value, timestamp, step)
        for step, timestamp in enumerate(history.timestamp_ms)
        for key, value in (
            ("loss", history.loss[step]),
            ("weight", history.weight[step]),
            ("bias", history.bias[step]),
        )
    ]


def log_metrics_batched(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    """Send metrics in as few requests as MLflow allows (one call per value costs ~50x more)."""
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])


@dataclass
class TrackedRun:
    """The open run; set `failure` to end it FAILED without raising (e.g. divergence)."""

    run_id: str
    experiment_id: str
    failure: str | None = None


@contextmanager
def tracked_run(
    uri: str,
    experiment_id: str,
    run_name: str | None,
    parent_run_id: str | None,
    tags: Mapping[str, str],
) -> Iterator[TrackedRun]:
    """Open an MLflow run (nested under `parent_run_id`) and guarantee its final status.

    FINISHED on success, FAILED when `failure` was set or on any error (the error goes into the
    tag `linreg.error`), KILLED on Ctrl-C / SIGTERM. Never left RUNNING.
    """
    mlflow.set_tracking_uri(uri)
    active = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags=dict(tags),
    )
    run = TrackedRun(active.info.run_id, experiment_id)
    status = RunStatus.FAILED
    try:
        yield run
        if run.failure is None:
            status = RunStatus.FINISHED
        else:
            _set_tag_quietly(run.run_id, f"{TAG_PREFIX}failure", run.failure)
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        _set_tag_quietly(run.run_id, f"{TAG_PREFIX}outcome", "interrupted")
        raise
    except BaseException as error:
        _set_tag_quietly(run.run_id, f"{TAG_PREFIX}error", f"{type(error).__name__}: {error}")
        _set_tag_quietly(run.run_id, f"{TAG_PREFIX}outcome", "error")
        raise
    finally:
        mlflow.end_run(RunStatus.to_string(status))


def _set_tag_quietly(run_id: str, key: str, value: str) -> None:
    try:
        MlflowClient().set_tag(run_id, key, value[:5000])
    except Exception:  # the run's status matters more than this tag
        log.warning("could not record %s on run %s", key, run_id, exc_info=True)
