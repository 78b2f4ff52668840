"""A sweep's parent run at its end: counts, the best job, summary.csv and sweep.png; closed.

Read back from the store, so it covers every child however it ran (in this process, in joblib
workers, on SLURM nodes). Loss curves come through MLflow's sampled history (`sampled_loss`): a
bounded number of points a child, however long it trained.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Run, RunStatus, RunTag
from mlflow.store.tracking.rest_store import RestStore
from mlflow.tracking import MlflowClient
from mlflow.utils.rest_utils import http_request

from linreg_exp.tracking.messages import (
    FAILED,
    FINISHED,
    KILLED,
    TAG_FAILURE,
    TAG_OUTCOME,
)

CURVE_POINTS = 500  # points a child's loss curve is drawn from in sweep.png


def outcome(run: Run) -> str:
    """completed, diverged, interrupted or error; running for a job still at work elsewhere."""
    told = run.data.tags.get(TAG_OUTCOME)
    if told:
        return told
    known = {FINISHED: "completed", KILLED: "interrupted", "RUNNING": "running"}
    return known.get(run.info.status, "error")


def _swept_keys(children: list[Run]) -> list[str]:
    keys = sorted({k for run in children for k in run.data.params})
    return [k for k in keys if len({run.data.params.get(k) for run in children}) > 1]


def close_parent(
    client: MlflowClient, experiment_id: str, parent_id: str, status: str | None, reap: bool
) -> str:
    """Summarise the children on the parent and end it; returns a line for the console.

    `status` None: FINISHED unless a job failed or was interrupted. `reap`: a child still
    RUNNING has vanished (every job has returned). A summary that cannot be made still ends
    the parent."""
    try:
        return _summarise(client, experiment_id, parent_id, status, reap)
    except Exception as error:
        status = status or FAILED
        client.set_terminated(parent_id, status)
        return f"sweep {parent_id} {status} (no summary: {type(error).__name__}: {error})"


def children_of(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The parent's children, the latest attempt of each job (a resumed or requeued sweep
    reruns a job as a new child with the same job number)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=50_000,
        order_by=["attributes.start_time ASC"],
    )
    latest = {run.data.tags.get("linreg.job_num", run.info.run_id): run for run in runs}
    return list(latest.values())


def _summarise(
    client: MlflowClient, experiment_id: str, parent_id: str, status: str | None, reap: bool
) -> str:
    children = children_of(client, experiment_id, parent_id)
    if not children and status is not None:  # stopped before any job ran (a rejected override)
        client.set_terminated(parent_id, status)
        client.delete_run(parent_id)  # an empty record of nothing; `mlflow gc` purges it
        return f"sweep {parent_id} {status} before any job ran: its parent run is deleted"
    vanished = [child for child in children if reap and child.info.status == "RUNNING"]
    for child in vanished:  # a job gone without a word (SIGKILL, OOM killer, a lost node)
        reason = "the job vanished: still RUNNING when its sweep ended"
        client.log_batch(
            child.info.run_id,
            tags=[RunTag(TAG_OUTCOME, "interrupted"), RunTag(TAG_FAILURE, reason)],
        )
        client.set_terminated(child.info.run_id, KILLED)
    if vanished:
        children = children_of(client, experiment_id, parent_id)
    outcomes = Counter(outcome(run) for run in children)
    swept = _swept_keys(children)
    completed = [
        r for r in children if outcome(r) == "completed" and "final_loss" in r.data.metrics
    ]
    metrics: dict[str, float] = {
        "jobs_total": len(children),
        "jobs_finished": outcomes["completed"],
        "jobs_diverged": outcomes["diverged"],
        "jobs_failed": outcomes["error"],
        "jobs_killed": outcomes["interrupted"],
    }
    tags = []
    if completed:  # tags, not params: a resumed sweep's best may change, and params cannot
        best = min(completed, key=lambda r: r.data.metrics["final_loss"])
        metrics["best_final_loss"] = best.data.metrics["final_loss"]
        tags = [RunTag(f"best.{key}", best.data.params.get(key, "")) for key in swept] + [
            RunTag("linreg.best_run_id", best.info.run_id),
            RunTag("linreg.best_command", best.data.tags.get("linreg.command", "")),
        ]
    now = int(time.time() * 1000)
    client.log_batch(parent_id, [Metric(k, v, now, 0) for k, v in metrics.items()], tags=tags)
    client.log_text(parent_id, summary_csv(children, swept), "summary.csv")
    if children:
        _log_sweep_figure(client, parent_id, children, swept)
    if status is None:
        failed = outcomes["error"] or outcomes["interrupted"]
        status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
    client.set_terminated(parent_id, status)
    best_text = f"; best final_loss {metrics['best_final_loss']:.6g}" if completed else ""
    return (
        f"sweep {parent_id} {status}: {len(children)} jobs, {outcomes['completed']} finished, "
        f"{outcomes['diverged']} diverged, {outcomes['error']} failed, "
        f"{outcomes['interrupted']} killed{best_text}"
    )


def _log_sweep_figure(
    client: MlflowClient, parent_id: str, children: list[Run], swept: list[str]
) -> None:
    from linreg_exp import plots

    curves = sampled_loss(client, [run.info.run_id for run in children])
    jobs = [
        plots.SweepJob(
            params=run.data.params,
            final_loss=run.data.metrics.get("final_loss", math.nan),
            diverged=outcome(run) == "diverged",
            loss_curve=sorted(curves.get(run.info.run_id, [])),
        )
        for run in children
    ]
    figure = plots.sweep_figure(jobs, swept)
    client.log_figure(parent_id, figure, "sweep.png")
    sweep_dir = client.get_run(parent_id).data.tags.get("linreg.sweep_dir")
    if sweep_dir and Path(sweep_dir).is_dir():
        plots.save_figure(figure, Path(sweep_dir) / "sweep.png")


def sampled_loss(client: MlflowClient, run_ids: list[str]) -> dict[str, list[tuple[int, float]]]:
    """At most CURVE_POINTS (step, loss) points a run, first and last kept: MLflow's sampled
    read, which its UI charts use. A SQL store samples in the database; over HTTP, MLflow's
    client would fetch every point, so ask the server's own sampling endpoint instead."""
    store = client._tracking_client.store  # private on the client; the store's API is public
    points: list[dict[str, Any]] = []
    if isinstance(store, RestStore):
        for start in range(0, len(run_ids), 100):  # the server takes 100 runs a request
            response = http_request(  # type: ignore[no-untyped-call]
                store.get_host_creds(),
                "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                "GET",
                params={"run_ids": run_ids[start : start + 100], "metric_key": "loss",
                        "max_results": CURVE_POINTS},
            )  # fmt: skip
            points += response.json().get("metrics", [])
    else:
        sampled = store.get_metric_history_bulk_interval(run_ids, "loss", CURVE_POINTS, None, None)
        points = [{"run_id": m.run_id, "step": m.step, "value": m.value} for m in sampled]
    curves: dict[str, list[tuple[int, float]]] = {}
    for point in points:
        curves.setdefault(point["run_id"], []).append((int(point["step"]), float(point["value"])))
    return curves


def summary_csv(children: list[Run], swept: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["run_id", "overrides", *swept, "final_loss", "final_weight", "final_bias", "status",
         "outcome"]
    )  # fmt: skip
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
                outcome(run),
            ]
        )
    return out.getvalue()
