"""The engine: configs trained as one program, each its own run. A job is a program of one.

`run_program(entries, trackers, pruner)` trains configs that share their tensors' shapes (the
same data's rows and features, trainer.batch_size, the device; and how they log) as one program
of the one trainer (train.Trainer), under the one run lifecycle (lifecycle.py): every config is
its own MLflow run, ended (with its metrics, model and pictures) as soon as it is done, while the
others go on; a config that diverges stops at that epoch. job.run is `run_program` for one
config; the batched launcher's `run_programs` groups its jobs into programs. A config with a loss
or optimizer of the user's own (train.OwnStep) is a program of its own.

A sweep with a pruner (sweep.pruner) gives each program one (`pruners`: made for its jobs by the
launch); once rows are pruned, the rows that go on are gathered into smaller tensors
(`Trainer.keep`), so that pruned rows stop costing compute, not only store writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from linreg_exp import data as datasets
from linreg_exp.data import resolve
from linreg_exp.errors import TrackingError
from linreg_exp.jobspec import Job, JobResult, Pruner
from linreg_exp.lifecycle import Lifecycle
from linreg_exp.options import own_loss_and_optimizer
from linreg_exp.schema import LinregConfig, TableConfig, option_value, vectorisable
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.train import Member, OwnStep, Scaling, Trainer, resolve_device, step_kind

log = logging.getLogger(__name__)


Pruners = Callable[[list[tuple[LinregConfig, Job]]], Pruner | None]


def run_programs(
    entries: list[tuple[LinregConfig, Job]],
    trackers: Sequence[Tracker],
    pruners: Pruners | None = None,
) -> list[JobResult | Exception]:
    """Each job's result, in order; an Exception for a job that failed, as Hydra records it.

    The jobs are grouped into programs (`shape_of`; a loss or optimizer of the user's own trains
    alone). The runs are recorded through `trackers`, shared out among them: each is a process
    writing to the store (the first one the sweep's own), so that they write in parallel.
    `pruners`: a program's pruner, for its jobs (None: none prunes)."""
    results: list[JobResult | Exception | None] = [None] * len(entries)
    programs: dict[tuple[Any, ...], list[int]] = {}
    alone = 0
    for index, (cfg, job) in enumerate(entries):
        if vectorisable(cfg):
            programs.setdefault(shape_of(cfg, job), []).append(index)
        else:
            programs[("alone", index)] = [index]
            alone += 1
    if len(programs) > 1:
        log.info(
            "%d jobs in %d programs: jobs of other data shapes, trainer.batch_size, "
            "device or logging train apart%s",
            len(entries),
            len(programs),
            f"; {alone} with a loss or optimizer of their own, one by one" if alone else "",
        )
    for indices in programs.values():
        program = [entries[i] for i in indices]
        try:
            outcomes = run_program(program, trackers, pruners(program) if pruners else None)
        except TrackingError:  # the store cannot be opened, say: the sweep stops, one line
            raise
        except Exception as error:  # it could not start (its optimizer's arguments, say):
            # its jobs fail, as the basic launcher's would, and the other programs go on
            outcomes = [error for _ in indices]
        for index, result in zip(indices, outcomes, strict=True):
            results[index] = result
    assert all(result is not None for result in results)
    return cast(list[JobResult | Exception], results)


def shape_of(cfg: LinregConfig, job: Job) -> tuple[Any, ...]:
    """What the configs of one program share: their tensors' shapes, and how they log. A
    table's configs share its file and split (rows and features), synthetic ones their sizes."""
    trainer, data = cfg.trainer, cfg.data
    if isinstance(data, TableConfig):
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


def run_program(
    entries: list[tuple[LinregConfig, Job]],
    trackers: Sequence[Tracker],
    pruner: Pruner | None = None,
) -> list[JobResult | Exception]:
    """One program for configs of the same shapes (shape_of): each config's result, or the
    Exception that kept it from one. Everything that can reject the program (an optimizer's
    arguments, the device, its data, a feature standardize cannot scale, the store) does so
    before any run exists, raising. The trainer hands each epoch's rows to the lifecycle
    (Trainer.fit); with a pruner, the rows still training after an epoch that pruned some go on
    in smaller tensors (Trainer.keep), the lifecycle still seeing every row, those gone as NaN."""
    first = entries[0][0]
    members = [member_of(cfg) for cfg, _ in entries]
    own = None
    if not vectorisable(first):  # a program of one (run_programs)
        target = str(option_value(first.optimizer, "_target_"))
        loss_fn, make_optimizer = own_loss_and_optimizer(first.loss, first.optimizer, target)
        own = OwnStep(loss_fn, make_optimizer)
    device = resolve_device(first.device.name)
    if own is not None:
        own.loss_fn.to(device)
    data = [  # a table is read once a process
        datasets.load(cfg.data, cfg.seed, job.launch_dir, job.data_option)
        for cfg, job in entries
    ]  # fmt: skip
    scalings = {}
    if first.model.standardize:
        scalings = {id(splits): Scaling.of(splits.train) for splits in data}
    kind = step_kind(members, data[0].train.rows, len(data[0].features),
                     first.trainer.batch_size, own)  # fmt: skip
    life = Lifecycle([(cfg, job, splits) for (cfg, job), splits in zip(entries, data, strict=True)],
                     trackers, str(device), kind, pruner)  # fmt: skip
    if life.start():  # else every config was kept: FINISHED in an earlier launch of its sweep
        live = life.live
        try:
            with life.training():
                trainer = Trainer([members[run.entry] for run in live],
                                  [run.splits.train for run in live],
                                  first.trainer.batch_size, device,
                                  [scalings[id(run.splits)] for run in live] if scalings else None,
                                  own)  # fmt: skip
                trainer.fit(max(run.epochs for run in live), life.epoch, gather=pruner is not None)
        except TrackingError:  # the store, say: the sweep stops (run_programs)
            raise
        except Exception:  # each row still training has ended ERROR with it, the error its
            pass  # result (Lifecycle.training); the rows that had ended keep theirs
    return life.results()


def member_of(cfg: LinregConfig) -> Member:
    """A config's settings as the trainer reads them."""
    loss, optimizer = cfg.loss, cfg.optimizer

    def value(key: str, default: Any) -> Any:
        return option_value(optimizer, key, default)

    return Member(
        seed=cfg.seed,
        loss=str(option_value(loss, "_target_")),
        optimizer=str(value("_target_", "")),
        lr=float(value("lr", 0.0)),
        delta=float(option_value(loss, "delta", 1.0)),
        momentum=value("momentum", 0.0),
        dampening=value("dampening", 0.0),
        weight_decay=value("weight_decay", 0.0),
        nesterov=value("nesterov", False),
        betas=tuple(value("betas", (0.9, 0.999))),
        eps=value("eps", 1e-8),
        amsgrad=value("amsgrad", False),
    )
