"""One run lifecycle for every engine: configs trained together, each its own MLflow run.

A `Lifecycle` owns the runs of N configs (a single job is N = 1; a batched sweep's program is N
rows) from their start to their end: it opens them (params, tags, config, dataset; a resumed
sweep's FINISHED ones are kept, not run again), streams every epoch of the ones still training,
decides when each is done (its epochs, or diverged), and ends each as soon as it is: held-out
scores, the yardsticks, its model and pictures, its outcome. A stop (SIGINT, SIGTERM, a scheduler's
signal) or an error ends every run still training, each with the epochs it had. The engine only
trains (engine.py: train.Trainer, a job's one config or a batched sweep's N): the trainer hands
each epoch's rows to `epoch`, which answers the rows that still train.

    life = Lifecycle([(cfg, job, splits), ...], trackers, device, step="autograd")
    if life.start():                      # the runs that train (the others: kept, or none)
        with life.training():             # a stop or an error ends them here
            trainer.fit(epochs, life.epoch)   # rows: loss, weights, bias (params.epoch_names)
    results = life.results()              # a JobResult, or the Exception, a config

With a pruner (the sweep's, jobspec.Pruner: a job's own, or one a batched program's), every
`sweep.report_every` epochs each row still training scores its objective (`sweep.objective`:
held-out with its current parameters, or its training loss), logged as that metric at that
epoch's step; the pruner names the rows to stop, and each ends there, FINISHED, `pruned`.

Nothing here imports MLflow: the trackers own the runs, in a helper process or in this one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

import torch

from linreg_exp import signals
from linreg_exp.data import Dataset, Splits
from linreg_exp.history import SAMPLE_SIZE, History, LinearParams, divergence
from linreg_exp.jobspec import Job, JobResult, Pruner, objective
from linreg_exp.options import build_loss
from linreg_exp.params import Coefficients, epoch_names, model_payload
from linreg_exp.progress import Progress
from linreg_exp.report.pictures import RunPictures
from linreg_exp.report.pictures import draw as draw_pictures
from linreg_exp.schema import LinregConfig, loss_name
from linreg_exp.scoring import (
    Reference,
    compute_reference,
    final_metrics,
    held_out_scores,
    predict,
)
from linreg_exp.tracking import uris
from linreg_exp.tracking.messages import (
    Artifact,
    DatasetInfo,
    Reply,
    StartRun,
    Task,
    describe_error,
)
from linreg_exp.tracking.recorder import RunGroup, Tracker, finished
from linreg_exp.tracking.spool import is_offline
from linreg_exp.vocab import Metric, Outcome, Tag

log = logging.getLogger(__name__)

PICTURE_POINTS = 2000  # at most this many data points are drawn: more only slow the plots
MAX_TOLD = 12  # parameters the console lists after a run
MANY_SAMPLE_SIZE = 512  # epochs each of many configs keeps (its pictures draw no more)


@dataclass
class _Run:
    """One config of the program, from its start to its end."""

    cfg: LinregConfig
    job: Job
    splits: Splits
    key: str  # its run's key in its group
    group: RunGroup  # the runs its run is streamed with (one group a tracker)
    entry: int = -1  # its place among the program's configs
    index: int = -1  # its row among the configs that train
    tracker: Tracker | None = None  # its group's
    outcome: Outcome | None = None  # set when it stops training
    diverged_at: int | None = None
    pruned_at: int | None = None
    divergence: str | None = None
    first_loss: float | None = None
    last: tuple[int, tuple[float, ...]] | None = None  # its last epoch
    ending: Future[Reply] | None = None  # its end, on its way to the store
    result: JobResult | None = None
    error: Exception | None = None  # why it has no result

    @property
    def epochs(self) -> int:
        return int(self.cfg.trainer.epochs)


class Lifecycle:
    """The runs of one program (see the module docstring)."""

    def __init__(
        self,
        entries: Sequence[tuple[LinregConfig, Job, Splits]],
        trackers: Sequence[Tracker],
        device: str,
        step: str,
        pruner: Pruner | None = None,
    ) -> None:
        """`pruner`: a program's; a single job's comes with it (Job.pruner)."""
        self.entries, self.trackers, self.device, self.step = entries, trackers, device, step
        if pruner is None and len(entries) == 1:
            pruner = entries[0][1].pruner
        self.pruner = pruner
        self.runs: list[_Run] = []
        self.live: list[_Run] = []  # the runs that train, in row order
        self.active = torch.ones(0, dtype=torch.bool)  # which rows still train
        self._moving: list[int] = []  # the same, as row numbers
        self.experiment_id = ""
        self.started = time.perf_counter()
        self.trajectories = Trajectories(0, 1, ())
        self.progress = Progress(0, 0)
        self._ended = self._pruned = 0  # runs that stopped training, and of them pruned

    @property
    def tracker(self) -> Tracker:
        return self.trackers[0]

    def start(self) -> list[_Run]:
        """Open every config's run (in turn on each tracker, so that all write at once); the
        runs that train. Raises TrackingError, before any run exists, if the store cannot open."""
        opened = self.tracker.opened()
        self.experiment_id = opened.experiment_id
        many = len(self.entries) > 1  # one machine, one system-metrics sampler a run at most
        first = self.entries[0][0]
        uri = self.tracker.tracking_uri
        requests = [start_request(cfg, job, self.device, uri, splits, not many)
                    for cfg, job, splits in self.entries]  # fmt: skip
        started: list[dict[str, Future[Reply]]] = [{} for _ in self.trackers]
        for index, request in enumerate(requests):
            writer = index % len(self.trackers)
            started[writer][request.run] = self.trackers[writer].begin_run(request)
        names = epoch_names(self.entries[0][2].features)
        groups = []
        for tracker, theirs in zip(self.trackers, started, strict=True):
            group = RunGroup(tracker, theirs, first.trainer.log_every_n_epochs,
                             first.mlflow.log_every_seconds)  # fmt: skip
            group.names = names
            groups.append(group)
        for index, ((cfg, job, splits), request) in enumerate(zip(self.entries, requests,
                                                                  strict=True)):  # fmt: skip
            run = _Run(cfg, job, splits, request.run, groups[index % len(groups)], entry=index,
                       tracker=self.trackers[index % len(groups)])  # fmt: skip
            self.runs.append(run)
            if opened.resumed and (kept := run.group.started(run.key)).kept is not None:
                log.info("job %s skipped: FINISHED before as run %s", job.number, kept.run_id)
                value = objective(Outcome.COMPLETED, kept.kept, cfg.sweep.objective,
                                  cfg.sweep.direction)  # fmt: skip
                run.result = JobResult(Outcome.COMPLETED, kept.run_id, kept.kept, value, True)
                continue
            run.index = len(self.live)
            self.live.append(run)
        capacity = MANY_SAMPLE_SIZE if many else SAMPLE_SIZE
        self.trajectories = Trajectories(len(self.live), capacity, names)
        self.active = torch.ones(len(self.live), dtype=torch.bool)
        self._moving = list(range(len(self.live)))
        return self.live

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Train inside: a stop or an error ends every run still training, with its epochs."""
        self.started = time.perf_counter()
        self.progress = Progress(sum(run.epochs for run in self.live), len(self.live))
        try:
            yield
        except KeyboardInterrupt as stop:
            self.progress.close()
            for tracker in self.trackers:  # a store that does not answer now: spool, not wait
                tracker.stop_waiting()
            done = sum(run.outcome is not None for run in self.live)
            of = f" ({done} of {len(self.live)} configs done)" if len(self.live) > 1 else ""
            epochs = 1 + max((run.last[0] for run in self.live if run.last), default=-1)
            print(f"\nlinreg_exp: interrupted after {epochs} epochs{of}",
                  file=sys.stderr)  # fmt: skip
            if isinstance(stop, signals.Interrupted):
                stop.told = True  # the error policy (app.report) adds no second line
            for run in self.live:
                self._end(run, Outcome.INTERRUPTED, {Tag.STOPPED_BY: signals.describe(stop)})
            raise  # closing the tracker waits until the runs have ended
        except Exception as error:
            self.progress.close()
            for run in self.live:  # those that ended before keep their outcome and result
                if run.outcome is None:
                    self._end(run, Outcome.ERROR, {Tag.ERROR: describe_error(error)})
                    run.error = run.error or error
            raise
        self.progress.close()
        for run in self.live:  # an engine that stopped early: its runs did not complete
            if run.outcome is None:
                early = RuntimeError("training stopped before its epochs")
                self._end(run, Outcome.ERROR, {Tag.ERROR: str(early)})
                run.error = run.error or early

    def epoch(self, epoch: int, values: torch.Tensor | Sequence[Sequence[float]]) -> torch.Tensor:
        """One epoch of every row ([rows, 2 + d]: loss, weights, bias), of which the rows
        still training are kept; each that is done (its epochs, or diverged) ends here.
        Which rows still train ([rows] bool: `active`, the trainer's `on_epoch` answer)."""
        rows = values.tolist() if isinstance(values, torch.Tensor) else values
        moving = self._moving
        done = []
        for i in moving:
            run, row = self.live[i], tuple(rows[i])
            run.last = (epoch, row)
            loss = row[0]
            run.first_loss = loss if run.first_loss is None else run.first_loss
            why = divergence(loss, run.first_loss, run.cfg.trainer.divergence_factor, epoch)
            if why is not None:
                run.outcome, run.diverged_at, run.divergence = Outcome.DIVERGED, epoch, why
            elif epoch + 1 >= run.epochs:
                run.outcome = Outcome.COMPLETED
            else:
                continue
            done.append(i)
        if self.pruner is not None:  # scored before the epoch is queued: its row carries them
            done += self._prune(epoch, [i for i in moving if i not in set(done)], done)
        streams: dict[int, tuple[RunGroup, list[str], list[tuple[float, ...]]]] = {}
        for i in moving:
            run = self.live[i]
            _, keys, theirs = streams.setdefault(id(run.group), (run.group, [], []))
            keys.append(run.key)
            theirs.append(tuple(rows[i]))
        for group, keys, theirs in streams.values():
            group.epoch(epoch, keys, theirs)
        self.trajectories.record(epoch, values)
        if done:
            self._moving = [i for i in moving if i not in set(done)]
            self.active[done] = False
            for i in done:
                run = self.live[i]
                tags = {Tag.PRUNED_AT_EPOCH: str(epoch)} if run.outcome is Outcome.PRUNED else {}
                self._ended += 1
                self._pruned += run.outcome is Outcome.PRUNED
                self._end(run, cast(Outcome, run.outcome), tags)
        self.progress.update(len(moving), self._ended, self._pruned)
        return self.active

    def _prune(self, epoch: int, training: list[int], completed: list[int]) -> list[int]:
        """Score the rows due to report (every sweep.report_every epochs, and at their last),
        log each score at this epoch's step, and ask the pruner which of those still training
        stop here: those rows, marked pruned. A row that completes here reports too (its last
        score is its final one); a diverged one does not (it has no model to score)."""
        assert self.pruner is not None
        due: list[int] = []
        scores: list[float] = []
        still = set(training)
        for i in [*training, *(i for i in completed if self.live[i].outcome is Outcome.COMPLETED)]:
            run = self.live[i]
            if (epoch + 1) % run.cfg.sweep.report_every and epoch + 1 < run.epochs:
                continue
            name = str(run.cfg.sweep.objective)
            score = self._score(run, name)
            if run.tracker is not None:
                run.tracker.report(run.key, epoch, {name: score})
            if not math.isfinite(score):  # the worst there is, in either direction
                score = math.inf if run.cfg.sweep.direction == "minimize" else -math.inf
            if i in still:
                due.append(i)
                scores.append(score)
        if not due:
            return []
        pruned = sorted(set(self.pruner.decide(epoch + 1, due, scores)) & set(due))
        for i in pruned:
            run = self.live[i]
            run.outcome, run.pruned_at = Outcome.PRUNED, epoch
        return pruned

    @staticmethod
    def _score(run: _Run, name: str) -> float:
        """The run's objective at its last epoch: its loss, or held-out with its parameters."""
        assert run.last is not None
        row = run.last[1]
        if name == Metric.FINAL_LOSS:
            return float(row[0])
        line = Coefficients(tuple(row[1:-1]), row[-1])
        return held_out_scores(run.splits.val, line).get(name, math.nan)

    def results(self) -> list[JobResult | Exception]:
        """Each config's result, or the Exception that kept it from one, in order. A single
        run is stored before this returns; a sweep's next job starts while one is logged."""
        results: list[JobResult | Exception] = []
        for run in self.runs:
            if run.ending is not None and run.job.number is None and run.error is None:
                try:
                    finished(run.ending)
                except Exception as error:
                    run.error = error
            result = run.error or run.result
            if result is None:  # pragma: no cover - every run ends in start, epoch or training
                result = RuntimeError(f"job {run.job.number}: no outcome")
            results.append(result)
        return results

    def _end(self, run: _Run, outcome: Outcome, tags: dict[str, str] | None = None) -> None:
        """End a run with what it has (once; its error its own: every other run still ends)."""
        if run.ending is not None or run.result is not None:
            return
        try:
            self._finish(run, outcome, tags or {})
        except Exception as error:  # its run, if still open, ends KILLED with its tracker
            run.error = error

    def _finish(self, run: _Run, outcome: Outcome, tags: dict[str, str]) -> None:
        if run.index >= 0:
            self.active[run.index] = False
            self._moving = [i for i in self._moving if i != run.index]
        history = self.trajectories.of(run, outcome, self.step)
        tags = {Tag.TRAIN_STEP: self.step, **tags}
        if outcome is Outcome.DIVERGED:
            tags[Tag.DIVERGED_AT_EPOCH] = str(run.diverged_at)
            tags[Tag.FAILURE] = f"diverged: {run.divergence}"
        if outcome is Outcome.PRUNED:
            self._finish_pruned(run, history, tags)
            return
        metrics: dict[str, float] = {}
        pictures, model, reference = None, None, None
        cfg, splits = run.cfg, run.splits
        if outcome in (Outcome.COMPLETED, Outcome.DIVERGED):
            reference = compute_reference(splits.train, cfg, build_loss(cfg.loss))
            metrics = final_metrics(history, reference, loss_name(cfg), splits.val)
            metrics["train_seconds"] = time.perf_counter() - self.started
            if cfg.plots.enabled and history.epochs_done:
                run.job.output_dir.mkdir(parents=True, exist_ok=True)
                pictures = Task(draw_pictures,  # injected: tracking never imports report
                                run_pictures(cfg, run.job, splits, history, reference))  # fmt: skip
            if outcome is Outcome.COMPLETED:
                model = model_payload(history.final_coefficients(splits.features),
                                      splits.features)  # fmt: skip
        logs = [Artifact(path, "logs") for path in run.job.log_files]
        run.ending = run.group.finish(run.key, outcome, metrics, tags, logs, pictures, model,
                                      run.last)  # fmt: skip
        if reference is None:  # stopped or failed: no result, the engine raises
            self._pruner_end(run, None)
            return
        value = objective(outcome, metrics, cfg.sweep.objective, cfg.sweep.direction)
        self._pruner_end(run, value if outcome is Outcome.COMPLETED else None)
        run.result = JobResult(outcome, run.group.started(run.key).run_id, metrics, value)
        tell(cfg, run.job, history, reference, run.result, self.tracker.tracking_uri,
             self.experiment_id)  # fmt: skip

    def _pruner_end(self, run: _Run, value: float | None) -> None:
        """Tell the pruner how a row ended; a pruner that cannot be told (its study's store)
        costs the run nothing: it is said, and the run keeps its outcome."""
        if self.pruner is None or run.index < 0:
            return
        try:
            self.pruner.end(run.index, value)
        except Exception as error:
            log.warning("job %s: the pruner could not be told its end: %s", run.job.number,
                        describe_error(error))  # fmt: skip

    def _finish_pruned(self, run: _Run, history: History, tags: dict[str, str]) -> None:
        """A pruned run ends FINISHED with what it has: its last epoch's parameters and held-out
        scores, no model or pictures (it is no candidate), its objective the worst there is."""
        cfg, features = run.cfg, run.splits.features
        final = history.final_coefficients(features)
        metrics = {Metric.FINAL_LOSS: history.final[Metric.LOSS],
                   **final.named(features, "final_"), **held_out_scores(run.splits.val, final),
                   "train_seconds": time.perf_counter() - self.started}  # fmt: skip
        logs = [Artifact(path, "logs") for path in run.job.log_files]
        run.ending = run.group.finish(run.key, Outcome.PRUNED, metrics, tags, logs,
                                      last=run.last)  # fmt: skip
        value = objective(Outcome.PRUNED, metrics, cfg.sweep.objective, cfg.sweep.direction)
        run.result = JobResult(Outcome.PRUNED, run.group.started(run.key).run_id, metrics, value)
        name = cfg.sweep.objective
        log.info("job %s pruned after %d epochs (%s %.6g)%s", run.job.number, history.epochs_done,
                 name, metrics.get(name, math.nan), f" [{run.result.run_id}]")  # fmt: skip


class Trajectories:
    """Every row's trajectory, sampled as history.History samples one (the stride doubles as
    the sample fills), in one [rows, capacity, metrics] tensor: bounded memory, however many
    configs and epochs. All rows train from epoch 0, so they share the sampled epochs; each
    row's last epoch is its run's (`_Run.last`)."""

    def __init__(self, rows: int, capacity: int, names: tuple[str, ...]) -> None:
        self.capacity, self.stride, self.epochs, self.names = capacity, 1, 0, names
        self.sampled: list[int] = []  # the sampled epochs
        self.values = torch.empty(rows, capacity, len(names))

    def record(self, epoch: int, values: torch.Tensor | Sequence[Sequence[float]]) -> None:
        self.epochs = epoch + 1
        if epoch % self.stride:
            return
        self.values[:, len(self.sampled)] = torch.as_tensor(values)
        self.sampled.append(epoch)
        if len(self.sampled) >= self.capacity:  # keep every other point, the first always
            kept = self.values[:, 0 : len(self.sampled) : 2].clone()
            self.values[:, : kept.shape[1]] = kept
            self.sampled = self.sampled[::2]
            self.stride *= 2

    def of(self, run: _Run, outcome: Outcome, step: str) -> History:
        """One run's History: its sampled epochs up to its last, and its last."""
        history = History(step=step, names=self.names, stride=self.stride, outcome=outcome,
                          diverged_at_epoch=run.diverged_at, divergence=run.divergence)  # fmt: skip
        if run.last is None:
            return history
        last_epoch = run.last[0]
        count = sum(1 for e in self.sampled if e <= last_epoch)
        rows = self.values[run.index, :count].tolist()
        history.sample = [(epoch, tuple(row)) for epoch, row in zip(self.sampled, rows,
                                                                   strict=False)]  # fmt: skip
        history.last = run.last
        return history


# ---------------------------------------------------------------- what a run is made of


def start_request(
    cfg: LinregConfig, job: Job, device: str, tracking_uri: str, splits: Splits,
    system_metrics: bool = True,
) -> StartRun:  # fmt: skip
    """The run's name, tags, params and config, as the store will hold them."""
    container = dataclasses.asdict(cfg)
    tags = {
        Tag.COMMAND: job.command,
        Tag.OVERRIDES: " ".join(uris.mask_override(o) for o in job.overrides),
        Tag.DEVICE: device,
        Tag.OUTPUT_DIR: str(job.output_dir),
        Tag.CONFIG_HASH: config_hash(container),
    }
    if job.number is not None:
        tags[Tag.JOB_NUM] = str(job.number)
    container["mlflow"]["tracking_uri"] = uris.mask_uri(tracking_uri)
    params = experiment_params(container) | {"device.resolved": device}
    key = "run" if job.number is None else str(job.number)
    dataset = DatasetInfo(splits.name, splits.digest, splits.source)
    return StartRun(key, job.run_name, tags, params, container, dataset,
                    system_metrics=cfg.mlflow.system_metrics and system_metrics)  # fmt: skip


NOT_PARAMS = ("mlflow.tracking_uri",)  # where a run is tracked is not what it is


def experiment_params(container: dict[str, Any]) -> dict[str, str]:
    """The experiment's own keys, as MLflow params: not Hydra's (`_target_`, `_partial_`),
    not unset ones (None), not the store's address. config.yaml keeps the whole config."""
    return {
        key: str(value)
        for key, value in flatten(container).items()
        if value is not None
        and key not in NOT_PARAMS
        and not any(part.startswith("_") for part in key.split("."))
    }


def _digest(data: object, length: int) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


def config_hash(container: dict[str, Any]) -> str:
    """What a job is: its composed config, but for which store it is tracked in."""
    return _digest({**container, "mlflow": {**container["mlflow"], "tracking_uri": None}}, 16)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optimizer': {'lr': 0.01}} -> {'optimizer.lr': 0.01}, the shape of MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def run_pictures(
    cfg: LinregConfig, job: Job, splits: Splits, history: History, ref: Reference
) -> RunPictures:
    """What the run's pictures show (report/pictures.py): for one feature its data and lines,
    for any number the held-out rows predicted against their actual values."""
    one = len(splits.features) == 1
    x, y = splits.train.sample(PICTURE_POINTS) if one else (None, None)
    actual: list[float] = []
    predicted: list[float] = []
    # one feature: fit.png shows the data and the line; more: the held-out rows predicted
    if not one and history.last is not None and history.outcome is not Outcome.DIVERGED:
        step = max(1, splits.val.rows // PICTURE_POINTS)
        sampled = Dataset(splits.val.x[::step], splits.val.y[::step], splits.features)
        predicted = predict(sampled, history.final_coefficients(splits.features)).tolist()
        actual = sampled.y.flatten().tolist()

    def line(coefficients: Coefficients | None) -> LinearParams | None:
        if not one or coefficients is None:
            return None
        return LinearParams(coefficients.weights[0], coefficients.bias)

    return RunPictures(
        features=splits.features,
        x=x.flatten().tolist() if x is not None else [],
        y=y.tolist() if y is not None else [],
        trajectory=history.trajectory(),
        true=line(ref.true),
        optimum=line(ref.optimum or ref.least_squares),
        optimum_loss=ref.optimum_loss,
        val_actual=actual,
        val_predicted=predicted,
        frames=cfg.plots.frames,
        out_dir=str(job.output_dir),
    )


def tell(
    cfg: LinregConfig,
    job: Job,
    history: History,
    ref: Reference,
    result: JobResult,
    uri: str,
    experiment_id: str,
) -> None:
    """A short summary for the console and the job's log file."""
    metrics, run_id, command = result.metrics, result.run_id, job.command
    if result.outcome is Outcome.DIVERGED:
        log.warning("run %s DIVERGED: %s (%s); recorded as FAILED", run_id, history.divergence,
                    command)  # fmt: skip
        return
    features = ref.features
    final = Coefficients.from_named(metrics, features, "final_")
    if job.number is not None:
        shown = final.named(features) if len(features) <= 3 else {"bias": final.bias}
        values = " ".join(f"{key}={value:.4f}" for key, value in shown.items())
        log.info("job %s: %s -> final_loss=%.6g %s [%s]", job.number,
                 command.removeprefix("python -m linreg_exp").strip(), metrics[Metric.FINAL_LOSS],
                 values, run_id)  # fmt: skip
        return
    optimum = ref.optimum or ref.least_squares
    optimum_name = "LAD" if loss_name(cfg) == "l1" and ref.optimum is not None else "least squares"
    against = ""
    if ref.optimum_loss is not None:
        against = f"  (closed-form optimum {ref.optimum_loss:.6g})"
    lines = [f"final loss {metrics[Metric.FINAL_LOSS]:.6g}{against}"]
    names = [*(["weight"] if len(features) == 1 else features), "bias"]
    width = max(6, *map(len, names))
    columns = [("", final), ("true", ref.true), (optimum_name, optimum)]
    for index, name in enumerate(names[:MAX_TOLD]):
        cells = [f"{label} {_nth(c, index):9.5f}" if label else f"{_nth(c, index):9.5f}"
                 for label, c in columns if c is not None]  # fmt: skip
        lines.append(f"{name:<{width}} " + "  ".join(cells))
    if len(names) > MAX_TOLD:
        lines.append(f"... {len(names) - MAX_TOLD} more: the run's metrics have them all")
    lines += [
        f"run    {run_id} in {cfg.mlflow.experiment_name!r} at {uris.mask_uri(uri)}",
        f"rerun  {command}",
        f"files  {job.output_dir}   (config, log{', pictures' if cfg.plots.enabled else ''})",
    ]
    if is_offline(uri):
        lines.append(f"sync   linreg-exp sync {job.output_dir} --to URI   (it is offline)")
    else:
        lines += [
            f"ui     {uris.ui_command(uri)}   (or: make ui)",
            f"page   {uris.run_url(uri, experiment_id, run_id)}",
        ]
    log.info("linreg_exp: %d epochs done\n  %s", history.epochs_done, "\n  ".join(lines))


def _nth(coefficients: Coefficients, index: int) -> float:
    """The index-th parameter: the weights in feature order, then the bias."""
    values = (*coefficients.weights, coefficients.bias)
    return values[index]
