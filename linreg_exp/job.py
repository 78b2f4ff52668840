"""One job, end to end: config → data → training → named metrics → tracking, then its report.

`run(cfg, job, tracker)` is a plain function of the typed config (schema.LinregConfig: the Hydra
adapter, app.py, validates and types what Hydra composed) and a small description of this one job
(jobspec.Job); the launch (sweeps/) builds the description and picks the tracker, and nothing here
reads Hydra's state or knows about sweeps. Nothing here imports MLflow either: the
tracker owns the run, in a helper process or in this one.

A job is the engine's program of one config (engine.run_program): the same trainer and the same
run lifecycle as a batched sweep's N. Everything that can reject the job (its values, its data,
the device, the optimizer's arguments, the store) happens before its MLflow run exists; once it
exists, the lifecycle ends it with an outcome, however training ends.
"""

from __future__ import annotations

from linreg_exp import tracking
from linreg_exp.engine import run_program
from linreg_exp.jobspec import Job, JobResult
from linreg_exp.schema import LinregConfig
from linreg_exp.tracking.messages import Open
from linreg_exp.tracking.recorder import Tracker


def run(cfg: LinregConfig, job: Job, tracker: Tracker) -> JobResult:
    """Train and track one job, its runs recorded through `tracker`."""
    (result,) = run_program([(cfg, job)], [tracker])
    if isinstance(result, Exception):
        raise result
    return result


def run_here(cfg: LinregConfig, job: Job) -> JobResult:
    """`run`, tracked in this process (a notebook, a test): the run has ended in the store when
    this returns."""
    tracker = tracking.in_process(
        Open(job.tracking_uri, cfg.mlflow.experiment_name, parent_run_id=job.parent_run_id,
             spool_dir=str(job.output_dir), outage_timeout=cfg.mlflow.outage_timeout)
    )  # fmt: skip
    try:
        return run(cfg, job, tracker)
    finally:
        tracker.close()
