"""A multirun is one MLflow parent run with one nested child run per job.

The Hydra callback creates the store, the experiment and the parent run in the launching process
before any job starts (so parallel jobs never race on a new store's schema migration), and hands
their ids to jobs through a file in the sweep dir and an environment variable: both cross process
and machine boundaries (joblib, submitit local or SLURM). The parent is closed with a summary in
`on_multirun_end`, or by `close_open_sweeps` when a job failure or a signal skips that hook.
"""

from __future__ import annotations

import atexit
import csv
import io
import json
import logging
import math
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

if TYPE_CHECKING:
    from mlflow.entities import Run

# mlflow, torch and matplotlib are imported inside the functions that need them: Hydra
# instantiates this callback for every command, and `--help` or a bad override should not wait.

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"
SWEEP_FILE_ENV = "LINREG_EXP_SWEEP_FILE"


@dataclass(frozen=True)
class SweepInfo:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def current_sweep() -> SweepInfo | None:
    """The sweep this job belongs to, or None for a single run."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    path = Path(os.environ.get(SWEEP_FILE_ENV) or Path(hydra_cfg.sweep.dir) / SWEEP_FILE)
    if not path.is_file():
        return None
    return SweepInfo(**json.loads(path.read_text()))


_open_sweeps: dict[str, SweepInfo] = {}


class MlflowSweepCallback(Callback):
    """Owns the parent run of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra turns a callback's exception into a warning and goes on; a sweep whose store
        or shared config is unusable must stop instead, so errors leave as SystemExit."""
        from linreg_exp.errors import LinregError

        try:
            self._open_parent(config)
        except LinregError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        except Exception as error:
            log.exception("could not open the sweep's MLflow parent run")
            raise SystemExit(1) from error

    def _open_parent(self, config: DictConfig) -> None:
        from mlflow.tracking import MlflowClient

        from linreg_exp import tracking, uris
        from linreg_exp.schema import validate

        validate(config)  # the values every job shares: reject them before any run exists
        uri = uris.resolve_tracking_uri(config.mlflow.tracking_uri, Path.cwd())
        experiment_id = tracking.open_experiment(uri, config.mlflow.experiment_name)
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = [uris.mask_override(o) for o in config.hydra.overrides.task]
        client = MlflowClient(uri)
        parent = client.create_run(
            experiment_id,
            run_name=config.mlflow.run_name or f"sweep {sweep_dir.parent.name}/{sweep_dir.name}",
            tags={
                "linreg.kind": "sweep",
                "linreg.sweep_dir": str(sweep_dir),
                "linreg.overrides": " ".join(overrides),
                "linreg.command": shlex.join(["python", "-m", "linreg_exp", "-m", *overrides]),
                "linreg.launcher": str(config.hydra.launcher._target_).rsplit(".", 1)[-1],
                "linreg.sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
            },
        )
        info = SweepInfo(uri, experiment_id, parent.info.run_id)
        path = sweep_dir / SWEEP_FILE
        path.write_text(json.dumps(asdict(info)))
        os.environ[SWEEP_FILE_ENV] = str(path)
        _open_sweeps[info.parent_run_id] = info
        log.info(
            "MLflow parent run %s: %s",
            info.parent_run_id,
            uris.run_url(uri, experiment_id, info.parent_run_id),
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_open_sweeps(None)


def close_open_sweeps(status: str | None) -> None:
    """Summarise and close every parent run still open (None = status from the jobs' outcome)."""
    if not _open_sweeps:
        return
    from mlflow.tracking import MlflowClient

    while _open_sweeps:
        _, info = _open_sweeps.popitem()
        try:
            finalize_parent(info, status)
        except Exception:
            log.exception("could not summarise sweep %s; closing it", info.parent_run_id)
            MlflowClient(info.tracking_uri).set_terminated(info.parent_run_id, status or "FAILED")
    os.environ.pop(SWEEP_FILE_ENV, None)


atexit.register(close_open_sweeps, "FAILED")


def _outcome(run: Run) -> str:
    outcome = run.data.tags.get("linreg.outcome")
    if outcome:
        return outcome
    return {"FINISHED": "completed", "KILLED": "interrupted"}.get(run.info.status, "error")


def _swept_keys(children: list[Run]) -> list[str]:
    keys = sorted({k for run in children for k in run.data.params})
    return [k for k in keys if len({run.data.params.get(k) for run in children}) > 1]


def finalize_parent(info: SweepInfo, status: str | None) -> str:
    """Log counts, the best job, summary.csv and sweep.png on the parent, then close it."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.tracking import MlflowClient

    from linreg_exp import plots

    client = MlflowClient(info.tracking_uri)
    children = client.search_runs(
        [info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{info.parent_run_id}'",
        max_results=50_000,
        order_by=["attributes.start_time ASC"],
    )
    for child in children:  # a job killed hard (SIGKILL, lost node) never closed its run
        if child.info.status == "RUNNING":
            client.set_terminated(child.info.run_id, "KILLED")
    outcomes = Counter(_outcome(run) for run in children)
    swept = _swept_keys(children)
    completed = [
        r for r in children if _outcome(r) == "completed" and "final_loss" in r.data.metrics
    ]
    metrics: dict[str, float] = {
        "jobs_total": len(children),
        "jobs_finished": outcomes["completed"],
        "jobs_diverged": outcomes["diverged"],
        "jobs_failed": outcomes["error"],
        "jobs_killed": outcomes["interrupted"],
    }
    parent_id = info.parent_run_id
    if completed:
        best = min(completed, key=lambda r: r.data.metrics["final_loss"])
        metrics["best_final_loss"] = best.data.metrics["final_loss"]
        client.log_batch(
            parent_id,
            params=[Param(f"best.{key}", best.data.params.get(key, "")) for key in swept],
            tags=[
                RunTag("linreg.best_run_id", best.info.run_id),
                RunTag("linreg.best_command", best.data.tags.get("linreg.command", "")),
            ],
        )
    now = int(time.time() * 1000)
    client.log_batch(parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
    client.log_text(parent_id, _summary_csv(children, swept), "summary.csv")
    jobs = [
        plots.SweepJob(
            params=run.data.params,
            final_loss=run.data.metrics.get("final_loss", math.nan),
            diverged=_outcome(run) == "diverged",
            loss_history=[
                m.value
                for m in sorted(
                    client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step
                )
            ],
        )
        for run in children
    ]
    if jobs:
        figure = plots.sweep_figure(jobs, swept)
        client.log_figure(parent_id, figure, "sweep.png")
        sweep_dir = client.get_run(parent_id).data.tags.get("linreg.sweep_dir")
        if sweep_dir and Path(sweep_dir).is_dir():
            plots.save_figure(figure, Path(sweep_dir) / "sweep.png")
    if status is None:
        failed = outcomes["error"] or outcomes["interrupted"]
        status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
    client.set_terminated(parent_id, status)
    log.info(
        "sweep %s %s: %d jobs, %d finished, %d diverged, %d failed%s",
        parent_id,
        status,
        len(children),
        outcomes["completed"],
        outcomes["diverged"],
        outcomes["error"],
        f"; best final_loss {metrics['best_final_loss']:.6g}" if completed else "",
    )
    return status


def _summary_csv(children: list[Run], swept: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "run_id",
            "overrides",
            *swept,
            "final_loss",
            "final_weight",
            "final_bias",
            "status",
            "outcome",
        ]
    )
    for run in children:
        m = run.data.metrics
        writer.writerow(
            [
                run.info.run_id,
                run.data.tags.get("linreg.overrides", ""),
                *(run.data.params.get(k, "") for k in swept),
                m.get("final_loss", ""),
                m.get("final_weight", ""),
                m.get("final_bias", ""),
                run.info.status,
                _outcome(run),
            ]
        )
    return out.getvalue()
