"""MLflow at the edge: where runs go, how a run is opened and closed, how a History is logged.

Everything that talks to MLflow lives here, in recorder.py (a run) and in parent_run.py (a sweep).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from linreg_exp.errors import TrackingError
from linreg_exp.history import History
from linreg_exp.uris import mask_uri, sqlite_path

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow sends a log_batch call in requests of at most this many

# Fail fast on an unreachable server instead of MLflow's default of minutes of retries.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


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


def final_metrics(values: Mapping[str, float]) -> list[Metric]:
    """One-off metrics (final loss, closed-form optimum, ...) at step 0, as log_metrics does."""
    now = int(time.time() * 1000)
    return [Metric(key, value, now, 0) for key, value in values.items()]


def log_metrics_batched(
    client: MlflowClient,
    run_id: str,
    metrics: list[Metric],
    tags: Mapping[str, str] | None = None,
) -> None:
    """All metrics (and tags) in one log_batch call, which MLflow sends in requests of at most
    1000 entities: one call per value costs ~50x more (far more over HTTP)."""
    run_tags = [RunTag(key, value[:5000]) for key, value in (tags or {}).items()]
    client.log_batch(run_id, metrics=metrics, tags=run_tags)
