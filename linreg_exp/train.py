"""Training: nn.Linear(d, 1), N configs at once, one epoch at a time. The one trainer.

A single job is a program of one config; a batched sweep's program has N. Each config keeps what
makes it itself: its seed (so its own data and initial line), loss (L1, MSE, Huber with its
delta), optimizer (SGD with momentum, dampening, weight decay, Nesterov; Adam with betas, eps,
weight decay, AMSGrad), learning rate and number of epochs. Their parameters are stacked
(weights `[N, 1, d]`, biases `[N, 1]`) and trained together: one batched forward (`baddbmm`, the
batched form of nn.Linear's `addmm`), one backward through each config's own loss, one vectorised
update that follows torch.optim's SGD and Adam step by step. So each config ends where
nn.Linear + torch.optim would take it, bit for bit (tests/test_train.py, tests/test_batched.py),
and a job never loads torch.optim's machinery (torch._dynamo: about 1 s of CPU a process,
docs/performance.md §1).

Two more ways to a gradient, for a program of one config:
- `fused`: the closed-form gradient of L1 or MSE for large full-batch runs of one feature, where
  autograd's extra passes over memory dominate an epoch (docs/performance.md §2);
- `OwnStep`: a loss or optimizer of the user's own (any torch.nn loss, any torch.optim
  optimizer), stepped by autograd and torch.optim themselves.

A config whose epochs are done, or which diverged, stops being updated (a mask); the caller
decides which (`Trainer.step(active)`). `Trainer.keep(rows)` gathers the rows that go on into
smaller tensors (a pruned sweep's survivors), each going on exactly as it would have. Nothing
here knows MLflow or Hydra.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from linreg_exp.data import Dataset
from linreg_exp.errors import ConfigError
from linreg_exp.params import epoch_names
from linreg_exp.schema import VECTORISED_LOSSES, VECTORISED_OPTIMIZERS

# What this trainer's own update steps: the schema's losses and optimizers (schema.vectorisable),
# by their `_target_`s, spelled there once.
LOSSES = frozenset(target for _, target in VECTORISED_LOSSES)
OPTIMIZERS = frozenset(target for _, target in VECTORISED_OPTIMIZERS)
FUSED_LOSSES = ("torch.nn.L1Loss", "torch.nn.MSELoss")
FUSED_MIN_POINTS = 200_000  # from here on autograd's extra passes over memory dominate an epoch

OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]
EpochHook = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Member:
    """One config of a program, as plain values (engine.py reads them from its config)."""

    seed: int
    loss: str  # a torch.nn loss's target: one of LOSSES is vectorised
    optimizer: str  # a torch.optim optimizer's target: one of OPTIMIZERS is vectorised
    lr: float
    delta: float = 1.0  # Huber's
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False

    @property
    def vectorised(self) -> bool:
        """Whether this trainer's own update steps it (else it needs an OwnStep)."""
        return self.loss in LOSSES and self.optimizer in OPTIMIZERS


@dataclass(frozen=True)
class OwnStep:
    """A loss and an optimizer of the user's own, for a program of one config: autograd and
    torch.optim step it, as the tutorial does."""

    loss_fn: nn.Module
    make_optimizer: OptimizerFactory


@dataclass(frozen=True)
class Scaling:
    """Features scaled to mean 0 and standard deviation 1 on the training split
    (`model.standardize`): training sees scaled features, and the weights it reports are given
    back in the original units (`original`)."""

    mean: torch.Tensor  # [d]
    std: torch.Tensor  # [d]

    @classmethod
    def of(cls, train: Dataset) -> Scaling:
        mean, std = train.x.double().mean(0), train.x.double().std(0, correction=0)
        for name, spread in zip(train.features, std.tolist(), strict=True):
            if not spread > 0 or not math.isfinite(spread):
                raise ConfigError(
                    f"model.standardize=true: feature {name!r} is constant on the training "
                    "split; drop it (data.features) or set model.standardize=false"
                )
        return cls(mean.float(), std.float())

    def apply(self, data: Dataset) -> Dataset:
        mean, std = self.mean.to(data.x.device), self.std.to(data.x.device)
        return Dataset((data.x - mean) / std, data.y, data.features)

    def original(
        self, weight: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights [N, d] and biases [N] on scaled features, in the features' own units."""
        std, mean = self.std.to(weight), self.mean.to(weight)
        unscaled = weight / std
        return unscaled, bias - (unscaled * mean).sum(-1)


def step_kind(
    members: list[Member], rows: int, features: int, batch_size: int | None,
    own: OwnStep | None = None,
) -> str:  # fmt: skip
    """How a program's gradients are computed (the run's `linreg.train_step`): `fused` for one
    large full-batch L1/MSE config of one feature, `batched` for many configs as one program,
    else `autograd`. Small runs keep autograd: it reproduces the tutorial bit for bit."""
    full_batch = batch_size is None or batch_size >= rows
    one = own is None and len(members) == 1 and members[0].loss in FUSED_LOSSES
    if one and full_batch and rows >= FUSED_MIN_POINTS and features == 1:
        return "fused"
    return "batched" if len(members) > 1 else "autograd"


class Trainer:
    """N configs on shared data shapes (rows and features, and the device), trained one epoch
    at a time: `step(active)` returns each config's loss (before the step), weights and bias
    (after it): the parameter record. Full-batch or mini-batch (`batch_size`). With `scalings`,
    each config trains on its features scaled, and reports its weights in the features' own
    units. With `own`, the one config's loss and optimizer are the user's (`OwnStep`)."""

    def __init__(
        self,
        members: list[Member],
        datasets: list[Dataset],
        batch_size: int | None,
        device: torch.device,
        scalings: list[Scaling] | None = None,
        own: OwnStep | None = None,
    ) -> None:
        if own is None and not all(member.vectorised for member in members):
            raise ValueError("a loss or optimizer of the user's own needs an OwnStep")
        if own is not None and len(members) != 1:
            raise ValueError("an OwnStep trains a program of one config")
        self.members, self.n, self.device, self._own = members, datasets[0].rows, device, own
        if scalings is not None:
            datasets = [s.apply(d) for s, d in zip(scalings, datasets, strict=True)]
        self.scaling = None
        if scalings is not None:
            self.scaling = Scaling(torch.stack([s.mean for s in scalings]).to(device),
                                   torch.stack([s.std for s in scalings]).to(device))  # fmt: skip
        if len(datasets) == 1:  # a view, not a copy: a large table is held once
            self.x, self.y = datasets[0].x.unsqueeze(0), datasets[0].y.unsqueeze(0)
        else:
            self.x = torch.stack([s.x for s in datasets])
            self.y = torch.stack([s.y for s in datasets])
        self.x, self.y = self.x.to(device), self.y.to(device)  # [N, n, d], [N, n, 1]
        set_cpu_threads(self.n)
        features = self.x.shape[2]
        weights, biases = [], []
        for member in members:  # each model initialised as nn.Linear(d, 1) is, from its seed
            torch.manual_seed(member.seed)
            line = nn.Linear(features, 1)
            weights.append(line.weight.detach())
            biases.append(line.bias.detach())
        self.weight = torch.stack(weights).to(device).requires_grad_()  # [N, 1, d]
        self.bias = torch.stack(biases).to(device).requires_grad_()  # [N, 1]
        self.batch_size = None if batch_size is None or batch_size >= self.n else batch_size
        self.kind = step_kind(members, self.n, features, batch_size, own)
        self._neg_y = -self.y.view(-1) if self.kind == "fused" else None
        self.shuffles = [torch.Generator().manual_seed(m.seed + 1) for m in members]
        self.epochs_done = 0
        self._optimizer = own.make_optimizer([self.weight, self.bias]) if own else None
        self._setting = _Settings(members, device) if own is None else None
        self._states = (_State.zeros(self.weight), _State.zeros(self.bias))
        self._steps = 0  # optimizer steps so far: the same for every config still active

    def step(self, active: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One epoch of every config: loss [N], weight [N, d], bias [N] (the parameter record);
        only the `active` ones ([N] bool; None: all) move."""
        if active is not None:
            active = active.to(self.device)
        if self.batch_size is None:
            loss = self._update(self.x, self.y, active)
        else:
            loss = self._mini_batches(active)
        self.epochs_done += 1
        weight, bias = self.weight.detach()[:, 0, :], self.bias.detach().view(-1)
        if self.scaling is not None:
            weight, bias = self.scaling.original(weight, bias)
        return {"loss": loss.cpu(), "weight": weight.cpu(), "bias": bias.cpu()}

    def keep(self, rows: list[int]) -> None:
        """Go on with these rows only (indices into the current ones, in order): data,
        parameters, optimizer state and settings are gathered, so that the rows left behind cost
        nothing more. Each row's arithmetic is its own, so the kept rows train on bit for bit."""
        if self._setting is None or self.kind == "fused":
            raise ValueError("a program of one config (an OwnStep's, a fused one) has no rows to "
                             "gather")  # fmt: skip
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.members = [self.members[i] for i in rows]
        self.shuffles = [self.shuffles[i] for i in rows]
        self.x, self.y = self.x.index_select(0, index), self.y.index_select(0, index)
        if self.scaling is not None:
            self.scaling = Scaling(self.scaling.mean.index_select(0, index),
                                   self.scaling.std.index_select(0, index))  # fmt: skip
        self.weight = self.weight.detach().index_select(0, index).requires_grad_()
        self.bias = self.bias.detach().index_select(0, index).requires_grad_()
        weight_state, bias_state = self._states
        self._states = (weight_state.select(index), bias_state.select(index))
        self._setting = _Settings(self.members, self.device)

    def fit(self, epochs: int, on_epoch: EpochHook, gather: bool = False) -> None:
        """Train up to `epochs`, handing each epoch's rows ([N, 2 + d]: as_rows, N the rows
        it started with, a row gathered out as NaN) to `on_epoch`, which answers which rows
        train on ([N] bool); none: it stops. With `gather` (a pruned sweep), the rows that stop
        are gathered out (`keep`), so that they cost nothing more; else they are masked."""
        started = len(self.members)
        kept = list(range(started))  # this trainer's rows, as `on_epoch` numbers them
        training = torch.ones(started, dtype=torch.bool)
        for epoch in range(epochs):
            moving = training[kept]
            rows = as_rows(self.step(None if bool(moving.all()) else moving))
            if len(kept) < started:
                every = torch.full((started, rows.shape[1]), math.nan)
                every[kept] = rows
                rows = every
            training = on_epoch(epoch, rows)
            if not bool(training.any()):
                return
            if gather:
                going_on = [k for k, on in enumerate(training[kept].tolist()) if on]
                if len(going_on) < len(kept):
                    self.keep(going_on)
                    kept = [kept[k] for k in going_on]

    def _mini_batches(self, active: torch.Tensor | None) -> torch.Tensor:
        """A pass over each config's own shuffled index slices (a DataLoader costs far more for
        rows this small: docs/performance.md §5)."""
        assert self.batch_size is not None
        order = torch.stack([torch.randperm(self.n, generator=g) for g in self.shuffles])
        order = order.to(self.device).unsqueeze(-1)  # [N, n, 1]
        total = torch.zeros(len(self.members), device=self.device)
        features = self.x.shape[2]
        for start in range(0, self.n, self.batch_size):
            index = order[:, start : start + self.batch_size]
            x = self.x.gather(1, index.expand(-1, -1, features))
            y = self.y.gather(1, index)
            total += self._update(x, y, active) * index.shape[1]
        return total / self.n

    def _update(
        self, x: torch.Tensor, y: torch.Tensor, active: torch.Tensor | None
    ) -> torch.Tensor:
        """Gradients and one optimizer step on this batch; returns each config's loss."""
        if self._optimizer is not None:
            return self._own_update(x, y)
        s = self._setting
        assert s is not None
        loss = self._fused_gradients(s) if self.kind == "fused" else self._gradients(x, y, s)
        with torch.no_grad():
            for param, state in zip((self.weight, self.bias), self._states, strict=True):
                grad = param.grad
                assert grad is not None
                shape = (-1,) + (1,) * (param.dim() - 1)
                if s.all_adam:
                    new = _adam(param, grad, state, s, self._steps)
                else:
                    new = _sgd(param, grad, state, s, self._steps)
                    if s.any_adam:
                        adam = _adam(param, grad, state, s, self._steps)
                        new = torch.where(s.adam.view(shape), adam, new)
                param.copy_(new if active is None else torch.where(active.view(shape), new, param))
        self._steps += 1
        return loss

    def _gradients(self, x: torch.Tensor, y: torch.Tensor, s: _Settings) -> torch.Tensor:
        """Each config's loss, and its gradients by autograd (each from its own loss)."""
        prediction = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        loss = s.loss(prediction - y)
        self.weight.grad = self.bias.grad = None
        loss.sum().backward()  # type: ignore[no-untyped-call]
        return loss.detach()

    @torch.no_grad()
    def _fused_gradients(self, s: _Settings) -> torch.Tensor:
        """The one config's L1 or MSE loss and gradients of w·x + b in closed form: 5-6 passes
        over the data and no temporaries beyond the residual, where autograd makes about twice
        the passes (docs/performance.md §2)."""
        x, count, neg_y = self.x.view(-1), self.n, self._neg_y
        assert neg_y is not None
        weight, bias = self.weight, self.bias
        residual = torch.addcmul(neg_y, x, weight.reshape(())).add_(bias.reshape(()))
        if bool(s.mse[0]):
            loss = torch.dot(residual, residual) / count
            grad_weight = 2 * torch.dot(residual, x) / count
            grad_bias = 2 * residual.sum() / count
        else:
            sign = residual.sign()
            loss = torch.dot(sign, residual) / count  # |r| = sign(r)·r
            grad_weight = torch.dot(sign, x) / count
            grad_bias = sign.sum() / count
        weight.grad = grad_weight.reshape(weight.shape)
        bias.grad = grad_bias.reshape(bias.shape)
        return loss.view(1)

    def _own_update(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The user's loss and optimizer, as the tutorial steps them."""
        assert self._own is not None and self._optimizer is not None
        self._optimizer.zero_grad(set_to_none=True)
        prediction = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        loss: torch.Tensor = self._own.loss_fn(prediction[0], y[0])
        loss.backward()  # type: ignore[no-untyped-call]
        self._optimizer.step()
        return loss.detach().view(1)


def fit(
    data: Dataset,
    member: Member,
    epochs: int,
    batch_size: int | None = None,
    scaling: Scaling | None = None,
    own: OwnStep | None = None,
) -> Iterator[dict[str, float]]:
    """One config's epochs as named metrics (params.epoch_names): a program of one, for a
    caller that wants plain numbers (the bench, a notebook)."""
    trainer = Trainer([member], [data], batch_size, data.x.device,
                      [scaling] if scaling else None, own)  # fmt: skip
    names = epoch_names(data.features)
    for _ in range(epochs):
        (row,) = as_rows(trainer.step()).tolist()
        yield dict(zip(names, row, strict=True))


def as_rows(record: dict[str, torch.Tensor]) -> torch.Tensor:
    """A step's parameter record as rows [N, 2 + d]: loss, weights, bias, in the order of
    params.epoch_names (the one place that lays them out)."""
    loss, weight, bias = record["loss"], record["weight"], record["bias"]
    return torch.cat((loss.view(-1, 1), weight, bias.view(-1, 1)), 1)


class _Settings:
    """Each config's hyperparameters as [N] tensors, and what all of them share."""

    def __init__(self, members: list[Member], device: torch.device) -> None:
        def column(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        self.losses = {m.loss for m in members}
        self.l1 = column([m.loss == "torch.nn.L1Loss" for m in members], torch.bool)
        self.mse = column([m.loss == "torch.nn.MSELoss" for m in members], torch.bool)
        self.delta = column([m.delta for m in members]).view(-1, 1, 1)
        self.adam = column([m.optimizer == "torch.optim.Adam" for m in members], torch.bool)
        self.any_adam = any(m.optimizer == "torch.optim.Adam" for m in members)
        self.all_adam = all(m.optimizer == "torch.optim.Adam" for m in members)
        self.any_momentum = any(m.momentum for m in members)
        self.any_weight_decay = any(m.weight_decay for m in members)
        self.neg_lr = column([-m.lr for m in members])
        # double precision on the CPU (Apple's mps has no float64): Adam's bias corrections
        self.lr64 = torch.tensor([m.lr for m in members], dtype=torch.float64)
        self.momentum = column([m.momentum for m in members])
        # torch.optim computes 1 - x in double precision (its Python floats), then as float32
        self.one_minus_dampening = column([1 - m.dampening for m in members])
        self.weight_decay = column([m.weight_decay for m in members])
        self.nesterov = column([m.nesterov for m in members], torch.bool)
        self.one_minus_beta1 = column([1 - m.betas[0] for m in members])
        self.beta2 = column([m.betas[1] for m in members])
        self.one_minus_beta2 = column([1 - m.betas[1] for m in members])
        self.beta1_64 = torch.tensor([m.betas[0] for m in members], dtype=torch.float64)
        self.beta2_64 = torch.tensor([m.betas[1] for m in members], dtype=torch.float64)
        self.eps = column([m.eps for m in members])
        self.amsgrad = column([m.amsgrad for m in members], torch.bool)

    def loss(self, difference: torch.Tensor) -> torch.Tensor:
        """Each config's own loss ([N]) of its differences ([N, rows, 1]); a program of one
        loss computes only that one."""
        if self.losses == {"torch.nn.L1Loss"}:
            return difference.abs().mean((1, 2))
        if self.losses == {"torch.nn.MSELoss"}:
            return difference.square().mean((1, 2))
        size = difference.abs()
        huber = torch.where(size < self.delta, 0.5 * difference.square(),
                            self.delta * (size - 0.5 * self.delta)).mean((1, 2))  # fmt: skip
        if self.losses == {"torch.nn.HuberLoss"}:
            return huber
        mse = difference.square().mean((1, 2))
        return torch.where(self.l1, size.mean((1, 2)), torch.where(self.mse, mse, huber))


@dataclass
class _State:
    """One parameter's optimizer state, for every config."""

    momentum: torch.Tensor  # SGD's momentum buffer
    exp_avg: torch.Tensor  # Adam's moments, and AMSGrad's running maximum of the second
    exp_avg_sq: torch.Tensor
    max_exp_avg_sq: torch.Tensor

    @classmethod
    def zeros(cls, param: torch.Tensor) -> _State:
        zero = torch.zeros_like(param).detach()
        return cls(zero.clone(), zero.clone(), zero.clone(), zero.clone())

    def select(self, index: torch.Tensor) -> _State:
        """The state of the configs at `index` (Trainer.keep)."""
        return _State(self.momentum.index_select(0, index), self.exp_avg.index_select(0, index),
                      self.exp_avg_sq.index_select(0, index),
                      self.max_exp_avg_sq.index_select(0, index))  # fmt: skip


def _sgd(
    param: torch.Tensor, grad: torch.Tensor, state: _State, s: _Settings, step: int
) -> torch.Tensor:
    """torch.optim.SGD's step (its single-tensor implementation) for every config."""
    shape = (-1,) + (1,) * (param.dim() - 1)
    wd, momentum = s.weight_decay.view(shape), s.momentum.view(shape)
    d_p = grad
    if s.any_weight_decay:
        d_p = torch.where(wd != 0, torch.addcmul(grad, param, wd), grad)
    if s.any_momentum:
        if step == 0:  # torch.optim starts the buffer as the first step's gradient
            buf = d_p.clone()
        else:
            buf = torch.addcmul(state.momentum * momentum, d_p, s.one_minus_dampening.view(shape))
        state.momentum = buf
        nesterov = torch.addcmul(d_p, buf, momentum)
        d_p = torch.where(momentum != 0, torch.where(s.nesterov.view(shape), nesterov, buf), d_p)
    return torch.addcmul(param, d_p, s.neg_lr.view(shape))  # as param.add_(d_p, alpha=-lr):
    # the same rounding, bit for bit (param - lr * d_p rounds twice)


def _adam(
    param: torch.Tensor, grad: torch.Tensor, state: _State, s: _Settings, step: int
) -> torch.Tensor:
    """torch.optim.Adam's step (its single-tensor implementation) for every config."""
    shape = (-1,) + (1,) * (param.dim() - 1)
    wd = s.weight_decay.view(shape)
    g = grad
    if s.any_weight_decay:
        g = torch.where(wd != 0, torch.addcmul(grad, param, wd), grad)
    state.exp_avg = torch.lerp(state.exp_avg, g, s.one_minus_beta1.view(shape))
    weight2 = s.one_minus_beta2.view(shape)
    state.exp_avg_sq = torch.addcmul(state.exp_avg_sq * s.beta2.view(shape), g * weight2, g)
    count = step + 1  # bias corrections in double precision, as torch.optim's Python floats
    step_size = (s.lr64 / (1 - s.beta1_64**count)).float().to(param.device).view(shape)
    correction2_sqrt = (1 - s.beta2_64**count).sqrt().float().to(param.device).view(shape)
    state.max_exp_avg_sq = torch.maximum(state.max_exp_avg_sq, state.exp_avg_sq)
    second = torch.where(s.amsgrad.view(shape), state.max_exp_avg_sq, state.exp_avg_sq)
    denom = second.sqrt() / correction2_sqrt + s.eps.view(shape)
    return torch.addcdiv(param, state.exp_avg * step_size, denom, value=-1)  # as torch.optim


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
    all on a busy machine), all of them for large data. `num_data`: one config's points. A
    program of many small configs is not large data: its store's work (its writers, beside
    this process) outweighs its arithmetic, and an extra thread spins at each op's barrier
    while a writer holds the core it waits for (a 256-config grid on 2 cores: the process's
    CPU 14.8 s with 2 threads, 7.6 s with one; docs/performance.md §8)."""
    torch.set_num_threads(1 if num_data < SMALL_DATA_POINTS else _DEFAULT_THREADS)
