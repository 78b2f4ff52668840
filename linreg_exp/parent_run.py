"""A sweep's parent run in MLflow: opened before any job, summarised and closed after the last.

Both the launching process (launchers that run jobs elsewhere: joblib, submitit) and the
companion process (the basic launcher, whose jobs record through it) call these; nothing here
imports Hydra, and MLflow and matplotlib are imported inside the functions.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from linreg_exp.uris import run_url

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepTarget:
    """Everything the parent run needs, composed by the launching process."""

    tracking_uri: str
    experiment_name: str
    run_name: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepInfo:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    @property
    def url(self) -> str:
        return run_url(self.tracking_uri, self.experiment_id, self.parent_run_id)


def open_parent(target: SweepTarget) -> SweepInfo:
    """Open (or create) the store and the experiment, and create the RUNNING parent run."""
    from linreg_exp import tracking

    experiment_id = tracking.open_experiment(target.tracking_uri, target.experiment_name)
    return create_parent(target, experiment_id)


def create_parent(target: SweepTarget, experiment_id: str) -> SweepInfo:
    """The RUNNING parent run, in an experiment already opened."""
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(target.tracking_uri).create_run(
        experiment_id, run_name=target.run_name, tags=target.tags
    )
    return SweepInfo(target.tracking_uri, experiment_id, parent.info.run_id)


def _outcome(run: Run) -> str:
    outcome = run.data.tags.get("linreg.outcome")
    if outcome:
        return outcome
    return {"FINISHED": "completed", "KILLED": "interrupted"}.get(run.info.status, "error")


def _swept_keys(children: list[Run]) -> list[str]:
    keys = sorted({k for run in children for k in run.data.params})
    return [k for k in keys if len({run.data.params.get(k) for run in children}) > 1]


def finalize_parent(info: SweepInfo, status: str | None) -> tuple[str, str]:
    """Log counts, the best job, summary.csv and sweep.png on the parent, then close it.

    `status` None means: FINISHED unless a job failed or was interrupted. Returns the status
    and a one-line summary for the console."""
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
    parent_id = info.parent_run_id
    if not children and status is not None:  # stopped before any job ran (a rejected override)
        client.set_terminated(parent_id, status)
        client.delete_run(parent_id)  # an empty record of nothing; `mlflow gc` purges it
        return status, f"sweep {parent_id} {status} before any job ran: its parent run is deleted"
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
    best_text = f"; best final_loss {metrics['best_final_loss']:.6g}" if completed else ""
    summary = (
        f"sweep {parent_id} {status}: {len(children)} jobs, {outcomes['completed']} finished, "
        f"{outcomes['diverged']} diverged, {outcomes['error']} failed{best_text}"
    )
    return status, summary


def close_parent(info: SweepInfo, status: str | None) -> tuple[str, str]:
    """finalize_parent, and if the summary cannot be made, at least close the parent."""
    from mlflow.tracking import MlflowClient

    try:
        return finalize_parent(info, status)
    except Exception:
        log.exception("could not summarise sweep %s; closing it", info.parent_run_id)
        status = status or "FAILED"
        MlflowClient(info.tracking_uri).set_terminated(info.parent_run_id, status)
        return status, f"sweep {info.parent_run_id} {status} (no summary: see the error above)"


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
