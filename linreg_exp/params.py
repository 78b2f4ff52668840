"""A linear model's parameters by name: the one place their metric keys are spelled.

Training, the yardsticks, the held-out scores, tracking and the pictures all see a model as
weights (one a feature) and a bias; here they get their names. With one feature the keys are the
tutorial's (`weight`, `bias`; `ols_weight`, ...), with more each weight is `weight.<feature>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

LOSS = "loss"


@dataclass(frozen=True)
class Coefficients:
    """A fitted linear model: one weight a feature, and the bias."""

    weights: tuple[float, ...]
    bias: float

    def named(self, features: Sequence[str], prefix: str = "") -> dict[str, float]:
        """{"weight": w, "bias": b} (one feature), else {"weight.<f>": w_f, ..., "bias": b}."""
        keys = weight_keys(features, prefix)
        return {**dict(zip(keys, self.weights, strict=True)), f"{prefix}bias": self.bias}

    @classmethod
    def from_named(cls, values: dict[str, float], features: Sequence[str],
                   prefix: str = "") -> Coefficients:  # fmt: skip
        weights = tuple(values[key] for key in weight_keys(features, prefix))
        return cls(weights, values[f"{prefix}bias"])


def weight_keys(features: Sequence[str], prefix: str = "") -> list[str]:
    if len(features) == 1:
        return [f"{prefix}weight"]
    return [f"{prefix}weight.{name}" for name in features]


def epoch_names(features: Sequence[str]) -> tuple[str, ...]:
    """An epoch's metrics, in the order training reports them: loss, weights, bias."""
    return (LOSS, *weight_keys(features), "bias")


class LinearModelSpec(TypedDict):
    """A fitted linear model, y = Σ weights[i] · x[features[i]] + bias, as tracking logs it as
    the run's MLflow model (tracking/model.py): plain JSON data, so that the spool carries it."""

    features: list[str]  # the input's column names
    weights: list[float]  # one a feature, in that order
    bias: float


def model_payload(line: Coefficients, features: Sequence[str]) -> LinearModelSpec:
    """The fitted model as tracking logs it (tracking/model.py): plain JSON data."""
    return {"features": list(features), "weights": list(line.weights), "bias": line.bias}
