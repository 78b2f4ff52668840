"""Where the tracking layers run: the one place they are put together.

    Tracker (recorder.py)  ->  Resilient (transport.py)  ->  Writer (writer.py)  ->  MLflow
       in the job              retries, the outage clock,    MlflowClient calls
                               the spool (spool.py) and
                               its live drain

A Session is the transport over the writer, answering one Tracker's requests in order. It runs
in the helper process (helper_main.py, reached through helper.py's pipe) or in the job's own
(InProcess, called on the tracker's worker thread); `linreg-exp sync` replays spools through
one. Which of the two a job gets is the launch's choice (tracking/__init__.py's in_process and
in_helper); either way the layers are these, built here.
"""

from __future__ import annotations

from collections.abc import Callable

from mlflow.tracking import MlflowClient

from linreg_exp.tracking.messages import DatasetInfo, Reply, Request
from linreg_exp.tracking.outages import Clock
from linreg_exp.tracking.transport import Resilient
from linreg_exp.tracking.writer import Writer, _OpenRun


class Session:
    """The MLflow side of one Tracker (see messages.py for the protocol): a Resilient
    transport over a Writer."""

    def __init__(
        self, stop_waiting: Callable[[], bool] = lambda: False, clock: Clock | None = None
    ) -> None:
        self.writer = Writer()
        self.transport = Resilient(self.writer, stop_waiting, clock)

    def handle(self, request: Request) -> Reply:
        """Answer one request; an error is a Failed reply, and the session goes on."""
        return self.transport.handle(request)

    def adopt(self, key: str, run_id: str, last_step: int = -1) -> bool:
        """Take over a run the store has, if it is still RUNNING (sync: see Writer.adopt)."""
        return self.writer.adopt(key, run_id, last_step)

    def close_all(self, reason: str) -> None:
        """The job is gone without a word (killed outright): end what it left open, KILLED."""
        self.transport.close_all(reason)

    @property
    def client(self) -> MlflowClient | None:
        return self.writer.client

    @property
    def parent_run_id(self) -> str | None:
        return self.writer.parent_run_id

    @property
    def runs(self) -> dict[str, _OpenRun]:
        return self.writer.runs

    def _log_dataset(self, run_id: str, info: DatasetInfo) -> None:
        self.writer._log_dataset(run_id, info)


class InProcess:
    """A Session in this process (a Transport), answering on the tracker's worker thread."""

    def __init__(self) -> None:
        self.stopping = False  # a plain flag: set in a signal handler, where no lock is safe
        self.session = Session(stop_waiting=lambda: self.stopping)

    def stop_waiting(self) -> None:
        self.stopping = True

    def request(self, message: Request) -> Reply:
        return self.session.handle(message)

    def close(self) -> None:
        """Nothing to hang up: Close has ended what was open."""
