"""Many jobs as one program: what job.run does for one job, for a group of them.

`run_batch(entries, trackers)` takes jobs as job.run does (a composed config and a Job each),
groups those whose tensors share shapes (the same data's rows and features, trainer.batch_size,
the device; and how they log) and trains each group as one batched program (train_batched.py).
The run lifecycle is the one every job has (lifecycle.py), for N rows: every config is still its
own MLflow run, ended (with its metrics, model and pictures) as soon as it is done, while the
others go on; a config that diverges stops at that epoch. Jobs that train_batched cannot run (a
loss or optimizer of your own) run one by one through job.run.

A sweep with a pruner (sweep.pruner) gives each program one (`pruners`: made for its jobs by the
launch); once rows are pruned, the rows that go on are gathered into smaller tensors
(`Batch.keep`), so that pruned rows stop costing compute, not only store writes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from omegaconf import DictConfig

from linreg_exp import job as one
from linreg_exp.data import Scaling, resolve
from linreg_exp.errors import LinregError
from linreg_exp.jobspec import Job, JobResult, Pruner
from linreg_exp.lifecycle import Lifecycle, load_data
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.train import resolve_device, set_cpu_threads
from linreg_exp.train_batched import LOSSES, OPTIMIZERS, Batch, Member

log = logging.getLogger(__name__)


Pruners = Callable[[list[tuple[DictConfig, Job]]], Pruner | None]


def run_batch(
    entries: list[tuple[DictConfig, Job]],
    trackers: Sequence[Tracker],
    pruners: Pruners | None = None,
) -> list[JobResult | Exception]:
    """Each job's result, in order; an Exception for a job that failed, as Hydra records it.

    The runs are recorded through `trackers`, shared out among them: each is a process writing
    to the store (the first one the sweep's own), so that they write in parallel. `pruners`: a
    program's pruner, for its jobs (None: none prunes)."""
    results: list[JobResult | Exception | None] = [None] * len(entries)
    groups: dict[tuple[Any, ...], list[int]] = {}
    alone = []
    for index, (cfg, job) in enumerate(entries):
        if cfg.loss._target_ in LOSSES and cfg.optimizer._target_ in OPTIMIZERS:
            groups.setdefault(shape_of(cfg, job), []).append(index)
        else:
            alone.append(index)
    if len(groups) > 1 or alone:
        log.info(
            "%d jobs in %d programs: jobs of other data shapes, trainer.batch_size, "
            "device or logging train apart%s",
            len(entries),
            len(groups) + len(alone),
            f"; {len(alone)} with a loss or optimizer of their own, one by one" if alone else "",
        )
    for indices in groups.values():
        group = [entries[i] for i in indices]
        try:
            outcomes = run_group(group, trackers, pruners(group) if pruners else None)
        except LinregError:  # the store cannot be opened, say: the sweep stops, one line
            raise
        except Exception as error:  # the group's runs ended ERROR; the other groups go on
            outcomes = [error for _ in indices]
        for index, result in zip(indices, outcomes, strict=True):
            results[index] = result
    for index in alone:
        try:
            results[index] = one.run(*entries[index], trackers[0])
        except Exception as error:
            results[index] = error
    assert all(result is not None for result in results)
    return cast(list[JobResult | Exception], results)


def shape_of(cfg: DictConfig, job: Job) -> tuple[Any, ...]:
    """What the configs of one program share: their tensors' shapes, and how they log. A
    table's configs share its file and split (rows and features), synthetic ones their sizes."""
    trainer, data = cfg.trainer, cfg.data
    if "path" in data:
        path = str(resolve(data.path, job.launch_dir))
        source: tuple[Any, ...] = (path, data.target, str(data.features), data.val_fraction,
                                   data.val_path)  # fmt: skip
    else:
        source = (data.num_data, data.num_features)
    return (
        source,
        cfg.model.standardize,
        trainer.batch_size,
        cfg.device.name,
        trainer.log_every_n_epochs,
        cfg.mlflow.log_every_seconds,
    )


def run_group(
    entries: list[tuple[DictConfig, Job]],
    trackers: Sequence[Tracker],
    pruner: Pruner | None = None,
) -> list[JobResult | Exception]:
    """One program for configs of the same shapes (shape_of). The rows still training after
    an epoch that pruned some go on in a smaller batch (their rows gathered: Batch.keep); the
    lifecycle is still handed every row, those gone as NaN, which it no longer reads."""
    first = entries[0][0]
    device = resolve_device(first.device.name)
    data = [load_data(cfg, job) for cfg, job in entries]  # a table is read once a process
    set_cpu_threads(data[0].train.rows * len(entries))
    # a feature standardize cannot scale is refused before any run exists, as for one job
    scalings = {}
    if first.model.standardize:
        scalings = {id(splits): Scaling.of(splits.train) for splits in data}
    life = Lifecycle([(cfg, job, splits) for (cfg, job), splits in zip(entries, data, strict=True)],
                     trackers, str(device), "batched", pruner)  # fmt: skip
    live = life.start()
    if live:
        try:
            with life.training():
                train(life, first.trainer.batch_size, device, scalings, pruner)
        except LinregError:  # the store, say: the sweep stops (run_batch)
            raise
        except Exception:  # each row still training has ended ERROR with it, the error its
            pass  # result (Lifecycle.training); the rows that had ended keep theirs
    return life.results()


def train(
    life: Lifecycle, batch_size: int | None, device: torch.device,
    scalings: dict[int, Scaling], pruner: Pruner | None,
) -> None:  # fmt: skip
    """Train the lifecycle's rows as one program, handing it each epoch's rows."""
    live = life.live
    batch = Batch([member_of(r.cfg) for r in live], [r.splits.train for r in live], batch_size,
                  device, [scalings[id(r.splits)] for r in live] if scalings else None)  # fmt: skip
    kept = list(range(len(live)))  # the batch's rows, as the lifecycle numbers them
    for epoch in range(max(r.epochs for r in live)):
        values = batch.step(life.active[kept] if len(kept) < len(live) else life.active)
        rows = torch.cat(  # [N, 2 + d]: loss, weights, bias (params.epoch_names)
            (values["loss"].view(-1, 1), values["weight"], values["bias"].view(-1, 1)), 1
        )
        if len(kept) < len(live):
            every = torch.full((len(live), rows.shape[1]), math.nan)
            every[kept] = rows
            rows = every
        if not life.epoch(epoch, rows):
            break
        going_on = [k for k, row in enumerate(kept) if life.active[row]]
        if pruner is not None and len(going_on) < len(kept):
            batch.keep(going_on)
            kept = [kept[k] for k in going_on]


def member_of(cfg: DictConfig) -> Member:
    """A config's settings as train_batched reads them."""
    optimizer = cfg.optimizer
    return Member(
        seed=cfg.seed,
        loss=cfg.loss._target_,
        optimizer=optimizer._target_,
        lr=optimizer.lr,
        delta=cfg.loss.get("delta", 1.0),
        momentum=optimizer.get("momentum", 0.0),
        dampening=optimizer.get("dampening", 0.0),
        weight_decay=optimizer.get("weight_decay", 0.0),
        nesterov=optimizer.get("nesterov", False),
        betas=tuple(optimizer.get("betas", (0.9, 0.999))),  # type: ignore[arg-type]
        eps=optimizer.get("eps", 1e-8),
        amsgrad=optimizer.get("amsgrad", False),
    )
