"""The tutorial's data and its least-squares line, made here independently of linreg_exp."""

from __future__ import annotations

import numpy as np


def tutorial_data(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's data, generated here independently of linreg_exp."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=g) * 20 - 10
    y = 2.0 * (x + torch.randn(n, 1, generator=g)) + 3.0
    return x.double().numpy().ravel(), y.double().numpy().ravel()


def least_squares() -> tuple[float, float]:
    """The slope and intercept that MSE training on the tutorial's data converges to."""
    x, y = tutorial_data()
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)
