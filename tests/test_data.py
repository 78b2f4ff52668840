"""The data follows the tutorial's formula exactly and is reproducible from the seed."""

from __future__ import annotations

import torch

from linreg_exp.data import make_dataset
from linreg_exp.schema import DataConfig


def test_formula_matches_an_independent_computation() -> None:
    cfg = DataConfig(
        num_data=500, noise_std=0.5, x_min=-3.0, x_max=7.0, true_weight=-1.5, true_bias=4.0
    )
    data = make_dataset(cfg, seed=7)
    generator = torch.Generator().manual_seed(7)
    x = torch.rand(500, 1, generator=generator) * 10.0 - 3.0
    noise = torch.randn(500, 1, generator=generator) * 0.5
    assert data.x.shape == data.y.shape == (500, 1)
    assert torch.equal(data.x, x)
    assert torch.equal(data.y, -1.5 * (x + noise) + 4.0)


def test_distribution_of_x_and_noise() -> None:
    data = make_dataset(DataConfig(num_data=200_000), seed=0)
    assert data.x.min() >= -10 and data.x.max() < 10
    assert abs(float(data.x.mean())) < 0.05
    noise = (data.y - 3.0) / 2.0 - data.x
    assert abs(float(noise.std()) - 1.0) < 0.01


def test_same_seed_same_data_other_seed_other_data() -> None:
    cfg = DataConfig()
    assert torch.equal(make_dataset(cfg, 0).y, make_dataset(cfg, 0).y)
    assert not torch.equal(make_dataset(cfg, 0).y, make_dataset(cfg, 1).y)


def test_zero_noise_is_exactly_linear() -> None:
    data = make_dataset(DataConfig(noise_std=0.0), seed=3)
    assert torch.allclose(data.y, 2.0 * data.x + 3.0)


def test_held_out_points_come_from_a_stream_of_their_own() -> None:
    training = make_dataset(DataConfig(), seed=0)
    held_out = make_dataset(DataConfig(num_val=300), seed=0, held_out=True)
    assert held_out.x.shape == (300, 1)
    assert not torch.isin(held_out.x, training.x).any()  # other points, the same generator
    more = make_dataset(DataConfig(num_val=5000), seed=0, held_out=False)
    assert torch.equal(more.x, training.x)  # num_val leaves the training data as it was
