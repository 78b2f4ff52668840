"""§5 mini-batch epochs: the trainer with a batch size against the textbook loop over
DataLoader(TensorDataset, shuffle=True), the same SGD steps, interleaved in this process."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.harness import Context, Row, Target, progress, rotated, seconds_of, size_label
from benchmarks.questions.loop import LR, project_fit
from linreg_exp.data import make_dataset
from linreg_exp.schema import DataConfig
from linreg_exp.train import set_cpu_threads


@dataclass(frozen=True)
class Sizes:
    mini_batch_reps: int
    mini_batch_epochs: int


FULL = Sizes(mini_batch_reps=2, mini_batch_epochs=2)
QUICK = Sizes(mini_batch_reps=1, mini_batch_epochs=1)


def dataloader_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
    """The textbook mini-batch loop: DataLoader(TensorDataset) with shuffling, same SGD steps."""
    torch.manual_seed(0)
    model, loss_fn = nn.Linear(1, 1), nn.L1Loss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(1),
    )
    for _ in range(epochs):
        total = torch.zeros(())
        for xb, yb in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(xb)
        (total / x.shape[0]).item()


def run(ctx: Context, num_data: int = 1_000_000, batch_size: int = 1024) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    progress(f"5: mini-batch epochs, num_data={num_data}, batch {batch_size}")
    data = make_dataset(DataConfig(num_data=num_data), seed=0)
    x, y = data.x, data.y
    set_cpu_threads(num_data)
    project_fit(x[:10_000], y[:10_000], 1, batch_size)  # warm-up
    dataloader_loop(x[:10_000], y[:10_000], 1, batch_size)
    epochs = sizes.mini_batch_epochs
    times: dict[str, list[float]] = {"fit": [], "loader": []}
    variants: list[tuple[str, Callable[[], object]]] = [
        ("fit", functools.partial(project_fit, x, y, epochs, batch_size)),
        ("loader", functools.partial(dataloader_loop, x, y, epochs, batch_size)),
    ]
    for rep in range(sizes.mini_batch_reps):
        for name, fn in rotated(variants, rep):
            gc.collect()
            times[name].append(seconds_of(fn) / epochs)
    return [
        Row(
            5,
            f"mini-batch epoch, n={size_label(num_data)}, batch {batch_size}: "
            "fit(batch_size=...) vs DataLoader(TensorDataset, shuffle=True)",
            times["fit"],
            times["loader"],
            "s/epoch",
            Target(0.1, True, "≤ 0.1x"),
            f"{epochs} epoch(s) a repetition, {torch.get_num_threads()} thread(s)",
        )
    ]
