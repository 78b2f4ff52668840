"""A run's trained model as an MLflow model: the fitted line (fitted_line.py) as a pyfunc with a
signature (from its type hints), an input example and explicit pip requirements, logged as the
run's `model`.

It is created with MlflowClient's logged-model calls rather than `mlflow.pyfunc.log_model`, which
first reads back the whole history of every metric of the run (to copy one step's values onto
the model): a run's epochs are that history, and there may be millions of them. So
`runs:/<run_id>/model` loads it, `mlflow models serve` serves it, and the UI lists it.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import time
from pathlib import Path

import mlflow.pyfunc
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.models import Model
from mlflow.tracking import MlflowClient

NAME = "model"
CODE = Path(__file__).with_name("fitted_line.py")
INPUT_EXAMPLE = [-10.0, 0.0, 10.0]


def requirements() -> list[str]:
    """What loading the model needs, pinned to what logged it (no inference: it takes seconds)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in ("mlflow", "numpy", "pandas")]


def log_model(
    client: MlflowClient, experiment_id: str, run_id: str, weights: dict[str, float],
    metrics: dict[str, float],
) -> str:  # fmt: skip
    """Log the fitted line with these weights as the run's model; its metrics (the held-out
    scores, say) are logged for the model too. Returns the model's id."""
    model = client.create_logged_model(
        experiment_id, name=NAME, source_run_id=run_id, model_type="linear regression",
        params={key: repr(value) for key, value in weights.items()},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / NAME
        mlflow.pyfunc.save_model(
            path,
            python_model=str(CODE),
            model_config=weights,
            input_example=INPUT_EXAMPLE,
            pip_requirements=requirements(),
            mlflow_model=Model(artifact_path=model.artifact_location, run_id=run_id,
                               model_uuid=model.model_id, model_id=model.model_id),
        )  # fmt: skip
        client.log_model_artifacts(model.model_id, str(path))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    if metrics:
        now = int(time.time() * 1000)
        client.log_batch(run_id, [Metric(key, value, now, 0, model_id=model.model_id)
                                  for key, value in metrics.items()])  # fmt: skip
    return str(model.model_id)
