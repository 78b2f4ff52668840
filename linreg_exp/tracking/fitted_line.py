"""A run's model for MLflow (models from code): the fitted line, y = weight · x + bias, with the
weight and bias from the model's config. Where it is loaded it needs only MLflow, numpy and
pandas: neither torch nor linreg_exp. Input: a column `x` (or a sequence of numbers)."""

from __future__ import annotations

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel


class FittedLine(PythonModel):  # no type hints: MLflow would read them as the input schema
    def load_context(self, context):
        self.weight = float(context.model_config["weight"])
        self.bias = float(context.model_config["bias"])

    def predict(self, context, model_input, params=None):
        x = model_input["x"] if hasattr(model_input, "columns") else model_input
        return np.asarray(x, dtype=float).reshape(-1) * self.weight + self.bias


set_model(FittedLine())
