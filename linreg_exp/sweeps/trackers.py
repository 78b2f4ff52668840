"""Which tracker a job records through: its launch's, where the job runs in the launching
process (a single run, the basic launcher), else one of its own in the job's process, on the
sweep's parent (joblib workers, submitit jobs), closed when the job ends."""

from __future__ import annotations

from linreg_exp import tracking
from linreg_exp.sweeps.launch import Launch, LaunchInfo
from linreg_exp.tracking.messages import Open
from linreg_exp.tracking.recorder import Tracker


def tracker_for_job(
    launch: Launch | None, info: LaunchInfo, output_dir: str
) -> tuple[Tracker, bool]:
    """The tracker, and whether the job owns it (closes it when it is done). A job's own spools
    in its output dir."""
    if launch is not None:
        return launch.tracker, False
    request = Open(
        info.tracking_uri,
        info.experiment_name,
        parent_run_id=info.parent_run_id,
        spool_dir=output_dir,
        outage_timeout=info.outage_timeout,
    )
    tracker = tracking.in_process(request)
    tracker.open()  # a job of a launched sweep (its parent exists): MLflow opens beside torch
    return tracker, True
