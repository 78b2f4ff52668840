"""Opening an MLflow store: the client, the experiment, and the lock a new SQLite store needs."""

from __future__ import annotations

import contextlib
import logging
import os

from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from linreg_exp.errors import TrackingError
from linreg_exp.tracking.uris import mask_uri, sqlite_path

# MLflow's UI may open an experiment by its kind (model training, not GenAI); 3.17.2's UI goes by
# its own GenAI / Model training switch instead (README: The MLflow UI).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}

# Fail fast on an unreachable server instead of MLflow's default of minutes of retries; the
# user's own MLFLOW_HTTP_REQUEST_* settings win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def open_store(uri: str, experiment_name: str) -> tuple[MlflowClient, str]:
    """Open (creating if new) the store and the experiment; return a client and the id.

    The experiment is looked up and created by id-returning client calls, never
    `set_experiment`, which can drop runs of concurrent processes into `Default`.
    """
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:  # MLflow's import set INFO: migration chatter
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
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


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the store is unreachable or failing for now (the server is down,
    restarting, or cannot reach its database), rather than that a request is wrong."""
    import requests
    from sqlalchemy.exc import OperationalError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.RequestException | OperationalError | ConnectionError):
            return True
        if isinstance(seen, MlflowException) and int(seen.get_http_status_code()) >= 500:  # type: ignore[no-untyped-call]
            return "API request to" in str(seen) or seen.error_code in (
                "INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")  # fmt: skip
        seen = seen.__cause__ or seen.__context__
    return False


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
