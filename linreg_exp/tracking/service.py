"""Where a tracker's Session runs: in a helper process, or in this one.

`python -m linreg_exp` starts the helper first thing (`prestart`), so that MLflow's imports and
the store's opening run beside Hydra's composition and torch's imports instead of after them. It
lives in its own session and ignores SIGINT and SIGTERM: a signal reaches the job, which ends
its run KILLED through the pipe. If the job dies without a word (even by SIGKILL), the pipe
closes and the helper ends what the job left open KILLED, keeping every epoch it received.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from linreg_exp.tracking.messages import Reply, Request

EXIT_WAIT_SECONDS = 30  # after Close the helper has nothing left but to exit


class InProcess:
    """The Session in this process, answering on the tracker's worker thread."""

    def __init__(self) -> None:
        from linreg_exp.tracking.store import Session

        self.session = Session()

    def request(self, message: Request) -> Reply:
        return self.session.handle(message)

    def close(self) -> None:
        """Nothing to hang up: Close has ended what was open."""


class Helper:
    """The helper process and our end of its pipe."""

    def __init__(self) -> None:
        ours, theirs = Pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from linreg_exp.tracking import service; service.main()",
             str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            start_new_session=True,  # outside the job's process group: Ctrl-C goes to the job
        )  # fmt: skip
        theirs.close()
        self.conn = ours
        self.pid = os.getpid()  # a forked child must not use this pipe

    def request(self, message: Request) -> Reply:
        try:
            self.conn.send(message)
            reply: Reply = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(
                "the MLflow helper process ended unexpectedly (its error is above)"
            ) from None
        return reply

    def close(self, wait: float = EXIT_WAIT_SECONDS) -> None:
        """Hang up: the helper ends whatever is still open and exits (killed after `wait`)."""
        self.conn.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_prestarted: Helper | None = None


def prestart() -> None:
    """Start the helper now, so that its imports overlap the job's (POSIX: it takes a pipe)."""
    global _prestarted
    if _prestarted is None and sys.platform != "win32":
        _prestarted = Helper()


def take_prestarted() -> Helper | None:
    """The prestarted helper, for the first tracker of this process; None after that."""
    global _prestarted
    helper, _prestarted = _prestarted, None
    return helper if helper is not None and helper.pid == os.getpid() else None


def discard_prestarted() -> None:
    """Stop a helper that no tracker took (--help, an error before any run): it has touched
    no store yet."""
    helper = take_prestarted()
    if helper is not None:
        helper.close(wait=0)


def serve(conn: Connection) -> None:
    """Answer requests in order until the job hangs up; then end what it left open."""
    from linreg_exp.tracking.store import Session

    session = Session()
    try:
        while True:
            conn.send(session.handle(conn.recv()))
    except (EOFError, OSError):  # the job hung up: after Close, or killed before it
        session.close_all("the job process ended before reporting its outcome")


def main() -> None:
    """The helper process: serve the pipe whose descriptor is argv[1], then exit at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(int(sys.argv[1])))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every run is ended and committed: skip tearing down MLflow's modules, which the job,
    # waiting for this process in Helper.close, would otherwise wait for.
    os._exit(0)
