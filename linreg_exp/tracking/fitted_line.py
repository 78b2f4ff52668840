"""A run's model for MLflow (models from code): a linear model, y = Σ weight_i · x_i + bias, over
named features, all three from the model's config ({"features", "weights", "bias"}: plain JSON,
so the spool can carry it). Where it is loaded it needs only MLflow (pandas, numpy): neither
torch nor linreg_exp.

Its columns are taken by name, never by position: a table with more columns than the features
predicts from the features (the rest is ignored), one without a feature is refused naming it.
MLflow's schema enforcement (the signature, model.py) runs first and hands `predict` a DataFrame
of the signature's columns; `predict` checks them again so that it is right when called on its
own, and it takes the shapes a one-feature model is sent as (`{"inputs": [[1.0], [-4.0]]}`
reaches it as one column of one-element rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel


class LinearModel(PythonModel):
    def load_context(self, context: Any) -> None:
        config = context.model_config
        self.features = [str(name) for name in config["features"]]
        self.weights = np.asarray(config["weights"], dtype=np.float64)
        self.bias = float(config["bias"])
        if len(self.weights) != len(self.features):
            raise ValueError(f"{len(self.features)} features but {len(self.weights)} weights")

    # MLflow 3 calls a predict that takes no context argument just so. The hint is a DataFrame
    # because that is what MLflow hands it after enforcing the signature; MLflow neither
    # validates against nor infers a signature from a DataFrame hint.
    def predict(  # type: ignore[override]
        self, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[float]:
        return [float(y) for y in self.columns(model_input) @ self.weights + self.bias]

    def columns(self, model_input: Any) -> np.ndarray:
        """The features' values, [rows, features] in float64, taken by name."""
        if isinstance(model_input, pd.DataFrame | Mapping):
            missing = [name for name in self.features if name not in model_input]
            if missing:
                raise _refused(
                    f"the input has no column {', '.join(map(repr, missing))}; "
                    f"the model takes the columns {self.features} (others are ignored)"
                )
            return np.column_stack([_numbers(name, model_input[name]) for name in self.features])
        if len(self.features) == 1:  # a one-feature model may be sent a bare list of x
            return _numbers(self.features[0], model_input).reshape(-1, 1)
        raise _refused(
            f"a {len(self.features)}-feature model takes a table with the columns "
            f"{self.features}, not a {type(model_input).__name__}"
        )


def _numbers(name: str, values: Any) -> np.ndarray:
    """One column as float64: integers and floats, not strings or booleans; a row of one number
    (how a 2-D request of a one-feature model arrives) counts as that number."""
    try:
        array = np.asarray(values.to_list() if isinstance(values, pd.Series) else values)
    except ValueError as error:  # ragged rows
        raise _refused(f"column {name!r} must hold one number a row: {error}") from None
    if array.dtype.kind not in "iuf":
        raise _refused(f"column {name!r} must hold numbers, got {array.dtype} values")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise _refused(f"column {name!r} must hold one number a row, got shape {array.shape}")
    return array.astype(np.float64)


def _refused(message: str) -> MlflowException:
    """Bad input: MLflow's own error for it, which `mlflow models serve` answers with a 400 and
    this message (any other exception becomes a message that says nothing of the input)."""
    error: MlflowException = MlflowException.invalid_parameter_value(message)
    return error


set_model(LinearModel())
