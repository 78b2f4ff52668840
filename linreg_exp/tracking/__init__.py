"""Tracking: everything that talks to MLflow, behind one protocol (messages.py).

    Tracker (recorder.py)  --requests, in order-->  Session (store.py): MlflowClient calls
       in the job             a helper's pipe          in a helper process (service.py)
                              (or a direct call)       (or in the job's own process)

`open_tracker` is the one place that decides where the Session runs: in the helper that
`python -m linreg_exp` started first thing, if this process has one, else in this process
(jobs that a joblib or submitit launcher runs elsewhere; library use). Importing this package
does not import MLflow.
"""

from __future__ import annotations

from linreg_exp.tracking.messages import Open, Reply, Request
from linreg_exp.tracking.recorder import Tracker

# service.py is imported inside the functions: it is also the helper's `python -m` entry point.


class InProcess:
    """The Session in this process, answering on the tracker's worker thread."""

    def __init__(self) -> None:
        from linreg_exp.tracking.store import Session

        self.session = Session()

    def request(self, message: Request) -> Reply:
        return self.session.handle(message)

    def close(self) -> None:
        """Nothing to hang up: Close has ended what was open."""


def open_tracker(request: Open) -> Tracker:
    """A tracker that has started opening the store (`opened()` waits for it)."""
    from linreg_exp.tracking import service

    helper = service.take_prestarted()
    return Tracker(helper if helper is not None else InProcess(), request)


def prestart() -> None:
    """Start the helper process now, so that MLflow's imports overlap the job's own."""
    from linreg_exp.tracking import service

    service.prestart()


def discard_prestarted() -> None:
    """Stop a helper that no tracker took (--help, an error before any run)."""
    from linreg_exp.tracking import service

    service.discard_prestarted()
