"""A single run's MLflow side, in a helper process that starts before the job imports torch.

Importing MLflow and opening its store take ~3 s, importing torch and torch.optim ~3 s; one
after the other they are most of a run's wall time. So `python -m linreg_exp` starts this
companion first thing (`prestart`, before Hydra composes the config) and goes on with Hydra and
torch while the companion imports MLflow; then they exchange a few pickled messages over a pipe:

    job -> companion: RunTarget     companion: opens the store, loads matplotlib -> ("ok", None)
    job -> companion: RunStart      companion: creates the run, logs the config (the job trains)
    job -> companion: Outcome       companion: logs it, ends the run -> ("ok", StartedRun)
    on any error:                   companion -> ("error", message, is_user_error), and exits

The job waits for the first "ok" before it trains, so an unusable store stops it before any
training and before any run exists. The companion runs in its own session and ignores SIGINT and
SIGTERM: Ctrl-C reaches the job, which reports the epochs done and the KILLED status, and the
companion records them. If the job dies without reporting (even by SIGKILL), the pipe closes and
the companion ends the run KILLED, so no run is left RUNNING.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from linreg_exp.errors import LinregError, TrackingError
from linreg_exp.recorder import LocalRecorder, Outcome, RunStart, RunTarget, StartedRun

EXIT_WAIT_SECONDS = 120  # logging over HTTP with retries can take this long in the worst case

# Hydra flags after which no single job runs: no companion is started for them.
_NO_SINGLE_JOB_FLAGS = frozenset(
    {"-m", "--multirun", "-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i",
     "--info", "-sc", "--shell-completion"}
)  # fmt: skip


class _Process:
    """The companion process and our end of its pipe."""

    def __init__(self) -> None:
        ours, theirs = Pipe()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "linreg_exp.companion", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            start_new_session=True,  # outside the job's process group: Ctrl-C goes to the job
        )
        theirs.close()
        self.conn = ours

    def discard(self) -> None:
        """Stop a companion that was never given a target: it has touched no store yet."""
        self.conn.close()
        self.popen.kill()
        self.popen.wait()


_prestarted: _Process | None = None


def may_run_a_single_job(args: Sequence[str]) -> bool:
    """False for command lines that certainly run no single job (sweeps, --help, --cfg ...)."""
    return not any(arg in _NO_SINGLE_JOB_FLAGS or arg.startswith("hparams_search=") for arg in args)


def prestart() -> None:
    """Start the companion now, so that its imports overlap Hydra's and torch's."""
    global _prestarted
    if _prestarted is None and sys.platform != "win32":
        _prestarted = _Process()


def discard_prestarted() -> None:
    """Stop the prestarted companion if no single run took it (a sweep, --help, an error)."""
    global _prestarted
    process, _prestarted = _prestarted, None
    if process is not None:
        process.discard()


class CompanionRecorder:
    """A LocalRecorder in the companion process, driven through the pipe; same calls."""

    def __init__(self, target: RunTarget) -> None:
        global _prestarted
        self.target = target
        self._process, _prestarted = _prestarted or _Process(), None
        self._conn = self._process.conn
        self._conn.send(target)

    def _reply(self) -> Any:
        try:
            message = self._conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(
                "the MLflow companion process ended unexpectedly (its error is above)"
            ) from None
        if message[0] == "error":
            _, text, user_error = message
            raise TrackingError(text) if user_error else RuntimeError(text)
        return message[1]

    def start(self, request: RunStart) -> None:
        self._reply()  # the store is open (or could not be: raises before any run exists)
        with contextlib.suppress(OSError):  # if it has gone, its last word is still in the pipe
            self._conn.send(request)

    def finish(self, outcome: Outcome) -> StartedRun:
        with contextlib.suppress(OSError):
            self._conn.send(outcome)
        started: StartedRun = self._reply()
        return started

    def close(self) -> None:
        """Hang up and wait for the companion: once the job exits, its run is in the store."""
        self._conn.close()
        try:
            self._process.popen.wait(EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:  # pragma: no cover - a store that hangs
            self._process.popen.kill()
            self._process.popen.wait()


def serve(conn: Connection) -> None:
    """The companion's side of the conversation (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import linreg_exp.tracking  # noqa: F401  (MLflow: the slow import, done while the job starts)

    recorder: LocalRecorder | None = None
    try:
        target: RunTarget = conn.recv()
        recorder = LocalRecorder(target)
        recorder.prepare()
        conn.send(("ok", None))
        recorder.start(conn.recv())
        outcome: Outcome = conn.recv()
        conn.send(("ok", recorder.finish(outcome)))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the job hung up: it was killed, or it stopped before starting a run
    except LinregError as error:
        _send_quietly(conn, ("error", str(error), True))
    except Exception as error:
        traceback.print_exc()
        _send_quietly(conn, ("error", f"{type(error).__name__}: {error}", False))
    finally:
        if recorder is not None:
            recorder.close("the job process ended before reporting its outcome")


def _send_quietly(conn: Connection, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(OSError):  # the job is gone; the run's status is what matters
        conn.send(message)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
    sys.stdout.flush()
    sys.stderr.flush()
    # The run is ended and every write committed; skip tearing down MLflow's modules, which
    # takes ~1 s that the job (waiting for this process in close()) would otherwise wait for.
    os._exit(0)
