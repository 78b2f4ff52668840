"""One job, end to end: config -> data -> training -> History -> MLflow run and pictures."""

from __future__ import annotations

import logging
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import mlflow
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from torch import nn

from linreg_exp import tracking
from linreg_exp.baseline import LinearParams, closed_form_optimum, least_squares
from linreg_exp.data import Dataset, make_dataset
from linreg_exp.schema import DataConfig, validate
from linreg_exp.sweep import current_sweep
from linreg_exp.train import History, StopReason, fit, resolve_device, set_cpu_threads

log = logging.getLogger(__name__)

# Overrides that select a sweep; a job's reproduce command must not start the sweep again.
_SWEEP_ONLY_OVERRIDES = ("hparams_search=",)


def reproduce_command(task_overrides: list[str]) -> str:
    """The command line that re-runs exactly this job (sweep selectors dropped)."""
    kept = [o for o in task_overrides if not o.startswith(_SWEEP_ONLY_OVERRIDES)]
    return shlex.join(["python", "-m", "linreg_exp", *(tracking.mask_override(o) for o in kept)])


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
    if history.epochs_done == 0:
        return values
    weight, bias = history.weight[-1], history.bias[-1]
    values |= {
        "final_loss": history.loss[-1],
        "final_weight": weight,
        "final_bias": bias,
        "weight_gap_to_true": abs(weight - ref.true.weight),
        "bias_gap_to_true": abs(bias - ref.true.bias),
    }
    if ref.optimum is not None:
        values["weight_gap_to_optimum"] = abs(weight - ref.optimum.weight)
        values["bias_gap_to_optimum"] = abs(bias - ref.optimum.bias)
    return values


def write_plots(
    data: Dataset, history: History, ref: Reference, frames: int, out_dir: Path
) -> list[Path]:
    """loss_curve.png, fit.png and training.gif in the job's output dir."""
    from linreg_exp import plots  # matplotlib costs ~0.5 s to import: only when plots are on

    if history.epochs_done == 0:
        return []
    learned = LinearParams(history.weight[-1], history.bias[-1])
    lines = plots.FitLines(ref.true, learned, ref.optimum or ref.least_squares)
    gif = out_dir / "training.gif"
    gif.write_bytes(plots.training_gif(data.x, data.y, history, frames))
    return [
        plots.save_figure(plots.loss_curve(history, ref.optimum_loss), out_dir / "loss_curve.png"),
        plots.save_figure(plots.fit_figure(data.x, data.y, lines), out_dir / "fit.png"),
        gif,
    ]


def run_experiment(cfg: DictConfig) -> float:
    """Train and track one job; returns final_loss (inf when it diverged) for sweepers.

    Everything that can reject the config (values, device, tracking store) happens before the
    MLflow run exists; everything after is inside it, so a failure ends the run FAILED.
    """
    validate(cfg)
    hydra_cfg = HydraConfig.get()
    device = resolve_device(cfg.device.name)
    sweep = current_sweep()
    if sweep is not None:
        uri, experiment_id = sweep.tracking_uri, sweep.experiment_id
    else:
        uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, Path(hydra_cfg.runtime.cwd))
        experiment_id = tracking.open_experiment(uri, cfg.mlflow.experiment_name)

    overrides = list(hydra_cfg.overrides.task)
    command = reproduce_command(overrides)
    output_dir = Path(hydra_cfg.runtime.output_dir)
    tags = {
        "linreg.command": command,
        "linreg.overrides": " ".join(tracking.mask_override(o) for o in overrides),
        "linreg.device": str(device),
        "linreg.hydra_output_dir": str(output_dir),
    }
    if sweep is not None:
        tags["linreg.job_num"] = str(hydra_cfg.job.num)
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    container["mlflow"]["tracking_uri"] = tracking.mask_uri(uri)
    history = History()
    parent_run_id = sweep.parent_run_id if sweep is not None else None
    with tracking.tracked_run(uri, experiment_id, cfg.mlflow.run_name, parent_run_id, tags) as run:
        mlflow.log_params(tracking.flatten(container))
        mlflow.log_dict(container, "config.yaml")
        set_cpu_threads(cfg.data.num_data)
        data = make_dataset(cast(DataConfig, cfg.data), cfg.seed).to(device)
        loss_fn = build_loss(cfg.loss).to(device)
        reference = compute_reference(data, cfg.data, cfg.loss, loss_fn)
        started = time.perf_counter()
        try:
            fit(
                data,
                loss_fn,
                instantiate(cfg.optimizer),
                cfg.trainer.epochs,
                cfg.trainer.batch_size,
                cfg.seed,
                history,
                progress=sys.stderr.isatty(),
            )
        except KeyboardInterrupt:
            history.stop_reason = StopReason.INTERRUPTED
            raise
        finally:  # an interrupted or failed run keeps the epochs it computed
            tracking.log_metrics_batched(
                MlflowClient(uri), run.run_id, tracking.history_metrics(history)
            )
        metrics = final_metrics(history, reference, cfg.loss.name)
        metrics["train_seconds"] = time.perf_counter() - started
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {"linreg.outcome": history.stop_reason.value, "linreg.train_step": history.step}
        )
        if history.stop_reason is StopReason.DIVERGED:
            mlflow.set_tag("linreg.diverged_at_epoch", str(history.diverged_at_epoch))
            run.failure = f"diverged: loss became non-finite at epoch {history.diverged_at_epoch}"
        if cfg.plots.enabled:
            for path in write_plots(data, history, reference, cfg.plots.frames, output_dir):
                mlflow.log_artifact(str(path))

    _report(cfg, history, reference, metrics, uri, experiment_id, run.run_id, command, sweep)
    return math.inf if history.stop_reason is StopReason.DIVERGED else history.loss[-1]


def _report(
    cfg: DictConfig,
    history: History,
    ref: Reference,
    metrics: dict[str, float],
    uri: str,
    experiment_id: str,
    run_id: str,
    command: str,
    sweep: object,
) -> None:
    """A short summary for the console and the job's log file."""
    if history.stop_reason is StopReason.DIVERGED:
        log.warning(
            "run %s DIVERGED: loss became non-finite at epoch %s (%s); recorded as FAILED",
            run_id,
            history.diverged_at_epoch,
            command,
        )
        return
    weight, bias = metrics["final_weight"], metrics["final_bias"]
    if sweep is not None:
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
        f"run    {run_id} in {cfg.mlflow.experiment_name!r} at {tracking.mask_uri(uri)}",
        f"rerun  {command}",
        f"ui     {tracking.ui_command(uri)}   (or: make ui)",
        f"page   {tracking.run_url(uri, experiment_id, run_id)}",
    ]
    log.info("linreg_exp: %d epochs done\n  %s", history.epochs_done, "\n  ".join(lines))
