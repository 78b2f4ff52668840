"""Closed-form optima, checked against numpy's polyfit and scipy's linear programming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from linreg_exp.baseline import (
    closed_form_optimum,
    lad_linear_program,
    least_absolute_deviation,
    least_squares,
    ordinary_least_squares,
)
from linreg_exp.params import Coefficients


def sample(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 20 - 10
    y = 2 * (x + torch.randn(n, 1, generator=g)) + 3
    y[:10] += 40  # outliers pull least squares, not least absolute deviation
    return x, y


def test_least_squares_matches_polyfit() -> None:
    x, y = sample()
    slope, intercept = np.polyfit(x.double().numpy().ravel(), y.double().numpy().ravel(), 1)
    ols = least_squares(x, y)
    assert ols.weight == pytest.approx(slope, abs=1e-10)
    assert ols.bias == pytest.approx(intercept, abs=1e-10)


def test_least_absolute_deviation_matches_linear_programming() -> None:
    x, y = sample()
    xs, ys = x.double().numpy().ravel(), y.double().numpy().ravel()
    n = len(xs)
    # variables: w, b, u (n residual bounds); minimise sum u with |y - w x - b| <= u
    cost = np.r_[0.0, 0.0, np.ones(n)]
    upper = np.c_[-xs, -np.ones(n), -np.eye(n)]
    lower = np.c_[xs, np.ones(n), -np.eye(n)]
    result = linprog(
        cost,
        A_ub=np.r_[upper, lower],
        b_ub=np.r_[-ys, ys],
        bounds=[(None, None)] * 2 + [(0, None)] * n,
        method="highs",
    )
    lad = least_absolute_deviation(x, y)
    objective = np.abs(ys - lad.weight * xs - lad.bias).sum()
    assert objective == pytest.approx(result.fun, rel=1e-9)
    assert lad.weight == pytest.approx(result.x[0], abs=1e-6)
    assert lad.bias == pytest.approx(result.x[1], abs=1e-5)


def test_optimum_follows_the_loss() -> None:
    x, y = sample()
    lad, ols = least_absolute_deviation(x, y), least_squares(x, y)
    assert closed_form_optimum("l1", x, y) == Coefficients((lad.weight,), lad.bias)
    assert closed_form_optimum("mse", x, y) == Coefficients((ols.weight,), ols.bias)


def test_several_features_least_squares_and_lad_agree_with_scipy() -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(150, 3, generator=generator)
    y = x @ torch.tensor([[1.5], [-2.0], [0.25]]) + 4 + torch.randn(150, 1, generator=generator)
    xs, ys = x.double().numpy(), y.double().flatten().numpy()
    design = np.c_[xs, np.ones(len(xs))]
    expected = np.linalg.lstsq(design, ys, rcond=None)[0]
    ols = ordinary_least_squares(x, y)
    assert [*ols.weights, ols.bias] == pytest.approx(expected.tolist(), abs=1e-9)
    # LAD as the textbook LP with one slack a point (|r_i| <= t_i), dense, interior point
    n = len(ys)
    result = linprog(
        np.r_[np.zeros(4), np.ones(n)],
        A_ub=np.block([[design, -np.eye(n)], [-design, -np.eye(n)]]),
        b_ub=np.r_[ys, -ys],
        bounds=[(None, None)] * 4 + [(0, None)] * n,
        method="highs-ipm",
    )
    lad = lad_linear_program(x, y)
    objective = np.abs(ys - xs @ np.array(lad.weights) - lad.bias).sum()
    assert objective == pytest.approx(result.fun, rel=1e-8)
    assert closed_form_optimum("l1", x, y) == lad
