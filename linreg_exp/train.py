"""Training: nn.Linear(d, 1) fitted by the configured loss and optimizer, one epoch at a time.

Nothing here knows MLflow or Hydra exists. `fit` yields every epoch's named metrics as it is
done, so the caller can stream them to the store and stop at any epoch (a diverged loss, a
signal) with nothing lost. A new per-epoch metric is added here, and only here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from linreg_exp.data import Dataset, Scaling
from linreg_exp.errors import ConfigError
from linreg_exp.params import epoch_names

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


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


FUSED_MIN_POINTS = 200_000  # from here on autograd's extra passes over memory dominate an epoch


class FusedLinearStep:
    """Full-batch loss and gradients of w·x + b in closed form, for L1 and MSE (mean).

    Autograd makes about twice the passes over the data per epoch for nn.Linear + loss +
    backward; this makes 5-6 and no temporaries beyond the residual (benchmarks/results.md §2).
    The update itself stays with the configured torch.optim optimizer, so every optimizer works.
    """

    def __init__(self, model: nn.Linear, squared: bool, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.squared = model, squared
        self.x, self.neg_y = x.reshape(-1), -y.reshape(-1)
        self.count = self.x.numel()

    @torch.no_grad()
    def __call__(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        weight, bias = self.model.weight, self.model.bias
        residual = torch.addcmul(self.neg_y, self.x, weight.reshape(())).add_(bias)
        if self.squared:
            loss = torch.dot(residual, residual) / self.count
            grad_weight = 2 * torch.dot(residual, self.x) / self.count
            grad_bias = 2 * residual.sum() / self.count
        else:
            sign = residual.sign()
            loss = torch.dot(sign, residual) / self.count  # |r| = sign(r)·r
            grad_weight = torch.dot(sign, self.x) / self.count
            grad_bias = sign.sum() / self.count
        weight.grad = grad_weight.reshape(1, 1)
        bias.grad = grad_bias.reshape(1)
        optimizer.step()
        return loss


def fused_step_for(
    model: nn.Linear, loss_fn: nn.Module, data: Dataset, batch_size: int | None
) -> FusedLinearStep | None:
    """The fused step where it pays (large full-batch L1/MSE runs), else None for autograd."""
    if step_kind(loss_fn, data.x.shape[0], batch_size, data.x.shape[1]) != "fused":
        return None
    return FusedLinearStep(model, isinstance(loss_fn, nn.MSELoss), data.x, data.y)


def step_kind(
    loss_fn: nn.Module, num_data: int, batch_size: int | None, num_features: int = 1
) -> str:
    """ "fused" for large full-batch L1/MSE runs of one feature, else "autograd".

    Small runs keep autograd: it is as fast there, and it reproduces the tutorial bit for bit.
    """
    full_batch = batch_size is None or batch_size >= num_data
    fusable = type(loss_fn) in (nn.L1Loss, nn.MSELoss) and loss_fn.reduction == "mean"
    large = num_data >= FUSED_MIN_POINTS and num_features == 1
    return "fused" if full_batch and fusable and large else "autograd"


def _epoch_mini_batch(
    model: nn.Linear,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    batch_size: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """One pass over shuffled index slices (a DataLoader costs far more for 1-feature rows:
    benchmarks/results.md §5)."""
    num_data = data.x.shape[0]
    order = torch.randperm(num_data, generator=generator).to(data.x.device)
    total = torch.zeros((), device=data.x.device)
    for start in range(0, num_data, batch_size):
        index = order[start : start + batch_size]
        total += _epoch_full_batch(model, loss_fn, optimizer, data.x[index], data.y[index]) * len(
            index
        )
    return total / num_data


def load_optimizer(make_optimizer: OptimizerFactory) -> None:
    """Construct the optimizer once on a throw-away parameter, so that its one-time cost
    (torch.optim imports torch._dynamo on first use) is paid before the job waits for the store,
    and bad optimizer arguments fail before the run exists."""
    make_optimizer([nn.Parameter(torch.zeros(1))])


Epoch = dict[str, float]  # loss (before the step), weights and bias (after it): params.epoch_names


def fit(
    data: Dataset,
    loss_fn: nn.Module,
    make_optimizer: OptimizerFactory,
    epochs: int,
    batch_size: int | None,
    seed: int,
    scaling: Scaling | None = None,
) -> Iterator[Epoch]:
    """Train nn.Linear(d, 1) (initialised from `seed`), yielding each epoch's metrics.

    `data` is what the model sees (scaled already, with `scaling`, whose weights are reported
    in the original units). The caller decides what to keep and when to stop (a diverged loss,
    a signal): training holds nothing of the past itself.
    """
    torch.manual_seed(seed)
    model = nn.Linear(data.x.shape[1], 1).to(data.x.device)
    names = epoch_names(data.features)
    optimizer = make_optimizer(model.parameters())
    shuffle = torch.Generator().manual_seed(seed + 1)
    fused = fused_step_for(model, loss_fn, data, batch_size)
    for _ in range(epochs):
        if fused is not None:
            loss = fused(optimizer)
        elif batch_size is None or batch_size >= data.x.shape[0]:
            loss = _epoch_full_batch(model, loss_fn, optimizer, data.x, data.y)
        else:
            loss = _epoch_mini_batch(model, loss_fn, optimizer, data, batch_size, shuffle)
        weight, bias = model.weight.detach(), model.bias.detach()  # [1, d], [1]
        if scaling is not None:
            weight, bias = scaling.original(weight, bias)
        values = torch.cat((loss.detach().view(1), weight.view(-1), bias.view(-1)))
        yield dict(zip(names, values.tolist(), strict=True))


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
    """One intra-op thread for small data (extra threads only wait on each other there, most of
    all on a busy machine), all of them for large data."""
    torch.set_num_threads(1 if num_data < SMALL_DATA_POINTS else _DEFAULT_THREADS)
