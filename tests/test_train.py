"""Training reproduces the tutorial loop and converges where it should."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from linreg_exp.baseline import least_squares
from linreg_exp.data import make_dataset
from linreg_exp.errors import ConfigError
from linreg_exp.history import History
from linreg_exp.options import own_loss_and_optimizer
from linreg_exp.schema import DataConfig
from linreg_exp.train import (
    FUSED_MIN_POINTS,
    Member,
    OwnStep,
    fit,
    resolve_device,
    step_kind,
)

SGD = functools.partial(torch.optim.SGD, lr=0.01)
LOSSES = {"l1": "torch.nn.L1Loss", "mse": "torch.nn.MSELoss", "huber": "torch.nn.HuberLoss"}


def train(
    loss: str,
    epochs: int = 500,
    batch_size: int | None = None,
    lr: float = 0.01,
    data_cfg: DataConfig | None = None,
) -> History:
    """A job's training: one config, the trainer's own (vectorised) SGD step."""
    data = make_dataset(data_cfg or DataConfig(), seed=0)
    member = Member(0, LOSSES[loss], "torch.optim.SGD", lr)
    history = History(step=step_kind([member], data.rows, data.x.shape[1], batch_size))
    for epoch in fit(data, member, epochs, batch_size):
        history.append(epoch)
    return history


def test_matches_the_hand_written_tutorial_loop() -> None:
    data = make_dataset(DataConfig(), seed=0)
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    losses, weights = [], []
    for _ in range(500):
        optimizer.zero_grad()
        loss = nn.L1Loss()(model(data.x), data.y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        weights.append(model.weight.item())
    history = train("l1")
    assert history.series("loss") == losses
    assert history.series("weight") == weights
    assert history.epochs_done == 500


def test_l1_reproduces_the_tutorial() -> None:
    history = train("l1")
    assert history.series("weight")[-1] == pytest.approx(2.0, abs=0.03)
    # the tutorial's L1 run has not converged at 500 epochs: bias still climbing towards 3
    assert history.series("bias")[250] < history.series("bias")[-1] < 3.0
    assert history.series("bias")[-1] - history.series("bias")[-2] > 0


def test_mse_reaches_the_least_squares_optimum() -> None:
    history = train("mse")
    data = make_dataset(DataConfig(), seed=0)
    ols = least_squares(data.x, data.y)
    assert history.series("weight")[-1] == pytest.approx(ols.weight, abs=1e-3)
    assert history.series("bias")[-1] == pytest.approx(ols.bias, abs=1e-3)


def test_a_large_step_blows_up_to_a_non_finite_loss() -> None:
    history = train("mse", lr=0.5)
    assert not math.isfinite(history.final["loss"])
    assert math.isfinite(history.series("loss")[0])


def diverging(loss: str, lr: float, factor: float = 1e4) -> History:
    data = make_dataset(DataConfig(), seed=0)
    history = History()
    for epoch in fit(data, Member(0, LOSSES[loss], "torch.optim.SGD", lr), 500):
        if history.diverges(epoch["loss"], factor):
            break
        history.append(epoch)
    return history


def diverged_at(loss: str, lr: float) -> int | None:
    return diverging(loss, lr).diverged_at_epoch


def test_a_blow_up_is_caught_long_before_it_overflows() -> None:
    """MSE at lr 0.03 ends at loss 5e25 without ever overflowing: the bound catches it."""
    history = diverging("mse", 0.03)
    assert history.diverged_at_epoch == 86 and "exceeds 10000 x" in str(history.divergence)
    overflow = diverging("mse", 1e20)  # float32 overflows at once
    assert overflow.diverged_at_epoch == 1 and "non-finite" in str(overflow.divergence)


@pytest.mark.parametrize("lr", [1.0, 10.0, 100.0])
def test_l1_oscillating_at_a_large_learning_rate_is_not_divergence(lr: float) -> None:
    assert diverged_at("l1", lr) is None


def test_mini_batch_is_deterministic_and_learns() -> None:
    first = train("mse", epochs=30, batch_size=64)
    second = train("mse", epochs=30, batch_size=64)
    assert first.series("loss") == second.series("loss")
    assert first.series("weight")[-1] == pytest.approx(2.0, abs=0.05)
    assert (
        first.series("loss")[-1] < 4.0 < first.series("loss")[0]
    )  # down to the noise floor (2·noise)²


def test_epochs_come_out_as_they_are_done() -> None:
    data = make_dataset(DataConfig(num_data=10), seed=0)
    calls = 0

    class Counting(nn.L1Loss):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            return super().forward(a, b)

    own = OwnStep(Counting(), SGD)  # a loss of the user's own: autograd and torch.optim step it
    epochs = fit(data, Member(0, "tests.Counting", "torch.optim.SGD", 0.01), 10, own=own)
    next(epochs), next(epochs), next(epochs)
    assert calls == 3


def test_an_optimizer_of_your_own_that_cannot_be_built_is_one_line_before_the_run() -> None:
    rmsprop = {"_target_": "torch.optim.RMSprop", "_partial_": True, "lr": 0.01,
               "dampening": 0.0}  # SGD's keys  # fmt: skip
    with pytest.raises(ConfigError, match=r"^optimizer\._target_=torch\.optim\.RMSprop cannot be "
                       r"built from the optimizer's keys: .*dampening"):  # fmt: skip
        own_loss_and_optimizer({"_target_": "torch.nn.L1Loss"}, rmsprop, "torch.optim.RMSprop")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="device=cuda"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.parametrize("loss", [nn.L1Loss(), nn.MSELoss()])
def test_fused_step_follows_autograd(loss: nn.Module) -> None:
    data_cfg = DataConfig(num_data=FUSED_MIN_POINTS)
    fused = train("l1" if isinstance(loss, nn.L1Loss) else "mse", epochs=40, data_cfg=data_cfg)
    assert fused.step == "fused"
    data = make_dataset(data_cfg, seed=0)
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(40):
        optimizer.zero_grad()
        value = loss(model(data.x), data.y)
        value.backward()
        optimizer.step()
        assert fused.series("loss")[epoch] == pytest.approx(value.item(), rel=1e-4)
        assert fused.series("weight")[epoch] == pytest.approx(
            model.weight.item(), rel=1e-4, abs=1e-6
        )
        assert fused.series("bias")[epoch] == pytest.approx(model.bias.item(), rel=1e-4, abs=1e-6)


def test_autograd_where_fusing_does_not_pay_or_apply() -> None:
    big = DataConfig(num_data=FUSED_MIN_POINTS)
    assert train("l1", epochs=2).step == "autograd"  # small: the tutorial, bit for bit
    assert train("huber", epochs=2, data_cfg=big).step == "autograd"
    assert train("mse", epochs=2, batch_size=1024, data_cfg=big).step == "autograd"
    mse = Member(0, LOSSES["mse"], "torch.optim.SGD", 0.01)
    own = OwnStep(nn.MSELoss(reduction="sum"), SGD)  # a loss of the user's own is not fused
    assert step_kind([mse], FUSED_MIN_POINTS, 1, None, own) == "autograd"
    assert step_kind([mse, mse], FUSED_MIN_POINTS, 1, None) == "batched"
