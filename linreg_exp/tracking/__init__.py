"""Tracking: everything that talks to MLflow, behind one protocol (messages.py).

    Tracker (recorder.py)  --requests, in order-->  Session (store.py): MlflowClient calls
       in the job             the helper's pipe        in a helper process (service.py)
                              (or a direct call)       (or in the job's own process)

`open_tracker` is the one place that decides where the Session runs. Importing this package
does not import MLflow.
"""

from __future__ import annotations

from linreg_exp.tracking.messages import Open
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.tracking.service import InProcess, discard_prestarted, prestart, take_prestarted

__all__ = ["InProcess", "Tracker", "discard_prestarted", "open_tracker", "prestart"]


def open_tracker(request: Open) -> Tracker:
    """A tracker that has started opening the store (`opened()` waits for it): through the
    helper that `python -m linreg_exp` started, if this process has one, else in this process
    (jobs that joblib or submitit run elsewhere, library use)."""
    helper = take_prestarted()
    return Tracker(helper if helper is not None else InProcess(), request)
