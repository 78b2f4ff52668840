"""The helper process: a Session answering the job's requests over a pipe, until it hangs up.

Started by tracking/helper.py as `python -c ... FD`: FD is its end of the pipe. Its first
message names the modules to import at once (the store's, while the job composes) and those to
import once the store is open (startup.py): a helper may be started before its launch knows
them (helper.start_early).
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from types import FrameType

from linreg_exp import startup
from linreg_exp.tracking.session import Session


def serve(conn: Connection) -> None:
    """Answer requests in order until the job hangs up; then end what it left open. A run
    waiting for a store that stopped answering waits no more once the job says it is stopping
    (SIGUSR1: Helper.stop_waiting) or is gone (its pipe closed)."""
    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # A plain flag, no lock (threading.Event takes one): the job may signal twice, and a
        # second signal handled while the first handler holds a lock deadlocks on it.
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGUSR1, stop)
    session = Session(stop_waiting=lambda: stopping or conn.poll())
    try:
        ahead: Sequence[str]
        preload: Sequence[str]
        ahead, preload = conn.recv()
        for module in ahead:  # while the job composes: its Open comes later
            with contextlib.suppress(ImportError):  # (Open then says what is wrong)
                importlib.import_module(module)
        conn.send(session.handle(conn.recv()))  # Open: the job may be waiting for it
        for module in preload:
            importlib.import_module(module)
        while True:
            conn.send(session.handle(conn.recv()))
    except (EOFError, OSError):  # the job hung up: after Close, or killed before it
        session.close_all("the job process ended before reporting its outcome")


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(int(sys.argv[1])))
    startup.exit_now(0)  # every run is ended and committed
