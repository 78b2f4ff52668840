"""Many jobs as one program: what job.run does for one job, for a group of them.

`run_batch(entries, tracker)` takes jobs as job.run does (a composed config and a Job each),
groups those whose tensors share shapes (data.num_data, trainer.batch_size, the device; and
how they log) and trains each group as one batched program (train_batched.py). Every config is
still its own MLflow run: its params, tags, dataset and config hash, its epochs streamed (every
run's together, RunGroup), its outcome, metrics, model and pictures. A config that diverges
stops at that epoch while the others go on. Jobs that train_batched cannot run (a loss or
optimizer of your own) run one by one through job.run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from omegaconf import DictConfig

from linreg_exp import job as one
from linreg_exp import signals
from linreg_exp.data import Scaling, Splits, resolve
from linreg_exp.errors import LinregError
from linreg_exp.history import History
from linreg_exp.jobspec import Job, JobResult, objective
from linreg_exp.params import epoch_names, model_payload
from linreg_exp.tracking.messages import Reply, Task, describe_error
from linreg_exp.tracking.recorder import RunGroup, Tracker
from linreg_exp.train import resolve_device, set_cpu_threads
from linreg_exp.train_batched import LOSSES, OPTIMIZERS, Batch, Member, diverged
from linreg_exp.vocab import Metric, Outcome, Tag

log = logging.getLogger(__name__)

SAMPLE_SIZE = 512  # epochs a config's trajectory keeps (its pictures draw no more)


def run_batch(
    entries: list[tuple[DictConfig, Job]], trackers: Sequence[Tracker]
) -> list[JobResult | Exception]:
    """Each job's result, in order; an Exception for a job that failed, as Hydra records it.

    The runs are recorded through `trackers`, shared out among them: each is a process writing
    to the store (the first one the sweep's own), so that they write in parallel."""
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
            outcomes = run_group(group, trackers)
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


@dataclass
class _Config:
    """One config of a group, from its start to its end."""

    index: int  # its place in the group
    cfg: DictConfig
    job: Job
    key: str  # its run's key in the group
    runs: RunGroup  # the group of runs its run is recorded in (one for each tracker)
    splits: Splits
    outcome: Outcome | None = None
    diverged_at: int | None = None
    divergence: str | None = None
    finished: bool = False
    result: JobResult | None = None
    error: Exception | None = None  # why it has no result
    extra: dict[str, Any] = field(default_factory=dict)


def run_group(
    entries: list[tuple[DictConfig, Job]], trackers: Sequence[Tracker]
) -> list[JobResult | Exception]:
    """One program for configs of the same shapes (shape_of)."""
    first, tracker = entries[0][0], trackers[0]
    device = resolve_device(first.device.name)
    data = [one.load_data(cfg, job) for cfg, job in entries]  # a table is read once
    set_cpu_threads(data[0].train.rows * len(entries))
    opened = tracker.opened()  # else TrackingError, before any run exists
    # no system metrics sampler a run: the group's runs share one machine, and N samplers
    requests = [
        dataclasses.replace(
            one.start_request(cfg, job, str(device), tracker.tracking_uri, splits),
            system_metrics=False,
        )
        for (cfg, job), splits in zip(entries, data, strict=True)
    ]
    started: list[dict[str, Future[Reply]]] = [{} for _ in trackers]
    for index, request in enumerate(requests):  # in turn, so that every tracker is busy
        writer = index % len(trackers)
        started[writer][request.run] = trackers[writer].begin_run(request)
    groups = []  # the runs, shared out among the trackers
    for each, theirs in zip(trackers, started, strict=True):
        group = RunGroup(
            each, theirs, first.trainer.log_every_n_epochs, first.mlflow.log_every_seconds
        )
        group.names = epoch_names(data[0].features)
        groups.append(group)
    configs = [
        _Config(index, cfg, job, request.run, groups[index % len(groups)], data[index])
        for index, ((cfg, job), request) in enumerate(zip(entries, requests, strict=True))
    ]
    if opened.resumed:
        for config in configs:
            if (kept := config.runs.started(config.key)).kept is not None:
                log.info(
                    "job %s skipped: FINISHED before as run %s", config.job.number, kept.run_id
                )
                value = objective(
                    Outcome.COMPLETED,
                    kept.kept,
                    config.cfg.sweep.objective,
                    config.cfg.sweep.direction,
                )
                config.result = JobResult(Outcome.COMPLETED, kept.run_id, kept.kept, value, True)
                config.finished = True
    live = [config for config in configs if not config.finished]
    for index, config in enumerate(live):
        config.index = index  # its place in the program
    if live:
        _Training(live, device, tracker, opened.experiment_id).run()
    return [config.result or cast(Exception, config.error) for config in configs]


class _Training:
    """A group's configs trained together, each finished (its run ended) when it is done."""

    def __init__(
        self, configs: list[_Config], device: torch.device, tracker: Tracker, experiment_id: str
    ) -> None:
        self.configs, self.device = configs, device
        self.tracker, self.experiment_id = tracker, experiment_id
        self.names = epoch_names(configs[0].splits.features)
        self.history = _Trajectories(len(configs), SAMPLE_SIZE, self.names)
        self.started = time.perf_counter()
        self.batch: Batch | None = None

    def run(self) -> None:
        try:
            scalings = None
            if self.configs[0].cfg.model.standardize:
                scalings = [Scaling.of(c.splits.train) for c in self.configs]
            self.batch = Batch(
                [member_of(c.cfg) for c in self.configs],
                [c.splits.train for c in self.configs],
                self.configs[0].cfg.trainer.batch_size,
                self.device,
                scalings,
            )
            self._train(self.batch)
        except KeyboardInterrupt as stop:  # every run ends, each with the epochs it had
            for group in {id(c.runs): c.runs for c in self.configs}.values():
                group.tracker.stop_waiting()  # a store that does not answer now: spool
            done = sum(c.outcome is not None for c in self.configs)
            print(
                f"\nlinreg_exp: interrupted after {self.history.epochs} epochs "
                f"({done} of {len(self.configs)} configs done)",
                file=sys.stderr,
            )
            for config in self.configs:
                self._finish_each(
                    config,
                    config.outcome or Outcome.INTERRUPTED,
                    {Tag.STOPPED_BY: signals.describe(stop)},
                )
            raise
        except Exception as error:
            for config in self.configs:
                self._finish_each(config, Outcome.ERROR, {Tag.ERROR: describe_error(error)})
            raise
        for config in self.configs:
            self._finish_each(config, cast(Outcome, config.outcome))

    def _train(self, batch: Batch) -> None:
        configs, n = self.configs, len(self.configs)
        limits = torch.tensor([c.cfg.trainer.epochs for c in configs])
        factors = torch.tensor([c.cfg.trainer.divergence_factor for c in configs])
        active = torch.ones(n, dtype=torch.bool)
        first: torch.Tensor | None = None
        keys = [c.key for c in configs]
        for epoch in range(int(limits.max())):
            values = batch.step(active)
            loss = values[Metric.LOSS]
            first = loss.clone() if first is None else first
            blown = active & diverged(first, loss, factors)
            stacked = torch.cat(  # [N, 2 + d]: loss, weights, bias (params.epoch_names)
                (loss.view(-1, 1), values["weight"], values["bias"].view(-1, 1)), dim=1
            )
            moving = active.nonzero().view(-1).tolist()
            rows = stacked.tolist()
            streams: dict[int, tuple[RunGroup, list[str], list[tuple[float, ...]]]] = {}
            for i in moving:
                group = configs[i].runs
                _, their_keys, their_rows = streams.setdefault(id(group), (group, [], []))
                their_keys.append(keys[i])
                their_rows.append(tuple(rows[i]))
            for group, their_keys, their_rows in streams.values():
                group.epoch(epoch, their_keys, their_rows)
            self.history.record(epoch, stacked, active)
            for i in blown.nonzero().view(-1).tolist():
                config = configs[i]
                config.outcome, config.diverged_at = Outcome.DIVERGED, epoch
                value, start = float(loss[i]), float(first[i])
                config.divergence = (
                    f"loss became non-finite at epoch {epoch}"
                    if not math.isfinite(value)
                    else f"loss {value:.4g} at epoch {epoch} exceeds "
                    f"{float(factors[i]):g} x the first epoch's {start:.4g}"
                )
            done = active & ~blown & (epoch + 1 >= limits)
            for i in done.nonzero().view(-1).tolist():
                configs[i].outcome = Outcome.COMPLETED
            active &= ~blown & ~done
            if not bool(active.any()):
                break

    def _finish_each(
        self, config: _Config, outcome: Outcome, tags: dict[str, str] | None = None
    ) -> None:
        """_finish, a config's error its own: every other config's run still ends."""
        try:
            self._finish(config, outcome, tags)
        except Exception as error:  # its run, if still open, ends KILLED with its tracker
            config.error = error

    def _finish(
        self, config: _Config, outcome: Outcome, tags: dict[str, str] | None = None
    ) -> None:
        """End the config's run with what it has: metrics, tags, model and pictures."""
        if config.finished:
            return
        config.finished = True
        index = config.index
        history = self.history.of(index, outcome, config)
        tags = {Tag.TRAIN_STEP: "batched", **(tags or {})}
        if outcome is Outcome.DIVERGED:
            tags[Tag.DIVERGED_AT_EPOCH] = str(config.diverged_at)
            tags[Tag.FAILURE] = f"diverged: {config.divergence}"
        metrics: dict[str, float] = {}
        pictures, model = None, None
        if self.batch is not None and outcome in (Outcome.COMPLETED, Outcome.DIVERGED):
            splits, cfg = config.splits, config.cfg
            reference = one.compute_reference(splits.train, cfg, one.build_loss(cfg.loss))
            metrics = one.final_metrics(history, reference, cfg.loss.name, splits.val)
            metrics["train_seconds"] = time.perf_counter() - self.started
            if cfg.plots.enabled and history.epochs_done:
                config.job.output_dir.mkdir(parents=True, exist_ok=True)
                pictures = Task(
                    "linreg_exp.report.pictures:draw",
                    one.run_pictures(cfg, config.job, splits, history, reference),
                )
            if outcome is Outcome.COMPLETED:
                features = splits.features
                model = model_payload(history.final_coefficients(features), features)
            config.extra["reference"] = reference
        config.runs.finish(config.key, outcome, metrics, tags, [], pictures, model)
        value = objective(outcome, metrics, config.cfg.sweep.objective, config.cfg.sweep.direction)
        run_id = config.runs.started(config.key).run_id
        config.result = JobResult(outcome, run_id, metrics, value)
        if "reference" in config.extra:
            one.tell(
                config.cfg,
                config.job,
                history,
                config.extra["reference"],
                config.result,
                self.tracker.tracking_uri,
                self.experiment_id,
            )


class _Trajectories:
    """Every config's trajectory, sampled as history.History samples one (the stride doubles
    as the sample fills), in one [N, capacity, metrics] tensor: bounded memory, however many
    configs and epochs. All configs train from epoch 0, so they share the sampled epochs."""

    def __init__(self, n: int, capacity: int, names: tuple[str, ...]) -> None:
        self.capacity, self.stride, self.epochs, self.names = capacity, 1, 0, names
        self.sampled: list[int] = []  # the sampled epochs
        self.values = torch.empty(n, capacity, len(names))
        self.last = torch.full((n, len(names)), math.nan)
        self.last_epoch = torch.full((n,), -1, dtype=torch.long)

    def record(self, epoch: int, stacked: torch.Tensor, active: torch.Tensor) -> None:
        self.epochs = epoch + 1
        self.last[active] = stacked[active]
        self.last_epoch[active] = epoch
        if epoch % self.stride:
            return
        self.values[:, len(self.sampled)] = stacked
        self.sampled.append(epoch)
        if len(self.sampled) >= self.capacity:  # keep every other point, the first always
            kept = self.values[:, 0 : len(self.sampled) : 2].clone()
            self.values[:, : kept.shape[1]] = kept
            self.sampled = self.sampled[::2]
            self.stride *= 2

    def of(self, index: int, outcome: Outcome, config: _Config) -> History:
        """One config's History: its sampled epochs up to its last, and its last."""
        last_epoch = int(self.last_epoch[index])
        history = History(
            step="batched",
            names=self.names,
            stride=self.stride,
            outcome=outcome,
            diverged_at_epoch=config.diverged_at,
            divergence=config.divergence,
        )
        if last_epoch < 0:
            return history
        count = sum(1 for e in self.sampled if e <= last_epoch)
        rows = self.values[index, :count].tolist()
        history.sample = [
            (epoch, tuple(row)) for epoch, row in zip(self.sampled, rows, strict=False)
        ]
        history.last = (last_epoch, tuple(self.last[index].tolist()))
        return history


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
