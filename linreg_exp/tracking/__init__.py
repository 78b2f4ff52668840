"""Tracking: everything that talks to MLflow, behind one protocol (messages.py).

    Tracker (recorder.py)  --requests, in order-->  Session (session.py), in a helper process
       in the job             a helper's pipe          (helper.py) or in the job's own (InProcess):
       runs: stream.py        (or a direct call)       transport.py  retries, the outage clock,
                                                          |          spooling (backlog.py, spool.py)
                                                       writer.py     MlflowClient calls

Which of the two a job gets is decided by the launch (sweeps/trackers.py). Importing this
package, its protocol, its recorder or the helper's job side does not import MLflow.
"""

from __future__ import annotations

from linreg_exp.tracking.messages import Open
from linreg_exp.tracking.recorder import Tracker


def in_process(request: Open) -> Tracker:
    """A tracker whose Session runs in this process (MLflow is imported now)."""
    from linreg_exp.tracking.session import InProcess

    return Tracker(InProcess(), request)


def in_helper(request: Open, preload: tuple[str, ...] = ()) -> Tracker:
    """A tracker whose Session runs in a new helper process (see helper.py)."""
    from linreg_exp.tracking.helper import Helper
    from linreg_exp.tracking.uris import store_module

    module = store_module(request.tracking_uri)
    return Tracker(Helper(preload, ahead=(module,) if module else ()), request)
