"""The helper process, from the job's side: start it, hand it requests, hang up.

The helper (helper_main.py) answers the tracking protocol with a Session of its own, so that
MLflow's imports and the store's opening run beside the job's own start-up (startup.py says
why). It lives in its own session and ignores SIGINT and SIGTERM: a signal reaches the job,
which ends its run KILLED through the pipe. If the job dies without a word (even by SIGKILL),
the pipe closes and the helper ends what the job left open KILLED, keeping every epoch it got.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing import Pipe

from linreg_exp.tracking.messages import Reply, Request

EXIT_WAIT_SECONDS = 30  # after Close the helper has nothing left but to exit


class Helper:
    """A helper process and our end of its pipe (a Transport for the Tracker)."""

    def __init__(self, preload: Sequence[str] = ()) -> None:
        """`preload`: modules the helper imports once the store is open, before it is asked
        for more (the report's plotting, so that drawing a run's pictures starts at once)."""
        ours, theirs = Pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import signal; signal.signal(signal.SIGUSR1, signal.SIG_IGN)"
             "\nfrom linreg_exp.tracking.helper_main import main; main()",  # SIGUSR1: see serve
             str(theirs.fileno()), *preload],
            pass_fds=[theirs.fileno()],
            start_new_session=True,  # outside the job's process group: Ctrl-C goes to the job
        )  # fmt: skip
        theirs.close()
        self.conn = ours
        self.asked = False  # a helper asked nothing has only imported MLflow: `close` ends it

    def request(self, message: Request) -> Reply:
        self.asked = True
        try:
            self.conn.send(message)
            reply: Reply = self.conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(
                "the MLflow helper process ended unexpectedly (its error is above)"
            ) from None
        return reply

    def stop_waiting(self) -> None:
        """The job is stopping: a store that does not answer is waited for no more (the
        helper spools instead)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGUSR1)

    def close(self, wait: float = EXIT_WAIT_SECONDS) -> None:
        """Hang up: the helper ends whatever is still open and exits (killed after `wait`, or at
        once if it was asked nothing: it holds nothing, and would finish importing MLflow)."""
        self.conn.close()
        if not self.asked:
            self.process.kill()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
