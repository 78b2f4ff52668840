"""Closed-form optima for a dataset: what gradient descent should converge to.

Least squares (MSE) has an exact formula. Least absolute deviation (L1) has none, but for one
feature f(w) = min_b sum|y - w·x - b| is convex in w with b = median(y - w·x), so a golden-section
search on w finds it to machine precision.
"""

from __future__ import annotations

import math

import torch

from linreg_exp.history import LinearParams

LAD_MAX_POINTS = 1_000_000  # above this the exact search costs seconds (benchmarks/results.md)
_GOLDEN = (math.sqrt(5) - 1) / 2


def least_squares(x: torch.Tensor, y: torch.Tensor) -> LinearParams:
    """Ordinary least squares in float64: w = cov(x, y) / var(x), b = mean(y) - w·mean(x)."""
    x64, y64 = x.double().flatten(), y.double().flatten()
    x_mean, y_mean = x64.mean(), y64.mean()
    dx = x64 - x_mean
    weight = (dx * (y64 - y_mean)).sum() / (dx * dx).sum()
    return LinearParams(float(weight), float(y_mean - weight * x_mean))


def _lad_objective(x: torch.Tensor, y: torch.Tensor, weight: float) -> tuple[float, float]:
    residual = y - weight * x
    bias = residual.median()
    return float((residual - bias).abs().sum()), float(bias)


def least_absolute_deviation(
    x: torch.Tensor, y: torch.Tensor, tolerance: float = 1e-10
) -> LinearParams:
    """Minimise sum|y - w·x - b| exactly (up to `tolerance` in w) by golden-section search."""
    x64, y64 = x.double().flatten(), y.double().flatten()
    start = least_squares(x, y).weight
    half_width = 1.0 + abs(start)

    def cost(w: float) -> float:
        return _lad_objective(x64, y64, w)[0]

    # Widen the bracket until the centre is below both ends (f is convex, so this terminates).
    while cost(start - half_width) < cost(start) or cost(start + half_width) < cost(start):
        half_width *= 4
    low, high = start - half_width, start + half_width
    a, b = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    cost_a, cost_b = cost(a), cost(b)
    while high - low > tolerance * max(1.0, abs(a)):
        if cost_a <= cost_b:
            high, b, cost_b = b, a, cost_a
            a = high - _GOLDEN * (high - low)
            cost_a = cost(a)
        else:
            low, a, cost_a = a, b, cost_b
            b = low + _GOLDEN * (high - low)
            cost_b = cost(b)
    weight = (low + high) / 2
    return LinearParams(weight, _lad_objective(x64, y64, weight)[1])


def closed_form_optimum(loss_name: str, x: torch.Tensor, y: torch.Tensor) -> LinearParams | None:
    """The optimum the run's loss converges to: LAD for l1, least squares otherwise.

    Huber has no closed form; least squares is its reference (they agree when the noise is small
    against `delta`). None when LAD is too costly for this many points.
    """
    if loss_name == "l1":
        return least_absolute_deviation(x, y) if x.numel() <= LAD_MAX_POINTS else None
    return least_squares(x, y)
