"""§2 the training loop: the trainer's epochs against the tutorial's loop written by hand, and
against an analytic-gradient floor (no autograd, no module, no optimizer), in this process.

The three variants run interleaved on the same tensors with the same threads, at several data
sizes; each gives microseconds an epoch. §5 (questions/minibatch) reuses `project_fit`.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.harness import Context, Row, Target, progress, rotated, seconds_of, size_label
from linreg_exp.data import Dataset, make_dataset
from linreg_exp.history import History
from linreg_exp.schema import DataConfig
from linreg_exp.train import Member, fit, set_cpu_threads, step_kind

LR = 0.01


@dataclass(frozen=True)
class Sizes:
    reps: int
    loop_sizes: tuple[tuple[int, int], ...]  # (num_data, epochs)


FULL = Sizes(reps=5, loop_sizes=((1_000, 500), (100_000, 100), (1_000_000, 20), (10_000_000, 5)))
QUICK = Sizes(reps=2, loop_sizes=((1_000, 200), (100_000, 50), (1_000_000, 10)))


def eager_loop(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """The tutorial's loop, written by hand."""
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(1, 1), nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()


def analytic_floor(x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    """The L1 gradient by hand on raw tensors: no autograd, no module, no optimizer."""
    w, b = torch.zeros(()), torch.zeros(())
    for _ in range(epochs):
        r = w * x + b - y
        s = r.sign()
        loss = r.abs().mean()
        gw = (s * x).mean()
        gb = s.mean()
        w -= LR * gw
        b -= LR * gb
        loss.item()


def project_fit(
    x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int | None = None
) -> History:
    """The trainer's epochs (a job's one config) into a History, as a job keeps them."""
    member = Member(0, "torch.nn.L1Loss", "torch.optim.SGD", LR)
    history = History(step=step_kind([member], x.shape[0], x.shape[1], batch_size))
    for metrics in fit(Dataset(x, y), member, epochs, batch_size):
        history.append(metrics)
    return history


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    rows: list[Row] = []
    for num_data, epochs in sizes.loop_sizes:
        progress(f"2: training loop, num_data={num_data}, {epochs} epochs x {sizes.reps}")
        data = make_dataset(DataConfig(num_data=num_data), seed=0)
        x, y = data.x, data.y
        set_cpu_threads(num_data)  # as run_experiment does, for every variant
        step = project_fit(x, y, 2).step  # warm-up
        eager_loop(x, y, 2)
        analytic_floor(x, y, 2)
        times: dict[str, list[float]] = {"fit": [], "eager": [], "floor": []}
        variants: list[tuple[str, Callable[[], object]]] = [
            ("fit", functools.partial(project_fit, x, y, epochs)),
            ("eager", functools.partial(eager_loop, x, y, epochs)),
            ("floor", functools.partial(analytic_floor, x, y, epochs)),
        ]
        for rep in range(sizes.reps):
            for name, fn in rotated(variants, rep):
                gc.collect()
                times[name].append(seconds_of(fn) / epochs * 1e6)
        note = (
            f"{torch.get_num_threads()} thread(s), fit's step: {step}; fit's epochs into a History"
        )
        label = size_label(num_data)
        rows.append(
            Row(
                2,
                f"train.fit vs eager tutorial loop, n={label}",
                times["fit"],
                times["eager"],
                "µs/epoch",
                Target(1.2, True, "≤ 1.2x") if num_data == 1_000 else None,
                note,
            )
        )
        rows.append(
            Row(
                2,
                f"train.fit vs analytic-gradient floor, n={label}",
                times["fit"],
                times["floor"],
                "µs/epoch",
                Target(2.0, True, "≤ 2x") if num_data >= 1_000_000 else None,
                f"{note}; floor: the plain analytic loop (≈8 passes over the data an epoch)",
            )
        )
        del data, x, y
    return rows
