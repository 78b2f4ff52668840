"""Which tracker a job records through: its launch's, where the job runs in the launching
process (a single run, the basic launcher), else one of its own in the job's process, on the
sweep's parent (joblib workers, submitit jobs), closed when the job ends."""

from __future__ import annotations

from linreg_exp import tracking
from linreg_exp.sweeps.launch import Launch, LaunchInfo
from linreg_exp.tracking.messages import Open
from linreg_exp.tracking.recorder import Tracker


def writers(launch: Launch, count: int) -> list[Tracker]:
    """`count` trackers to record a batch of jobs run in this process (the batched launcher's):
    the launch's own and `count - 1` helper processes on the sweep's parent run, so that the
    batch's runs are written to the store in parallel (the store's work is the batch's floor)."""
    info, spool = launch.info, launch.tracker.open_request.spool_dir
    return [launch.tracker] + [
        tracking.in_helper(
            Open(
                info.tracking_uri,
                info.experiment_name,
                parent_run_id=info.parent_run_id,
                spool_dir=f"{spool}/.writers/{writer}" if spool else None,
                outage_timeout=info.outage_timeout,
            )
        )
        for writer in range(1, count)
    ]


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
    return tracking.in_process(request), True
