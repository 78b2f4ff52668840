"""The helper process, from the job's side: start it, hand it requests, hang up.

The helper (helper_main.py) answers the tracking protocol with a Session of its own, so that
MLflow's imports and the store's opening run beside the job's own start-up (startup.py says
why). It lives in its own session and ignores SIGINT and SIGTERM: a signal reaches the job,
which ends its run KILLED through the pipe. If the job dies without a word (even by SIGKILL),
the pipe closes and the helper ends what the job left open KILLED, keeping every epoch it got.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from linreg_exp.tracking.messages import Reply, Request

EXIT_WAIT_SECONDS = 30  # after Close the helper has nothing left but to exit


class Helper:
    """A helper process and our end of its pipe (a Transport for the Tracker)."""

    def __init__(self, preload: Sequence[str] = (), ahead: Sequence[str] = ()) -> None:
        """`preload`: modules the helper imports once the store is open, before it is asked
        for more (the report's plotting, so that drawing a run's pictures starts at once).
        `ahead`: modules it imports at once, while it waits for the store to be asked for (the
        store's own: uris.store_module). The process started early (`start_early`) is taken
        if there is one."""
        global _early
        process, conn = _early or _spawn()
        _early = None
        conn.send((tuple(ahead), tuple(preload)))  # its first message: see helper_main.serve
        self.process, self.conn = process, conn
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


_early: tuple[subprocess.Popen[bytes], Connection] | None = None


def start_early() -> None:
    """Start the launch's helper now, before Hydra composes the config: importing MLflow takes
    it about 1.3 s of CPU, and a sweep's first batch (or a run's store) waits for it. The
    first Helper takes it; one never taken is ended at exit (it was asked nothing)."""
    global _early
    if _early is None:
        _early = _spawn()
        atexit.register(_end_early)


def _end_early() -> None:
    global _early
    if _early is not None:
        process, conn = _early
        _early = None
        conn.close()
        process.kill()
        process.wait()


def _spawn() -> tuple[subprocess.Popen[bytes], Connection]:
    ours, theirs = Pipe()
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal; signal.signal(signal.SIGUSR1, signal.SIG_IGN)"
         "\nfrom linreg_exp.tracking.helper_main import main; main()",  # SIGUSR1: see serve
         str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        start_new_session=True,  # outside the job's process group: Ctrl-C goes to the job
    )  # fmt: skip
    theirs.close()
    return process, ours
