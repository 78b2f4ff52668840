"""One job, end to end: config → data → training → named metrics → tracking, then its report.

`run(cfg, job, tracker)` is a plain function of the composed config and a small description of
this one job (jobspec.Job); the launch (sweeps/) builds the description and picks the tracker, and
nothing here reads Hydra's state or knows about sweeps. Nothing here imports MLflow either: the
tracker owns the run, in a helper process or in this one.

Everything that can reject the job (its values, the device, the optimizer's arguments, the
store) happens before its MLflow run exists; once it exists, every way out ends it with an
outcome. The job builds its optimizer before it waits for the store, which opens meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from linreg_exp import data as datasets
from linreg_exp import signals, tracking
from linreg_exp.baseline import closed_form_optimum, ordinary_least_squares
from linreg_exp.data import Dataset, Scaling, Splits
from linreg_exp.history import History, LinearParams
from linreg_exp.jobspec import Job, JobResult, objective
from linreg_exp.params import Coefficients, model_payload
from linreg_exp.report.pictures import RunPictures
from linreg_exp.schema import DataConfig, TableConfig, validate
from linreg_exp.tracking import uris
from linreg_exp.tracking.messages import Artifact, DatasetInfo, Open, StartRun, Task, describe_error
from linreg_exp.tracking.recorder import RunStream, Tracker, finished
from linreg_exp.tracking.spool import is_offline
from linreg_exp.train import (
    OptimizerFactory,
    fit,
    load_optimizer,
    resolve_device,
    set_cpu_threads,
    step_kind,
)
from linreg_exp.vocab import Metric, Outcome, Tag

log = logging.getLogger(__name__)

PICTURE_POINTS = 2000  # at most this many data points are drawn: more only slow the plots
MAX_TOLD = 12  # parameters the console lists after a run


def run(cfg: DictConfig, job: Job, tracker: Tracker | None = None) -> JobResult:
    """Train and track one job. Without a tracker, it opens one of its own in this process."""
    if tracker is None:
        own = tracking.in_process(
            Open(job.tracking_uri, cfg.mlflow.experiment_name, parent_run_id=job.parent_run_id,
                 spool_dir=str(job.output_dir), outage_timeout=cfg.mlflow.outage_timeout)
        )  # fmt: skip
        try:
            return run(cfg, job, own)
        finally:
            own.close()
    validate(cfg)
    device = resolve_device(cfg.device.name)
    splits = load_data(cfg, job)  # a table that cannot be used is refused before the run
    scaling = Scaling.of(splits.train) if cfg.model.standardize else None
    set_cpu_threads(splits.train.rows)
    loss_fn = build_loss(cfg.loss).to(device)
    make_optimizer = instantiate(cfg.optimizer)
    load_optimizer(make_optimizer)
    opened = tracker.opened()  # the store is open by now, else TrackingError: no run exists
    stream = tracker.start_run(
        start_request(cfg, job, str(device), tracker.tracking_uri, splits),
        cfg.trainer.log_every_n_epochs,
        cfg.mlflow.log_every_seconds,
    )
    if opened.resumed and (kept := stream.started()).kept is not None:
        log.info("job %s skipped: FINISHED before as run %s", job.number, kept.run_id)
        value = objective(Outcome.COMPLETED, kept.kept, cfg.sweep.objective, cfg.sweep.direction)
        return JobResult(Outcome.COMPLETED, kept.run_id, kept.kept, value, kept=True)
    train_data = splits.train
    kind = step_kind(loss_fn, train_data.rows, cfg.trainer.batch_size, len(splits.features))
    history = History(step=kind)
    logs = [Artifact(path, "logs") for path in job.log_files]
    try:  # from here on an error is recorded on the run: FAILED, with the error as a tag
        seen = (scaling.apply(train_data) if scaling else train_data).to(device)
        reference = compute_reference(train_data, cfg, loss_fn)
        started = time.perf_counter()
        train(cfg, seen, loss_fn, make_optimizer, history, stream, scaling)
    except KeyboardInterrupt as stop:  # an interrupted or failed run keeps its epochs
        print(f"\nlinreg_exp: interrupted after {history.epochs_done} epochs", file=sys.stderr)
        tracker.stop_waiting()  # a store that does not answer now: spool, do not wait
        stream.finish(Outcome.INTERRUPTED, tags={Tag.STOPPED_BY: signals.describe(stop)},
                      files=logs)  # fmt: skip
        raise  # closing the tracker waits until the run has ended
    except Exception as error:
        stream.finish(Outcome.ERROR, tags={Tag.ERROR: describe_error(error)}, files=logs)
        raise

    outcome = history.outcome or Outcome.COMPLETED
    metrics = final_metrics(history, reference, cfg.loss.name, splits.val)
    metrics["train_seconds"] = time.perf_counter() - started
    tags = {Tag.TRAIN_STEP: history.step}
    if outcome is Outcome.DIVERGED:
        tags[Tag.DIVERGED_AT_EPOCH] = str(history.diverged_at_epoch)
        tags[Tag.FAILURE] = f"diverged: {history.divergence}"
    pictures = None
    if cfg.plots.enabled and history.epochs_done:
        pictures = Task("linreg_exp.report.pictures:draw", run_pictures(cfg, job, splits, history,
                                                                        reference))  # fmt: skip
    model = None
    if outcome is Outcome.COMPLETED:
        model = model_payload(history.final_coefficients(splits.features), splits.features)
    ending = stream.finish(outcome, metrics, tags, logs, pictures, model)
    value = objective(outcome, metrics, cfg.sweep.objective, cfg.sweep.direction)
    result = JobResult(outcome, stream.started().run_id, metrics, value)
    tell(cfg, job, history, reference, result, tracker.tracking_uri, opened.experiment_id)
    if job.number is None:  # a single run is stored before it ends; a sweep's next job
        finished(ending)  # starts while this one is logged
    return result


def train(
    cfg: DictConfig,
    data: Dataset,
    loss_fn: nn.Module,
    make_optimizer: OptimizerFactory,
    history: History,
    stream: RunStream,
    scaling: Scaling | None = None,
) -> None:
    """Every epoch into the bounded History and onto the stream, as it is done."""
    epochs: Iterable[dict[str, float]] = fit(
        data, loss_fn, make_optimizer, cfg.trainer.epochs, cfg.trainer.batch_size, cfg.seed,
        scaling,
    )  # fmt: skip
    if sys.stderr.isatty():
        epochs = tqdm(epochs, "training", cfg.trainer.epochs, leave=False, unit="epoch",
                      mininterval=0.25)  # fmt: skip
    factor = cfg.trainer.divergence_factor
    for step, metrics in enumerate(epochs):
        diverged = history.diverges(metrics[Metric.LOSS], factor)
        history.append(metrics)  # the epoch it diverged at is recorded too
        stream.epoch(step, metrics)
        if diverged:
            return
    history.outcome = Outcome.COMPLETED


# ---------------------------------------------------------------- what the run is compared with


def build_loss(loss_cfg: DictConfig) -> nn.Module:
    """Instantiate the loss from its `_target_`; `name` is ours, not the constructor's."""
    spec = OmegaConf.masked_copy(loss_cfg, [str(k) for k in loss_cfg if k != "name"])
    return cast(nn.Module, instantiate(spec))


def load_data(cfg: DictConfig, job: Job) -> Splits:
    """The job's training and held-out data, from its typed data config."""
    typed = cast(DataConfig | TableConfig, OmegaConf.to_object(cfg.data))
    return datasets.load(typed, cfg.seed, job.launch_dir, job.data_option)


@dataclass(frozen=True)
class Reference:
    """What the learned model is compared with: the truth (synthetic data only), least squares,
    and the closed-form optimum of the run's loss."""

    features: tuple[str, ...]
    true: Coefficients | None
    least_squares: Coefficients
    optimum: Coefficients | None
    optimum_loss: float | None


def compute_reference(data: Dataset, cfg: DictConfig, loss_fn: nn.Module) -> Reference:
    x, y = data.x.cpu(), data.y.cpu()
    optimum = closed_form_optimum(cfg.loss.name, x, y)
    optimum_loss = None
    if optimum is not None:
        with torch.no_grad():
            weights = torch.tensor(optimum.weights, dtype=x.dtype).view(-1, 1)
            optimum_loss = float(loss_fn(x @ weights + optimum.bias, y))
    true = None
    if OmegaConf.get_type(cfg.data) is DataConfig:
        true = Coefficients(tuple(datasets.true_weights(cfg.data)), cfg.data.true_bias)
    return Reference(data.features, true, ordinary_least_squares(x, y), optimum, optimum_loss)


def final_metrics(
    history: History, ref: Reference, loss_name: str, held_out: Dataset
) -> dict[str, float]:
    """The run's final metrics, by name. A diverged run has no final model to report: its
    outcome says so, and its blown-up numbers stay out of the Compare view's scales."""
    features = ref.features
    values = ref.least_squares.named(features, "ols_")
    if loss_name == "l1" and ref.optimum is not None:
        values |= ref.optimum.named(features, "lad_")
    if ref.optimum_loss is not None:
        values["optimum_loss"] = ref.optimum_loss
    if history.last is None or history.outcome is Outcome.DIVERGED:
        return values
    final = history.final_coefficients(features)
    values |= {Metric.FINAL_LOSS: history.final[Metric.LOSS], **final.named(features, "final_")}
    if len(features) == 1:  # the tutorial's gaps: one number each
        weight, bias = final.weights[0], final.bias
        if ref.true is not None:
            values["weight_gap_to_true"] = abs(weight - ref.true.weights[0])
            values["bias_gap_to_true"] = abs(bias - ref.true.bias)
        if ref.optimum is not None:
            values["weight_gap_to_optimum"] = abs(weight - ref.optimum.weights[0])
            values["bias_gap_to_optimum"] = abs(bias - ref.optimum.bias)
    return values | held_out_scores(held_out, final)


def predict(data: Dataset, line: Coefficients) -> torch.Tensor:
    """The model's prediction for every row, in float64: [rows]."""
    weights = torch.tensor(line.weights, dtype=torch.float64).view(-1, 1)
    return (data.x.double().cpu() @ weights).flatten() + line.bias


def held_out_scores(held_out: Dataset, line: Coefficients) -> dict[str, float]:
    """The fitted model on the held-out points, in float64: one yardstick for every run,
    whatever loss it trained with."""
    residual = held_out.y.double().cpu().flatten() - predict(held_out, line)
    return {
        Metric.VAL_MSE: float(residual.square().mean()),
        Metric.VAL_MAE: float(residual.abs().mean()),
    }


# ---------------------------------------------------------------- what the run records


def start_request(
    cfg: DictConfig, job: Job, device: str, tracking_uri: str, splits: Splits
) -> StartRun:
    """The run's name, tags, params and config, as the store will hold them."""
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
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
                    system_metrics=cfg.mlflow.system_metrics)  # fmt: skip


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
    cfg: DictConfig, job: Job, splits: Splits, history: History, ref: Reference
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


# ---------------------------------------------------------------- what the run tells the user


def tell(
    cfg: DictConfig,
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
    optimum_name = "LAD" if cfg.loss.name == "l1" and ref.optimum is not None else "least squares"
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
