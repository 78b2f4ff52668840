"""A run's trained model as an MLflow model: the linear model (fitted_line.py) as a pyfunc with a
signature that names its columns (one per feature), an input example and explicit pip
requirements, logged as the run's `model`.

The signature's columns are of MLflow's type Any, not double, because MLflow's schema
enforcement runs before `predict` and, for a double column, refuses two inputs users send: a
DataFrame of integers (int64 is not a "safe" conversion to double, mlflow/models/utils.py
`_enforce_mlflow_datatype`), and a one-feature model's 2-D `{"inputs": [[1.0], [-4.0]]}`, which
reaches it as one column of one-element rows. `predict` checks the values itself instead:
numbers only. The names are still enforced by MLflow: a missing column is refused, extra ones
are dropped.

It is created with MlflowClient's logged-model calls rather than `mlflow.pyfunc.log_model`, which
first reads back the whole history of every metric of the run (to copy one step's values onto
the model): a run's epochs are that history, and there may be millions of them. So
`runs:/<run_id>/model` loads it, `mlflow models serve` serves it, and the UI lists it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema
from mlflow.utils import requirements_utils

from linreg_exp.tracking.messages import LinearModelSpec

NAME = "model"
CODE = Path(__file__).with_name("fitted_line.py")
REQUIRED = ("mlflow", "numpy", "pandas")  # what fitted_line.py imports, each its own module


@functools.cache
def requirements() -> list[str]:
    """What loading the model needs, pinned to what logged it (no inference: it takes seconds).
    Read once a process: a writer logs a model a run, and each lookup reads the distribution's
    metadata from disk."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIRED]


@contextlib.contextmanager
def requirements_checked_by_name() -> Iterator[None]:
    """Let `save_model` check our requirements against the environment without a scan of it.

    `save_model` warns when the environment does not satisfy the requirements it is given, and
    to find each one's module it first maps every installed distribution to its modules
    (`importlib.metadata.packages_distributions()`, about 0.4 s, on every run's path:
    docs/performance.md). Ours were read from this environment a moment before, and each is its
    own module, so MLflow is handed exactly that map for the call, and its own lazy map is left
    unbuilt afterwards, as it was. Only when no map was built yet (another caller's full map
    is used as it is).
    """
    if requirements_utils._MODULES_TO_PACKAGES is not None:
        yield
        return
    requirements_utils._MODULES_TO_PACKAGES = {name: [name] for name in REQUIRED}  # type: ignore[assignment]
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = None
        requirements_utils._PACKAGES_TO_MODULES = None


def signature(features: list[str]) -> ModelSignature:
    """A column per feature, by name (why of type Any: the module's docstring); one prediction
    (a double) per row."""
    columns = [ColSpec(AnyType(), name) for name in features]  # type: ignore[no-untyped-call]
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("double")]))  # type: ignore[arg-type]


def weight_key(feature: str, count: int) -> str:
    """A weight's name, as the run's metrics name it: `weight` alone for one feature."""
    return "weight" if count == 1 else f"weight.{feature}"


def input_example(features: list[str]) -> pd.DataFrame:
    return pd.DataFrame({name: [-1.0, 0.0, 1.0] for name in features})


def log_model(client: MlflowClient, experiment_id: str, run_id: str, spec: LinearModelSpec) -> str:
    """Log the linear model `spec` as the run's model; returns the model's id, for the metrics
    that score it (logged with `model_id`, they are the run's and the model's at once).

    Its files go to the artifact location that creating the model returned, through MLflow's
    artifact repository for it: `MlflowClient.log_model_artifacts` would first read the model
    back from the store to find that location (a sweep logs a model a run)."""
    features = list(spec["features"])
    weights = dict(zip(features, spec["weights"], strict=True))
    params = {weight_key(name, len(features)): repr(w) for name, w in weights.items()}
    model = client.create_logged_model(
        experiment_id, name=NAME, source_run_id=run_id, model_type="linear regression",
        params={**params, "bias": repr(spec["bias"])},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / NAME
        with requirements_checked_by_name():
            mlflow.pyfunc.save_model(
                path,
                python_model=str(CODE),
                model_config=dict(spec),
                signature=signature(features),
                input_example=input_example(features),
                pip_requirements=requirements(),
                mlflow_model=Model(artifact_path=model.artifact_location, run_id=run_id,
                                   model_uuid=model.model_id, model_id=model.model_id),
            )  # fmt: skip
        files = get_artifact_repository(model.artifact_location, tracking_uri=client.tracking_uri)
        files.log_artifacts(str(path))  # type: ignore[no-untyped-call]
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return str(model.model_id)
