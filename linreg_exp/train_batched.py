"""Many configs trained as one program: nn.Linear(d, 1), N times over.

Each config keeps what makes it itself: its seed (so its own data and initial line), loss (L1,
MSE, Huber with its delta), optimizer (SGD with momentum, dampening, weight decay, Nesterov; Adam
with betas, eps, weight decay, AMSGrad), learning rate and number of epochs. Their parameters
are stacked (weights `[N, 1, d]`, biases `[N, 1]`) and trained together: one batched forward
(`baddbmm`, the batched form of nn.Linear's `addmm`), one backward through each config's own
loss, one vectorised update that follows torch.optim's SGD and Adam step by step. So each config
ends where train.fit would take it, to the last bit or nearly (tests/test_batched.py).

A config whose epochs are done, or which diverged, stops being updated (a mask); the caller
decides which (`Batch.step(active)`). A mask still computes every row: `Batch.keep(rows)` gathers
the rows that go on into smaller tensors (a pruned sweep's survivors), each going on exactly as it
would have. Nothing here knows MLflow or Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from linreg_exp.data import Dataset, Scaling

LOSSES = ("torch.nn.L1Loss", "torch.nn.MSELoss", "torch.nn.HuberLoss")
OPTIMIZERS = ("torch.optim.SGD", "torch.optim.Adam")


@dataclass(frozen=True)
class Member:
    """One config of a batch, as plain values (batch.py reads them from its config)."""

    seed: int
    loss: str  # one of LOSSES
    optimizer: str  # one of OPTIMIZERS
    lr: float
    delta: float = 1.0  # Huber's
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False


class Batch:
    """N configs on shared data shapes (rows and features, and the device), trained one epoch
    at a time: `step(active)` returns each config's loss (before the step), weights and bias
    (after it), as train.fit does for one. Full-batch or mini-batch (`batch_size`). With
    `scalings`, each config trains on its features scaled, and reports its weights in the
    features' own units."""

    def __init__(
        self,
        members: list[Member],
        datasets: list[Dataset],
        batch_size: int | None,
        device: torch.device,
        scalings: list[Scaling] | None = None,
    ) -> None:
        self.members, self.n, self.device = members, datasets[0].rows, device
        if scalings is not None:
            datasets = [s.apply(d) for s, d in zip(scalings, datasets, strict=True)]
        self.scaling = None
        if scalings is not None:
            self.scaling = Scaling(torch.stack([s.mean for s in scalings]).to(device),
                                   torch.stack([s.std for s in scalings]).to(device))  # fmt: skip
        self.x = torch.stack([s.x for s in datasets]).to(device)  # [N, n, d]
        self.y = torch.stack([s.y for s in datasets]).to(device)
        features = self.x.shape[2]
        weights, biases = [], []
        for member in members:  # each model initialised as train.fit does, from its seed
            torch.manual_seed(member.seed)
            line = nn.Linear(features, 1)
            weights.append(line.weight.detach())
            biases.append(line.bias.detach())
        self.weight = torch.stack(weights).to(device).requires_grad_()  # [N, 1, d]
        self.bias = torch.stack(biases).to(device).requires_grad_()  # [N, 1]
        self.batch_size = None if batch_size is None or batch_size >= self.n else batch_size
        self.shuffles = [torch.Generator().manual_seed(m.seed + 1) for m in members]
        self.epochs_done = 0
        self._setting = _Settings(members, device)
        self._states = (_State.zeros(self.weight), _State.zeros(self.bias))
        self._steps = 0  # optimizer steps so far: the same for every config still active

    def step(self, active: torch.Tensor) -> dict[str, torch.Tensor]:
        """One epoch of every config: loss [N], weight [N, d], bias [N] (the parameter record);
        only the `active` ones ([N] bool) move."""
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

    def _mini_batches(self, active: torch.Tensor) -> torch.Tensor:
        """A pass over each config's own shuffled index slices, as train.fit's mini-batches."""
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

    def _update(self, x: torch.Tensor, y: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Forward, backward and one optimizer step on this batch; returns each config's loss."""
        s = self._setting
        prediction = torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))
        difference = prediction - y
        size = difference.abs()
        huber = torch.where(size < s.delta, 0.5 * difference.square(),
                            s.delta * (size - 0.5 * s.delta))  # fmt: skip
        loss = torch.where(s.l1, size.mean((1, 2)),
                           torch.where(s.mse, difference.square().mean((1, 2)),
                                       huber.mean((1, 2))))  # fmt: skip
        self.weight.grad = self.bias.grad = None
        loss.sum().backward()  # type: ignore[no-untyped-call]  # each from its own loss
        with torch.no_grad():
            for param, state in zip((self.weight, self.bias), self._states, strict=True):
                grad = param.grad
                assert grad is not None
                shape = (-1,) + (1,) * (param.dim() - 1)
                new = _sgd(param, grad, state, s, self._steps)
                if s.any_adam:
                    adam = _adam(param, grad, state, s, self._steps)
                    new = torch.where(s.adam.view(shape), adam, new)
                param.copy_(torch.where(active.view(shape), new, param))
        self._steps += 1
        return loss.detach()


class _Settings:
    """Each config's hyperparameters as [N] tensors."""

    def __init__(self, members: list[Member], device: torch.device) -> None:
        def column(values: list[float], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.tensor(values, dtype=dtype, device=device)

        self.l1 = column([m.loss == "torch.nn.L1Loss" for m in members], torch.bool)
        self.mse = column([m.loss == "torch.nn.MSELoss" for m in members], torch.bool)
        self.delta = column([m.delta for m in members]).view(-1, 1, 1)
        self.adam = column([m.optimizer == "torch.optim.Adam" for m in members], torch.bool)
        self.any_adam, self.any_momentum = bool(self.adam.any()), any(m.momentum for m in members)
        self.neg_lr = column([-m.lr for m in members])
        self.lr64 = column([m.lr for m in members], torch.float64)
        self.momentum = column([m.momentum for m in members])
        # torch.optim computes 1 - x in double precision (its Python floats), then as float32
        self.one_minus_dampening = column([1 - m.dampening for m in members])
        self.weight_decay = column([m.weight_decay for m in members])
        self.nesterov = column([m.nesterov for m in members], torch.bool)
        self.one_minus_beta1 = column([1 - m.betas[0] for m in members])
        self.beta2 = column([m.betas[1] for m in members])
        self.one_minus_beta2 = column([1 - m.betas[1] for m in members])
        self.beta1_64 = column([m.betas[0] for m in members], torch.float64)
        self.beta2_64 = column([m.betas[1] for m in members], torch.float64)
        self.eps = column([m.eps for m in members])
        self.amsgrad = column([m.amsgrad for m in members], torch.bool)


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
        """The state of the configs at `index` (Batch.keep)."""
        return _State(self.momentum.index_select(0, index), self.exp_avg.index_select(0, index),
                      self.exp_avg_sq.index_select(0, index),
                      self.max_exp_avg_sq.index_select(0, index))  # fmt: skip


def _sgd(
    param: torch.Tensor, grad: torch.Tensor, state: _State, s: _Settings, step: int
) -> torch.Tensor:
    """torch.optim.SGD's step (its single-tensor implementation) for every config."""
    shape = (-1,) + (1,) * (param.dim() - 1)
    wd, momentum = s.weight_decay.view(shape), s.momentum.view(shape)
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
    g = torch.where(wd != 0, torch.addcmul(grad, param, wd), grad)
    state.exp_avg = torch.lerp(state.exp_avg, g, s.one_minus_beta1.view(shape))
    weight2 = s.one_minus_beta2.view(shape)
    state.exp_avg_sq = torch.addcmul(state.exp_avg_sq * s.beta2.view(shape), g * weight2, g)
    count = step + 1  # bias corrections in double precision, as torch.optim's Python floats
    step_size = (s.lr64 / (1 - s.beta1_64**count)).float().view(shape)
    correction2_sqrt = (1 - s.beta2_64**count).sqrt().float().view(shape)
    state.max_exp_avg_sq = torch.maximum(state.max_exp_avg_sq, state.exp_avg_sq)
    second = torch.where(s.amsgrad.view(shape), state.max_exp_avg_sq, state.exp_avg_sq)
    denom = second.sqrt() / correction2_sqrt + s.eps.view(shape)
    return torch.addcdiv(param, state.exp_avg * step_size, denom, value=-1)  # as torch.optim
