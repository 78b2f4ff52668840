"""One job, end to end: config -> data -> training -> epochs streamed and a History -> tracking.

Nothing here imports MLflow: the tracker owns the run, in a helper process or in this one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm

from linreg_exp import signals, sweep
from linreg_exp.baseline import closed_form_optimum, least_squares
from linreg_exp.data import Dataset, make_dataset
from linreg_exp.history import History, LinearParams, StopReason
from linreg_exp.schema import DataConfig, validate
from linreg_exp.tracking import uris
from linreg_exp.tracking.messages import (
    FAILED,
    FINISHED,
    KILLED,
    TAG_CONFIG_HASH,
    TAG_ERROR,
    TAG_FAILURE,
    TAG_OUTCOME,
    TAG_STOPPED_BY,
    DatasetInfo,
    FinishRun,
    Pictures,
    StartRun,
    describe_error,
)
from linreg_exp.tracking.recorder import RunStream, Tracker, finished
from linreg_exp.train import fit, load_optimizer, resolve_device, set_cpu_threads, step_kind

log = logging.getLogger(__name__)

PICTURE_POINTS = 2000  # at most this many data points are drawn: more only slow the plots

# Overrides that select a sweep; a job's reproduce command must not start the sweep again.
_SWEEP_ONLY_OVERRIDES = ("hparams_search=",)


def reproduce_command(task_overrides: list[str]) -> str:
    """The command line that re-runs exactly this job (sweep selectors dropped)."""
    kept = [o for o in task_overrides if not o.startswith(_SWEEP_ONLY_OVERRIDES)]
    return shlex.join(["python", "-m", "linreg_exp", *(uris.mask_override(o) for o in kept)])


def build_loss(loss_cfg: DictConfig) -> nn.Module:
    """Instantiate the loss from its `_target_`; `name` is ours, not the constructor's."""
    spec = OmegaConf.masked_copy(loss_cfg, [str(k) for k in loss_cfg if k != "name"])
    return cast(nn.Module, instantiate(spec))


@dataclass(frozen=True)
class Reference:
    """What the learned line is compared with: the truth and the closed-form optimum."""

    true: LinearParams
    least_squares: LinearParams
    optimum: LinearParams | None
    optimum_loss: float | None


def compute_reference(
    data: Dataset, data_cfg: DictConfig, loss_cfg: DictConfig, loss_fn: nn.Module
) -> Reference:
    x, y = data.x.cpu(), data.y.cpu()
    optimum = closed_form_optimum(loss_cfg.name, x, y)
    optimum_loss = None
    if optimum is not None:
        with torch.no_grad():
            optimum_loss = float(loss_fn(data.x * optimum.weight + optimum.bias, data.y))
    return Reference(
        true=LinearParams(data_cfg.true_weight, data_cfg.true_bias),
        least_squares=least_squares(x, y),
        optimum=optimum,
        optimum_loss=optimum_loss,
    )


def final_metrics(history: History, ref: Reference, loss_name: str) -> dict[str, float]:
    values = {"ols_weight": ref.least_squares.weight, "ols_bias": ref.least_squares.bias}
    if loss_name == "l1" and ref.optimum is not None:
        values |= {"lad_weight": ref.optimum.weight, "lad_bias": ref.optimum.bias}
    if ref.optimum_loss is not None:
        values["optimum_loss"] = ref.optimum_loss
    if history.last is None:
        return values
    weight, bias = history.final.weight, history.final.bias
    values |= {
        "final_loss": history.final_loss,
        "final_weight": weight,
        "final_bias": bias,
        "weight_gap_to_true": abs(weight - ref.true.weight),
        "bias_gap_to_true": abs(bias - ref.true.bias),
    }
    if ref.optimum is not None:
        values["weight_gap_to_optimum"] = abs(weight - ref.optimum.weight)
        values["bias_gap_to_optimum"] = abs(bias - ref.optimum.bias)
    return values


def job_logs() -> list[str]:
    """submitit's stdout and stderr of this job, when a submitit launcher runs it (locally or
    on SLURM): attached to its run, so its output is found beside its metrics."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return []
    import submitit

    paths = submitit.JobEnvironment().paths
    return [str(paths.stdout), str(paths.stderr)]


def _digest(data: object, length: int) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:length]


def config_hash(container: dict[str, Any]) -> str:
    """What a job is: its composed config, but for which store it is tracked in."""
    return _digest({**container, "mlflow": {**container["mlflow"], "tracking_uri": None}}, 16)


def dataset_info(cfg: DictConfig) -> DatasetInfo:
    """The data a run trains on, named after its config group option, identified by a hash of
    what generates it: two runs with the same digest saw the same points."""
    source = {"data": OmegaConf.to_container(cfg.data, resolve=True), "seed": cfg.seed}
    choice = HydraConfig.get().runtime.choices.get("data", "data")
    return DatasetInfo(f"linreg_{choice}", _digest(source, 8), source)


def run_experiment(cfg: DictConfig, tracker: Tracker) -> float:
    """Train and track one job; returns final_loss (inf when it diverged) for sweepers.

    Everything that can reject the config (values, device, tracking store) happens before the
    MLflow run exists; once it exists, every way out of here ends it with a status.
    """
    validate(cfg)
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    device = resolve_device(cfg.device.name)
    overrides = list(hydra_cfg.overrides.task)
    command = reproduce_command(overrides)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    tags = {
        "linreg.command": command,
        "linreg.overrides": " ".join(uris.mask_override(o) for o in overrides),
        "linreg.device": str(device),
        "linreg.hydra_output_dir": str(output_dir),
    }
    if multirun:
        tags["linreg.job_num"] = str(hydra_cfg.job.num)
    opened = tracker.opened()  # the store is open (else TrackingError, before any run exists)
    uri = tracker.tracking_uri
    sweep.announce(opened.experiment_id, opened.parent_run_id, uri, opened.resumed)
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    tags[TAG_CONFIG_HASH] = config_hash(container)
    container["mlflow"]["tracking_uri"] = uris.mask_uri(uri)

    set_cpu_threads(cfg.data.num_data)
    loss_fn = build_loss(cfg.loss).to(device)
    make_optimizer = instantiate(cfg.optimizer)
    load_optimizer(make_optimizer)
    run = tracker.start_run(
        StartRun(sweep.run_name(cfg), tags, container, dataset_info(cfg)),
        cfg.trainer.log_every_n_epochs,
        cfg.mlflow.log_every_seconds,
    )
    if opened.resumed and (kept := run.started()).kept_loss is not None:
        log.info("job %s skipped: FINISHED before as run %s", hydra_cfg.job.num, kept.run_id)
        return kept.kept_loss
    history = History(step=step_kind(loss_fn, cfg.data.num_data, cfg.trainer.batch_size))
    try:  # from here on an error is recorded on the run: FAILED, with the error as a tag
        data = make_dataset(cast(DataConfig, cfg.data), cfg.seed).to(device)
        reference = compute_reference(data, cfg.data, cfg.loss, loss_fn)
        started = time.perf_counter()
        train(cfg, data, loss_fn, make_optimizer, history, run)
    except KeyboardInterrupt as stop:  # an interrupted or failed run keeps the epochs it computed
        history.stop_reason = StopReason.INTERRUPTED
        print(f"\nlinreg_exp: interrupted after {history.epochs_done} epochs", file=sys.stderr)
        stopped_by = {TAG_OUTCOME: "interrupted", TAG_STOPPED_BY: signals.describe(stop)}
        run.finish(FinishRun(KILLED, history, tags=stopped_by, logs=job_logs()))
        raise  # closing the tracker waits until the run has ended
    except Exception as error:
        error_tags = {TAG_OUTCOME: "error", TAG_ERROR: describe_error(error)}
        run.finish(FinishRun(FAILED, history, tags=error_tags, logs=job_logs()))
        raise

    metrics = final_metrics(history, reference, cfg.loss.name)
    metrics["train_seconds"] = time.perf_counter() - started
    outcome_tags = {TAG_OUTCOME: history.stop_reason.value, "linreg.train_step": history.step}
    status = FINISHED
    if history.stop_reason is StopReason.DIVERGED:
        status = FAILED
        outcome_tags["linreg.diverged_at_epoch"] = str(history.diverged_at_epoch)
        outcome_tags[TAG_FAILURE] = f"diverged: {history.divergence}"
    pictures = None
    if cfg.plots.enabled:
        x, y = data.sample(PICTURE_POINTS)
        optimum = reference.optimum or reference.least_squares
        pictures = Pictures(
            x, y, reference.true, optimum, reference.optimum_loss, cfg.plots.frames, output_dir
        )
    ending = run.finish(FinishRun(status, history, metrics, outcome_tags, pictures, job_logs()))
    if not multirun:  # a sweep's next job starts while this one is logged
        finished(ending)
    started_run = run.started()
    sweep.announce(started_run.experiment_id, started_run.parent_run_id, uri, resumed=False)
    _report(cfg, history, reference, metrics, uri, opened.experiment_id, started_run.run_id,
            command, multirun)  # fmt: skip
    return math.inf if history.stop_reason is StopReason.DIVERGED else history.final_loss


def train(
    cfg: DictConfig,
    data: Dataset,
    loss_fn: nn.Module,
    make_optimizer: Any,
    history: History,
    run: RunStream,
) -> None:
    """Every epoch into the bounded History and onto the stream, as it is done."""
    epochs: Iterable[tuple[float, float, float]] = fit(
        data, loss_fn, make_optimizer, cfg.trainer.epochs, cfg.trainer.batch_size, cfg.seed
    )
    if sys.stderr.isatty():
        epochs = tqdm(epochs, "training", cfg.trainer.epochs, leave=False, unit="epoch",
                      mininterval=0.25)  # fmt: skip
    for step, (loss, weight, bias) in enumerate(epochs):
        if history.diverges(loss, cfg.trainer.divergence_factor):
            return
        history.append(loss, weight, bias)
        run.epoch(step, loss, weight, bias)
    history.stop_reason = StopReason.COMPLETED


def _report(
    cfg: DictConfig,
    history: History,
    ref: Reference,
    metrics: dict[str, float],
    uri: str,
    experiment_id: str,
    run_id: str,
    command: str,
    multirun: bool,
) -> None:
    """A short summary for the console and the job's log file."""
    if history.stop_reason is StopReason.DIVERGED:
        log.warning("run %s DIVERGED: %s (%s); recorded as FAILED", run_id, history.divergence,
                    command)  # fmt: skip
        return
    weight, bias = metrics["final_weight"], metrics["final_bias"]
    if multirun:
        log.info(
            "job %s: %s -> final_loss=%.6g weight=%.4f bias=%.4f [%s]",
            HydraConfig.get().job.num,
            command.removeprefix("python -m linreg_exp").strip(),
            metrics["final_loss"],
            weight,
            bias,
            run_id,
        )
        return
    optimum = ref.optimum or ref.least_squares
    optimum_name = "LAD" if cfg.loss.name == "l1" and ref.optimum is not None else "least squares"
    lines = [
        f"final loss {metrics['final_loss']:.6g}"
        + (
            f"  (closed-form optimum {ref.optimum_loss:.6g})"
            if ref.optimum_loss is not None
            else ""
        ),
        f"weight {weight:9.5f}  true {ref.true.weight:9.5f}  {optimum_name} {optimum.weight:9.5f}",
        f"bias   {bias:9.5f}  true {ref.true.bias:9.5f}  {optimum_name} {optimum.bias:9.5f}",
        f"run    {run_id} in {cfg.mlflow.experiment_name!r} at {uris.mask_uri(uri)}",
        f"rerun  {command}",
        f"ui     {uris.ui_command(uri)}   (or: make ui)",
        f"page   {uris.run_url(uri, experiment_id, run_id)}",
    ]
    log.info("linreg_exp: %d epochs done\n  %s", history.epochs_done, "\n  ".join(lines))
