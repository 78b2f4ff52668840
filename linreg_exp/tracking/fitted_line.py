"""A run's model for MLflow (models from code): the fitted line, y = weight · x + bias, with the
weight and bias from the model's config. Where it is loaded it needs only MLflow: neither torch
nor linreg_exp. Its input is a list of x (a one-column DataFrame will do); MLflow reads the type
hints of `predict` as the model's signature."""

from __future__ import annotations

from typing import Any

from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel


class FittedLine(PythonModel):
    def load_context(self, context: Any) -> None:
        self.weight = float(context.model_config["weight"])
        self.bias = float(context.model_config["bias"])

    # MLflow 3 calls a predict that takes no context argument just so
    def predict(  # type: ignore[override]
        self, model_input: list[float], params: dict[str, Any] | None = None
    ) -> list[float]:
        return [float(x) * self.weight + self.bias for x in model_input]


set_model(FittedLine())
