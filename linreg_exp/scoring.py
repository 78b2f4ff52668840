"""What a run is scored by: the yardsticks beside it (the truth, least squares, the optimum of its
loss) and its fitted model on the held-out data. Plain torch: no MLflow, no Hydra state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from linreg_exp import data as datasets
from linreg_exp.baseline import closed_form_optimum, ordinary_least_squares
from linreg_exp.data import Dataset
from linreg_exp.history import History
from linreg_exp.params import Coefficients
from linreg_exp.schema import DataConfig, LinregConfig, loss_name
from linreg_exp.vocab import Metric, Outcome


@dataclass(frozen=True)
class Reference:
    """What the learned model is compared with: the truth (synthetic data only), least squares,
    and the closed-form optimum of the run's loss."""

    features: tuple[str, ...]
    true: Coefficients | None
    least_squares: Coefficients
    optimum: Coefficients | None
    optimum_loss: float | None


def compute_reference(data: Dataset, cfg: LinregConfig, loss_fn: nn.Module) -> Reference:
    x, y = data.x.cpu(), data.y.cpu()
    optimum = closed_form_optimum(loss_name(cfg), x, y)
    optimum_loss = None
    if optimum is not None:
        with torch.no_grad():
            weights = torch.tensor(optimum.weights, dtype=x.dtype).view(-1, 1)
            optimum_loss = float(loss_fn(x @ weights + optimum.bias, y))
    true = None
    if isinstance(cfg.data, DataConfig):
        true = Coefficients(tuple(datasets.true_weights(cfg.data)), cfg.data.true_bias)
    return Reference(data.features, true, ordinary_least_squares(x, y), optimum, optimum_loss)


def final_metrics(
    history: History, ref: Reference, loss_name: str, held_out: Dataset
) -> dict[str, float]:
    """The run's final metrics, by name. A diverged run has no final model to report: its
    outcome says so, and its blown-up numbers stay out of the Compare view's scales."""
    features = ref.features
    values = ref.least_squares.named(features, "ols_")
    if loss_name == "l1" and ref.optimum is not None:
        values |= ref.optimum.named(features, "lad_")
    if ref.optimum_loss is not None:
        values["optimum_loss"] = ref.optimum_loss
    if history.last is None or history.outcome is Outcome.DIVERGED:
        return values
    final = history.final_coefficients(features)
    values |= {Metric.FINAL_LOSS: history.final[Metric.LOSS], **final.named(features, "final_")}
    if len(features) == 1:  # the tutorial's gaps: one number each
        weight, bias = final.weights[0], final.bias
        if ref.true is not None:
            values["weight_gap_to_true"] = abs(weight - ref.true.weights[0])
            values["bias_gap_to_true"] = abs(bias - ref.true.bias)
        if ref.optimum is not None:
            values["weight_gap_to_optimum"] = abs(weight - ref.optimum.weights[0])
            values["bias_gap_to_optimum"] = abs(bias - ref.optimum.bias)
    return values | held_out_scores(held_out, final)


def predict(data: Dataset, line: Coefficients) -> torch.Tensor:
    """The model's prediction for every row, in float64: [rows]."""
    weights = torch.tensor(line.weights, dtype=torch.float64).view(-1, 1)
    return (data.x.double().cpu() @ weights).flatten() + line.bias


def held_out_scores(held_out: Dataset, line: Coefficients) -> dict[str, float]:
    """The fitted model on the held-out points, in float64: one yardstick for every run,
    whatever loss it trained with."""
    residual = held_out.y.double().cpu().flatten() - predict(held_out, line)
    return {
        Metric.VAL_MSE: float(residual.square().mean()),
        Metric.VAL_MAE: float(residual.abs().mean()),
    }
