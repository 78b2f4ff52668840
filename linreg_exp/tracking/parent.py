"""A sweep's parent run: found again when its sweep is launched again, the jobs it keeps, and
its end (counts, the best job, its report's files, its status).

Read back from the store, so the end covers every child however it ran (in this process, in
joblib workers, on SLURM nodes). Every value searched for is a run id, a number or a hash, so
no path or name a user typed ever goes into a search filter.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from mlflow.entities import Metric, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from linreg_exp.errors import ConfigError
from linreg_exp.tracking.messages import ChildRun, Parent, SweepReport, SweepSummary
from linreg_exp.vocab import FAILED, FINISHED, KILLED, LOSS_CURVE_FILE, RUNNING, Outcome, Tag

IDENTITY = (Tag.JOB_NUM, Tag.CONFIG_HASH)  # a resumed sweep keeps a FINISHED job by these


def _literal(value: str) -> str:
    """A value for a search filter: ids, numbers and hashes only, which need no quoting."""
    if not value.isalnum():
        raise ValueError(f"not a searchable id: {value!r}")
    return f"'{value}'"


def _children_filter(parent_id: str) -> str:
    return f"tags.mlflow.parentRunId = {_literal(parent_id)}"


def reopen(client: MlflowClient, experiment_id: str, parent: Parent) -> str | None:
    """The parent an earlier launch of this sweep left (the same sweep key), RUNNING again."""
    if Tag.SWEEP_KEY not in parent.tags:  # a sweep without a sweep dir is never resumed
        return None
    sweep_key = _literal(parent.tags[Tag.SWEEP_KEY])
    earlier = client.search_runs([experiment_id], f"tags.`{Tag.SWEEP_KEY}` = {sweep_key}",
                                 max_results=1)  # fmt: skip
    if not earlier:
        return None
    tags, sweep_dir = earlier[0].data.tags, parent.tags.get(Tag.SWEEP_DIR)
    if tags.get(Tag.OVERRIDES) != parent.tags.get(Tag.OVERRIDES):
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} holds another sweep ({tags.get(Tag.OVERRIDES)}"
            "): rerun it with those overrides to resume it, or choose a new hydra.sweep.dir"
        )
    client.update_run(earlier[0].info.run_id, status=RUNNING)
    return str(earlier[0].info.run_id)


def finished_child(
    client: MlflowClient, experiment_id: str, parent_id: str, identity: dict[str, str] | None = None
) -> Run | None:
    """A FINISHED child of the parent (with these identity tags, if given)."""
    query = f"{_children_filter(parent_id)} and attributes.status = '{FINISHED}'"
    query += "".join(f" and tags.`{key}` = {_literal(value)}"
                     for key, value in (identity or {}).items())  # fmt: skip
    found = client.search_runs([experiment_id], query, max_results=1)
    return found[0] if found else None


def children_of(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The parent's children, the latest attempt of each job (a resumed or requeued sweep
    reruns a job as a new child with the same job number)."""
    runs = client.search_runs([experiment_id], _children_filter(parent_id), max_results=50_000,
                              order_by=["attributes.start_time ASC"])  # fmt: skip
    latest = {run.data.tags.get(Tag.JOB_NUM, run.info.run_id): run for run in runs}
    return list(latest.values())


def close(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    status: str | None,
    reap: bool,
    sweep: Parent,
) -> str:
    """Summarise the children on the parent and end it; returns a line for the console.

    `status` None: FINISHED unless a job failed or was interrupted. `reap`: a child still
    RUNNING has vanished (every job has returned). A summary that cannot be made still ends
    the parent."""
    try:
        return _summarise(client, experiment_id, parent_id, status, reap, sweep)
    except Exception as error:
        status = status or FAILED
        client.set_terminated(parent_id, status)
        return f"sweep {parent_id} {status} (no summary: {type(error).__name__}: {error})"


def _summarise(
    client: MlflowClient,
    experiment_id: str,
    parent_id: str,
    status: str | None,
    reap: bool,
    sweep: Parent,
) -> str:
    children = children_of(client, experiment_id, parent_id)
    if not children and status is not None:  # stopped before any job ran (a rejected override)
        client.set_terminated(parent_id, status)
        client.delete_run(parent_id)  # an empty record of nothing; `mlflow gc` purges it
        return f"sweep {parent_id} {status} before any job ran: its parent run is deleted"
    vanished = [child for child in children if reap and child.info.status == RUNNING]
    for child in vanished:  # a job gone without a word (SIGKILL, OOM killer, a lost node)
        reason = "the job vanished: still RUNNING when its sweep ended"
        client.log_batch(child.info.run_id, tags=[RunTag(Tag.OUTCOME, Outcome.INTERRUPTED),
                                                  RunTag(Tag.FAILURE, reason)])  # fmt: skip
        client.set_terminated(child.info.run_id, KILLED)
    if vanished:
        children = children_of(client, experiment_id, parent_id)
    outcomes = Counter(Outcome.of(run.info.status, run.data.tags.get(Tag.OUTCOME))
                       for run in children)  # fmt: skip
    swept, objective = _swept_keys(children), sweep.objective
    completed = [r for r in children if Outcome.of(r.info.status, r.data.tags.get(Tag.OUTCOME))
                 == Outcome.COMPLETED and objective in r.data.metrics]  # fmt: skip
    metrics: dict[str, float] = {
        "jobs_total": len(children),
        "jobs_finished": outcomes[Outcome.COMPLETED],
        "jobs_diverged": outcomes[Outcome.DIVERGED],
        "jobs_failed": outcomes[Outcome.ERROR],
        "jobs_killed": outcomes[Outcome.INTERRUPTED],
    }
    pruned = [r for r in children if r.data.tags.get(Tag.OUTCOME) == Outcome.PRUNED]
    if pruned:  # a sweep with a pruner: how many it stopped, and the epochs that saved
        metrics["jobs_pruned"] = len(pruned)
        metrics["epochs_saved"] = sum(_epochs_saved(r) for r in pruned)
    tags = []
    best = None
    if completed:  # tags, not params: a resumed sweep's best may change, and params cannot
        pick = min if sweep.direction == "minimize" else max
        best = pick(completed, key=lambda r: r.data.metrics[objective])
        metrics[f"best_{objective}"] = best.data.metrics[objective]
        tags = [RunTag(f"{Tag.BEST_PREFIX}{key}", best.data.params.get(key, "")) for key in swept]
        tags += [RunTag(Tag.BEST_RUN_ID, best.info.run_id),
                 RunTag(Tag.BEST_COMMAND, best.data.tags.get(Tag.COMMAND, ""))]  # fmt: skip
    now = int(time.time() * 1000)
    client.log_batch(parent_id, [Metric(k, v, now, 0) for k, v in metrics.items()], tags=tags)
    registered = ""
    if best is not None and sweep.register_best:
        version = register(client, best, sweep.register_best)
        registered = (f"\nbest model registered: models:/{sweep.register_best}@{BEST_ALIAS} "
                      f"(version {version})")  # fmt: skip
    if sweep.report is not None and children:
        _log_report(client, parent_id, sweep.report, SweepSummary(
            [_child(client, run) for run in children], swept, objective))  # fmt: skip
    if status is None:
        failed = outcomes[Outcome.ERROR] or outcomes[Outcome.INTERRUPTED]
        status = FAILED if failed else FINISHED
    client.set_terminated(parent_id, status)
    best_text = ""
    if best is not None:  # which job, by its number and overrides, and its run
        job = best.data.tags.get(Tag.JOB_NUM, "?")
        overrides = best.data.tags.get(Tag.OVERRIDES, "")
        best_text = (f"; best {objective} {metrics[f'best_{objective}']:.6g}: job {job}"
                     f"{f' ({overrides})' if overrides else ''} [{best.info.run_id}]")  # fmt: skip
    pruned_text = (f", {len(pruned)} pruned ({int(metrics['epochs_saved'])} epochs saved)"
                   if pruned else "")  # fmt: skip
    return (
        f"sweep {parent_id} {status}: {len(children)} jobs, {outcomes[Outcome.COMPLETED]} "
        f"finished{pruned_text}, {outcomes[Outcome.DIVERGED]} diverged, "
        f"{outcomes[Outcome.ERROR]} failed, {outcomes[Outcome.INTERRUPTED]} killed{best_text}"
        f"{registered}"
    )


def _epochs_saved(run: Run) -> int:
    """The epochs a pruned run was spared: its trainer.epochs after the epoch it stopped at."""
    try:
        epochs = int(run.data.params["trainer.epochs"])
        stopped = int(run.data.tags[Tag.PRUNED_AT_EPOCH])
    except (KeyError, ValueError):
        return 0
    return max(0, epochs - (stopped + 1))


BEST_ALIAS = "best"


def register(client: MlflowClient, best: Run, name: str) -> str:
    """The best job's model as a new version of the registered model `name`, aliased "best";
    the version."""
    outputs = best.outputs.model_outputs if best.outputs else []
    if not outputs:
        raise RuntimeError(f"run {best.info.run_id} logged no model to register")
    model_id = outputs[0].model_id
    try:
        client.create_registered_model(name)
    except MlflowException as error:  # registered before: a new version of it
        if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    version = client.create_model_version(name, f"models:/{model_id}", best.info.run_id,
                                          model_id=model_id)  # fmt: skip
    client.set_registered_model_alias(name, BEST_ALIAS, version.version)
    return str(version.version)


def _swept_keys(children: list[Run]) -> list[str]:
    keys = sorted({k for run in children for k in run.data.params})
    return [k for k in keys if len({run.data.params.get(k) for run in children}) > 1]


def _child(client: MlflowClient, run: Run) -> ChildRun:
    return ChildRun(
        run_id=run.info.run_id,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        status=run.info.status,
        outcome=Outcome.of(run.info.status, run.data.tags.get(Tag.OUTCOME)),
        overrides=run.data.tags.get(Tag.OVERRIDES, ""),
        loss_curve=_loss_curve(client, run.info.run_id)
        if run.data.params.get("plots.enabled") == "True"  # a curve comes with the pictures
        else [],
    )


def _loss_curve(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    """The run's sampled loss, as its job logged it (a bounded file, whatever the run's length:
    MLflow's public client reads a metric's whole history); [] if the run has none."""
    with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stderr(io.StringIO()):
        try:  # (quietly: MLflow draws a progress bar for each download)
            path = client.download_artifacts(run_id, LOSS_CURVE_FILE, scratch)
            points = json.loads(Path(path).read_text())
        except Exception:  # a run that logged no curve (plots off, killed outright)
            return []
    return [(int(epoch), float(loss)) for epoch, loss in points if math.isfinite(loss)]


def _log_report(
    client: MlflowClient, parent_id: str, report: SweepReport, summary: SweepSummary
) -> None:
    """The report's files (sweep.png, summary.csv) in the sweep dir and on the parent."""
    sweep_dir = client.get_run(parent_id).data.tags.get(Tag.SWEEP_DIR)
    scratch = None if sweep_dir and Path(sweep_dir).is_dir() else tempfile.mkdtemp()
    try:
        for path in report(summary, str(scratch or sweep_dir)):
            client.log_artifact(parent_id, str(path))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
