"""The side effects of one job: its MLflow run and its pictures.

A job talks to a Recorder in three calls: `start` (create the run, log params and config),
`finish` (log the History, final metrics, tags and pictures, and end the run with the outcome's
status) and `close` (end a run that was started but never finished). `LocalRecorder` does it
in this process; `companion.CompanionRecorder` (a single run) and `companion.SweepJobRecorder`
(a job of a basic-launcher sweep) do the same in a helper process started before torch is
imported, so that MLflow's ~4 s of imports and store opening overlap the job's own.

Nothing here imports torch, and MLflow and matplotlib are imported only when used.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from linreg_exp.history import History, LinearParams

if TYPE_CHECKING:
    import numpy as np
    from omegaconf import DictConfig

log = logging.getLogger(__name__)

PICTURE_POINTS = 2000  # at most this many data points are drawn: more only slow the plots
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"  # MLflow's RunStatus names
TAG_ERROR, TAG_FAILURE, TAG_OUTCOME = "linreg.error", "linreg.failure", "linreg.outcome"


@dataclass(frozen=True)
class RunTarget:
    """Where the run goes. The experiment id is known for sweep jobs (the sweep opened it)."""

    tracking_uri: str
    experiment_name: str
    experiment_id: str | None = None
    parent_run_id: str | None = None
    run_name: str | None = None
    plots: bool = False  # load matplotlib while the job trains


@dataclass(frozen=True)
class RunStart:
    tags: dict[str, str]
    config: dict[str, Any]  # the composed config: params (flattened) and config.yaml


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    experiment_id: str
    parent_run_id: str | None = None


@dataclass(frozen=True)
class Pictures:
    """What the pictures need: a sample of the data, the reference lines, where to write."""

    x: np.ndarray
    y: np.ndarray
    true: LinearParams
    optimum: LinearParams
    optimum_loss: float | None
    frames: int
    out_dir: Path


@dataclass(frozen=True)
class Outcome:
    """How the job ended: the run's final status and everything left to log."""

    status: str
    history: History
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pictures: Pictures | None = None


class Recorder(Protocol):
    target: RunTarget

    def start(self, request: RunStart) -> None:
        """Create the run; may return before it exists (the companion creates it meanwhile)."""

    def finish(self, outcome: Outcome) -> StartedRun:
        """Log the outcome, end the run with its status, and say which run it was."""

    def close(self) -> None: ...


def draw_pictures(history: History, pictures: Pictures) -> list[Path]:
    """loss_curve.png, fit.png and training.gif in the job's output dir."""
    from linreg_exp import plots

    learned = LinearParams(history.weight[-1], history.bias[-1])
    lines = plots.FitLines(pictures.true, learned, pictures.optimum)
    gif = pictures.out_dir / "training.gif"
    gif.write_bytes(plots.training_gif(pictures.x, pictures.y, history, pictures.frames))
    return [
        plots.save_figure(
            plots.loss_curve(history, pictures.optimum_loss), pictures.out_dir / "loss_curve.png"
        ),
        plots.save_figure(
            plots.fit_figure(pictures.x, pictures.y, lines), pictures.out_dir / "fit.png"
        ),
        gif,
    ]


class LocalRecorder:
    """Records the run in this process; never leaves it RUNNING."""

    def __init__(self, target: RunTarget) -> None:
        self.target = target
        self._experiment_id = target.experiment_id
        self._run_id: str | None = None
        self._started: StartedRun | None = None

    def prepare(self) -> None:
        """Open the store (creating store and experiment if new) and load what finish needs."""
        from linreg_exp import tracking

        if self._experiment_id is None:
            self._experiment_id = tracking.open_experiment(
                self.target.tracking_uri, self.target.experiment_name
            )
        if self.target.plots:
            import linreg_exp.plots  # noqa: F401  (matplotlib: ~1 s to import)

    @property
    def started(self) -> StartedRun | None:
        """The run, once start() has created it."""
        return self._started

    def start(self, request: RunStart) -> None:
        """Create the run (nested under the sweep's parent, if any) and log its config."""
        import mlflow

        from linreg_exp import tracking

        self.prepare()
        assert self._experiment_id is not None
        mlflow.set_tracking_uri(self.target.tracking_uri)
        run = mlflow.start_run(
            experiment_id=self._experiment_id,
            run_name=self.target.run_name,
            parent_run_id=self.target.parent_run_id,
            tags=request.tags,
        )
        self._run_id = run.info.run_id
        self._started = StartedRun(self._run_id, self._experiment_id, self.target.parent_run_id)
        try:
            mlflow.log_params(tracking.flatten(request.config))
            mlflow.log_dict(request.config, "config.yaml")
        except BaseException as error:
            self._end(FAILED, {TAG_OUTCOME: "error", TAG_ERROR: describe_error(error)})
            raise

    def finish(self, outcome: Outcome) -> StartedRun:
        import mlflow
        from mlflow.tracking import MlflowClient

        from linreg_exp import tracking

        if self._run_id is None:
            raise RuntimeError("finish() without a started run")  # pragma: no cover
        status, extra_tags = outcome.status, {}
        try:
            metrics = tracking.history_metrics(outcome.history)
            metrics += tracking.final_metrics(outcome.metrics)
            client = MlflowClient(self.target.tracking_uri)
            tracking.log_metrics_batched(client, self._run_id, metrics, outcome.tags)
            if outcome.pictures is not None and outcome.history.epochs_done > 0:
                for path in draw_pictures(outcome.history, outcome.pictures):
                    mlflow.log_artifact(str(path))
        except KeyboardInterrupt:
            status, extra_tags = KILLED, {TAG_OUTCOME: "interrupted"}
            raise
        except BaseException as error:
            status, extra_tags = FAILED, {TAG_OUTCOME: "error", TAG_ERROR: describe_error(error)}
            raise
        finally:
            self._end(status, extra_tags)
        assert self._started is not None
        return self._started

    def close(self, reason: str = "the job ended without reporting how") -> None:
        """End a run that was started and never finished, as KILLED."""
        if self._run_id is not None:
            self._end(KILLED, {TAG_OUTCOME: "interrupted", TAG_FAILURE: reason})

    def _end(self, status: str, tags: dict[str, str]) -> None:
        import mlflow

        run_id, self._run_id = self._run_id, None
        try:
            if tags and run_id is not None:
                mlflow.set_tags({key: value[:5000] for key, value in tags.items()})
        except Exception:  # the status matters more than these tags
            log.warning("could not tag run %s", run_id, exc_info=True)
        finally:
            mlflow.end_run(status)


def describe_error(error: BaseException) -> str:
    """The `linreg.error` tag: the exception's type and message, within MLflow's tag limit."""
    return f"{type(error).__name__}: {error}"[:5000]


def open_recorder(cfg: DictConfig) -> Recorder:
    """A companion process for a single run (MLflow's start-up would otherwise add ~4 s to the
    user's wait) and for the jobs of a sweep that runs them in this process (the sweep's
    companion logs each job while the next starts); in-process for jobs that a launcher runs
    elsewhere (joblib, submitit): the sweep opened the store already."""
    from hydra.core.hydra_config import HydraConfig

    from linreg_exp import companion
    from linreg_exp.sweep import current_sweep
    from linreg_exp.uris import resolve_tracking_uri

    sweep_job = companion.sweep_job_recorder(cfg.mlflow.run_name, cfg.plots.enabled)
    if sweep_job is not None:
        return sweep_job
    sweep = current_sweep()
    if sweep is not None:
        return LocalRecorder(
            RunTarget(
                sweep.tracking_uri,
                cfg.mlflow.experiment_name,
                sweep.experiment_id,
                sweep.parent_run_id,
                cfg.mlflow.run_name,
                cfg.plots.enabled,
            )
        )
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, Path(HydraConfig.get().runtime.cwd))
    target = RunTarget(
        uri, cfg.mlflow.experiment_name, None, None, cfg.mlflow.run_name, cfg.plots.enabled
    )
    if sys.platform == "win32":  # pragma: no cover - pass_fds is POSIX only
        return LocalRecorder(target)
    return companion.CompanionRecorder(target)
