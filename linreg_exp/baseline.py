"""Closed-form optima for a dataset: what gradient descent should converge to, for any number
of features.

- Least squares (MSE): exact. One feature keeps the tutorial's formula (cov/var); more solve the
  float64 least-squares problem with a column of ones (torch.linalg.lstsq).
- Least absolute deviation (L1) has no formula. For one feature f(w) = min_b sum|y - w·x - b| is
  convex in w with b = median(y - w·x), so a golden-section search on w finds it to machine
  precision. For more, it is the linear program min sum(u + v) s.t. X·w + b + u - v = y, u, v >= 0,
  solved by SciPy's HiGHS.
- Huber: least squares is its reference. Huber's optimum lies between LAD's and least squares',
  equal to least squares' when every residual is within `delta`, which is the common case on the
  tutorial's data; a solver of its own would add a cost to every run to report a number that
  rarely differs.
"""

from __future__ import annotations

import math

import torch

from linreg_exp.history import LinearParams
from linreg_exp.params import Coefficients

LAD_MAX_POINTS = 1_000_000  # above this the exact search costs seconds (benchmarks/results.md)
LAD_LP_MAX_POINTS = 100_000  # the linear program has 2 variables a point: above this, seconds
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


def _line(params: LinearParams) -> Coefficients:
    return Coefficients((params.weight,), params.bias)


def ordinary_least_squares(x: torch.Tensor, y: torch.Tensor) -> Coefficients:
    """Least squares for x: [n, d], y: [n, 1], in float64."""
    if x.shape[1] == 1:
        return _line(least_squares(x, y))
    x64 = torch.cat((x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)), 1)
    solution = torch.linalg.lstsq(x64, y.double().reshape(-1, 1), driver="gelsd").solution
    values = solution.flatten().tolist()
    return Coefficients(tuple(values[:-1]), values[-1])


def lad_linear_program(x: torch.Tensor, y: torch.Tensor) -> Coefficients:
    """Least absolute deviation for x: [n, d] as a linear program (SciPy's HiGHS)."""
    import numpy as np
    from scipy import sparse
    from scipy.optimize import linprog

    n, d = x.shape
    x64, y64 = x.double().numpy(), y.double().reshape(-1).numpy()
    # variables: w (d), b, u (n), v (n); minimise sum(u) + sum(v); X·w + b + u - v = y
    cost = np.concatenate((np.zeros(d + 1), np.ones(2 * n)))
    identity = sparse.identity(n, format="csr")
    equality = sparse.hstack((sparse.csr_matrix(x64), np.ones((n, 1)), identity, -identity))
    bounds = [(None, None)] * (d + 1) + [(0, None)] * (2 * n)
    result = linprog(cost, A_eq=equality.tocsr(), b_eq=y64, bounds=bounds, method="highs")
    if not result.success:  # pragma: no cover - a bounded, feasible LP: HiGHS solves it
        raise RuntimeError(f"the LAD linear program failed: {result.message}")
    return Coefficients(tuple(float(w) for w in result.x[:d]), float(result.x[d]))


def closed_form_optimum(loss_name: str, x: torch.Tensor, y: torch.Tensor) -> Coefficients | None:
    """The optimum the run's loss converges to: LAD for l1, least squares otherwise (Huber's
    reference: see the module docstring). None when LAD is too costly for this many points."""
    if loss_name != "l1":
        return ordinary_least_squares(x, y)
    if x.shape[1] == 1:
        return _line(least_absolute_deviation(x, y)) if x.numel() <= LAD_MAX_POINTS else None
    return lad_linear_program(x, y) if x.shape[0] <= LAD_LP_MAX_POINTS else None
