"""The tutorial's data: x ~ U(x_min, x_max), noise ~ N(0, noise_std), y = w·(x + noise) + b."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from linreg_exp.schema import DataConfig


@dataclass(frozen=True)
class Dataset:
    x: torch.Tensor  # (num_data, 1)
    y: torch.Tensor  # (num_data, 1)

    def to(self, device: torch.device) -> Dataset:
        return Dataset(self.x.to(device), self.y.to(device))

    def sample(self, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        """Every k-th point as flat numpy arrays, at most about `max_points`: enough to draw."""
        step = max(1, self.x.shape[0] // max_points)
        return self.x[::step].flatten().cpu().numpy(), self.y[::step].flatten().cpu().numpy()


def make_dataset(cfg: DataConfig, seed: int, held_out: bool = False) -> Dataset:
    """Generate on the CPU from its own generator, so the data is the same on every device.

    `held_out`: `num_val` points from the same distribution, drawn from a random stream of their
    own, so the training data (and the tutorial's numbers) stay the same whatever `num_val` is."""
    generator = torch.Generator().manual_seed(held_out_seed(seed) if held_out else seed)
    num = cfg.num_val if held_out else cfg.num_data
    x = torch.rand(num, 1, generator=generator) * (cfg.x_max - cfg.x_min) + cfg.x_min
    noise = torch.randn(num, 1, generator=generator).mul_(cfg.noise_std)
    y = noise.add_(x).mul_(cfg.true_weight).add_(cfg.true_bias)  # in place: 8 bytes a point
    return Dataset(x, y)


def held_out_seed(seed: int) -> int:
    """The held-out stream's seed: a hash of the run's, so its points are unrelated to the
    training points of this or any nearby seed."""
    digest = hashlib.sha256(f"linreg_exp held-out {seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
