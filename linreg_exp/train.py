"""Training: nn.Linear(1, 1) fitted by the configured loss and optimizer; fills a History.

Nothing here knows MLflow exists. `fit` writes every epoch into the History it is given, so a
run interrupted half-way still has the epochs computed so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import torch
from torch import nn
from tqdm import tqdm

from linreg_exp.data import Dataset
from linreg_exp.errors import ConfigError

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class StopReason(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"


@dataclass
class History:
    """Per-epoch loss (before the step) and weight/bias (after it), and why training stopped."""

    loss: list[float] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    bias: list[float] = field(default_factory=list)
    timestamp_ms: list[int] = field(default_factory=list)
    initial_weight: float = math.nan
    initial_bias: float = math.nan
    stop_reason: StopReason = StopReason.RUNNING
    diverged_at_epoch: int | None = None

    @property
    def epochs_done(self) -> int:
        return len(self.loss)


def _epoch_full_batch(
    model: nn.Linear,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss: torch.Tensor = loss_fn(model(x), y)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return loss.detach()


def _epoch_mini_batch(
    model: nn.Linear,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """One pass over shuffled index slices (a DataLoader costs ~10x more for 1-feature rows)."""
    num_data = data.x.shape[0]
    order = torch.randperm(num_data, generator=generator).to(data.x.device)
    total = torch.zeros((), device=data.x.device)
    for start in range(0, num_data, batch_size):
        index = order[start : start + batch_size]
        total += _epoch_full_batch(model, loss_fn, optimizer, data.x[index], data.y[index]) * len(
            index
        )
    return total / num_data


def fit(
    data: Dataset,
    loss_fn: nn.Module,
    make_optimizer: OptimizerFactory,
    epochs: int,
    batch_size: int | None,
    seed: int,
    history: History,
    progress: bool = False,
) -> History:
    """Train nn.Linear(1, 1) (initialised from `seed`) and record each epoch into `history`."""
    torch.manual_seed(seed)
    model = nn.Linear(1, 1).to(data.x.device)
    optimizer = make_optimizer(model.parameters())
    shuffle = torch.Generator().manual_seed(seed + 1)
    history.initial_weight, history.initial_bias = model.weight.item(), model.bias.item()
    epochs_iter: Iterable[int] = range(epochs)
    if progress:
        epochs_iter = tqdm(
            epochs_iter, desc="training", unit="epoch", leave=False, mininterval=0.25
        )
    for epoch in epochs_iter:
        if batch_size is None or batch_size >= data.x.shape[0]:
            loss = _epoch_full_batch(model, loss_fn, optimizer, data.x, data.y)
        else:
            loss = _epoch_mini_batch(model, loss_fn, optimizer, data, batch_size, shuffle)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            history.stop_reason, history.diverged_at_epoch = StopReason.DIVERGED, epoch
            return history
        history.loss.append(loss_value)
        history.weight.append(model.weight.item())
        history.bias.append(model.bias.item())
        history.timestamp_ms.append(int(time.time() * 1000))
    history.stop_reason = StopReason.COMPLETED
    return history


_DEFAULT_THREADS = torch.get_num_threads()
SMALL_DATA_POINTS = 200_000  # below this, extra intra-op threads cost more than they give


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then Apple's mps, then cpu; `cuda` without CUDA is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device=cuda is not available: torch.cuda.is_available() is False on this machine; "
            "allowed here: cpu, auto"
        )
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def set_cpu_threads(num_data: int) -> None:
    """One intra-op thread for small data (10x faster on a busy machine), all for large."""
    torch.set_num_threads(1 if num_data < SMALL_DATA_POINTS else _DEFAULT_THREADS)
