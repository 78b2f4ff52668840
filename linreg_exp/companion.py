"""A run's MLflow side, in a helper process that starts before the job imports torch.

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

A multirun with the basic launcher (every job in this process, one after another) keeps one
companion for the whole sweep: it opens the store while the first job imports torch, creates
the parent run with the first job's run (a sweep rejected before any job starts leaves none),
and records each job while the next one composes and trains:

    launcher -> companion: SweepTarget                 opens the store -> ("ok", experiment id),
                                                        read by the first job before it trains
    job -> companion: ("start", RunTarget, RunStart)   creates the child (and, for the first
                                                        job, the parent) -> ("ok", StartedRun)
    job -> companion: ("finish", Outcome)              logs it and ends the child; no reply:
                                                        an error is the next job's reply
    launcher -> companion: ("end", status)             summarises and closes the parent
                                                        -> ("ended", summary, error)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
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
from linreg_exp.parent_run import SweepInfo, SweepTarget
from linreg_exp.recorder import (
    FAILED,
    KILLED,
    LocalRecorder,
    Outcome,
    RunStart,
    RunTarget,
    StartedRun,
    describe_error,
)
from linreg_exp.uris import run_url

log = logging.getLogger(__name__)

EXIT_WAIT_SECONDS = 120  # logging over HTTP with retries can take this long in the worst case

# Hydra flags after which no job runs: no companion is started for them.
_NO_JOB_FLAGS = frozenset(
    {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc",
     "--shell-completion"}
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

    def hang_up(self) -> None:
        """Close our end and wait for the companion to finish what it was told, and exit."""
        self.conn.close()
        try:
            self.popen.wait(EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:  # pragma: no cover - a store that hangs
            self.popen.kill()
            self.popen.wait()

    def discard(self) -> None:
        """Stop a companion that was never given a target: it has touched no store yet."""
        self.conn.close()
        self.popen.kill()
        self.popen.wait()


_prestarted: _Process | None = None


def may_use_a_companion(args: Sequence[str]) -> bool:
    """False for command lines that certainly need none: --help, --cfg ..., and sweeps whose
    launcher runs the jobs in other processes (they record in-process, see sweep.py)."""
    return not any(
        arg in _NO_JOB_FLAGS
        or (arg.startswith("hydra/launcher=") and arg != "hydra/launcher=basic")
        for arg in args
    )


def prestart() -> None:
    """Start the companion now, so that its imports overlap Hydra's and torch's."""
    global _prestarted
    if _prestarted is None and sys.platform != "win32":
        _prestarted = _Process()


def discard_prestarted() -> None:
    """Stop the prestarted companion if no run or sweep took it (--help, a launcher that runs
    jobs elsewhere, an error before the run)."""
    global _prestarted
    process, _prestarted = _prestarted, None
    if process is not None:
        process.discard()


def _reply(conn: Connection) -> Any:
    """The companion's next answer: its value, or its error raised here."""
    try:
        message = conn.recv()
    except (EOFError, OSError):
        raise RuntimeError(
            "the MLflow companion process ended unexpectedly (its error is above)"
        ) from None
    if message[0] == "error":
        _, text, user_error = message
        raise TrackingError(text) if user_error else RuntimeError(text)
    return message[1]


class CompanionRecorder:
    """A LocalRecorder in the companion process, driven through the pipe; same calls."""

    def __init__(self, target: RunTarget) -> None:
        global _prestarted
        self.target = target
        self._process, _prestarted = _prestarted or _Process(), None
        self._conn = self._process.conn
        self._conn.send(target)

    def start(self, request: RunStart) -> None:
        _reply(self._conn)  # the store is open (or could not be: raises before any run exists)
        with contextlib.suppress(OSError):  # if it has gone, its last word is still in the pipe
            self._conn.send(request)

    def finish(self, outcome: Outcome) -> StartedRun:
        with contextlib.suppress(OSError):
            self._conn.send(outcome)
        started: StartedRun = _reply(self._conn)
        return started

    def close(self) -> None:
        """Hang up and wait for the companion: once the job exits, its run is in the store."""
        self._process.hang_up()


# ---------------------------------------------------------------- a sweep (basic launcher)


class _SweepLink:
    """The launching process's end of a sweep's companion; its jobs share it."""

    def __init__(self, process: _Process, target: SweepTarget) -> None:
        self.process = process
        self.conn = process.conn
        self.target = target
        self.pid = os.getpid()  # a forked child must not write to this pipe
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None

    def send(self, message: object) -> None:
        with contextlib.suppress(OSError):  # if it has gone, its last word is still in the pipe
            self.conn.send(message)

    def opened(self) -> str:
        """Wait (first job only) until the store is open; return the experiment id.

        A store that cannot be opened stops the whole sweep here, before any run exists, with
        the one-line error and exit status a single run gives (Hydra would only record it as
        this job's failure and go on to the next job)."""
        if self.experiment_id is None:
            try:
                self.experiment_id = _reply(self.conn)
            except LinregError as error:
                print(f"error: {error}", file=sys.stderr)
                raise SystemExit(2) from error
            except RuntimeError as error:
                print(f"error: {error}", file=sys.stderr)
                raise SystemExit(1) from error
        return self.experiment_id

    def announce(self, run: StartedRun) -> None:
        """Say once where the sweep's parent run is (it exists once a job has started)."""
        if self.parent_run_id is None and run.parent_run_id is not None:
            self.parent_run_id = run.parent_run_id
            url = run_url(self.target.tracking_uri, run.experiment_id, run.parent_run_id)
            log.info("MLflow parent run %s: %s", run.parent_run_id, url)


_sweep: _SweepLink | None = None


def start_sweep(target: SweepTarget) -> bool:
    """Hand the sweep's parent run to a companion (the prestarted one if any); False where
    there can be none, and the caller records in-process."""
    global _prestarted, _sweep
    if sys.platform == "win32":  # pragma: no cover - pass_fds is POSIX only
        return False
    process, _prestarted = _prestarted or _Process(), None
    _sweep = _SweepLink(process, target)
    _sweep.send(target)
    return True


def sweep_in_progress() -> bool:
    return _sweep is not None and _sweep.pid == os.getpid()


def sweep_job_recorder(run_name: str | None, plots: bool) -> SweepJobRecorder | None:
    """The recorder of a job that runs in the sweep's own process, or None if it is not one."""
    if _sweep is None or not sweep_in_progress():
        return None
    target = RunTarget(
        _sweep.target.tracking_uri, _sweep.target.experiment_name, run_name=run_name, plots=plots
    )
    return SweepJobRecorder(_sweep, target)


def end_sweep(status: str | None) -> tuple[str | None, str | None]:
    """Have the companion record what is left, summarise and close the parent, and exit.

    Returns the summary line (None if the companion had already stopped on an error, which
    the sweep has reported) and the error that kept it from recording a job, if any."""
    global _sweep
    link, _sweep = _sweep, None
    if link is None:  # pragma: no cover - callers check sweep_in_progress()
        return "no sweep in progress", None
    link.send(("end", status))
    summary, error = None, None
    try:
        while link.conn.poll(EXIT_WAIT_SECONDS):
            message = link.conn.recv()
            if message[0] == "ended":  # earlier replies nobody read (a job cut short) are skipped
                _, summary, error = message
                break
    except (EOFError, OSError):
        pass
    link.process.hang_up()
    return summary, error


class SweepJobRecorder:
    """A sweep job's recorder: the sweep's companion creates, logs and ends its run, and logs
    its outcome while the next job starts."""

    def __init__(self, link: _SweepLink, target: RunTarget) -> None:
        self.target = target
        self._link = link
        self._awaiting_start = False

    def start(self, request: RunStart) -> None:
        self._link.opened()
        self._link.send(("start", self.target, request))
        self._awaiting_start = True

    def finish(self, outcome: Outcome) -> StartedRun:
        started = self._started()
        self._link.send(("finish", outcome))
        self._link.announce(started)
        return started

    def _started(self) -> StartedRun:
        self._awaiting_start = False
        started: StartedRun = _reply(self._link.conn)
        return started

    def close(self) -> None:
        """A run started and never finished (an error outside training) is ended KILLED."""
        if self._awaiting_start:
            try:
                self._started()
            except (LinregError, RuntimeError):
                return  # its run was never created
            self._link.send(("abandon", "the job ended without reporting how"))


def _serve_sweep(conn: Connection, target: SweepTarget) -> None:
    """The companion's side of a sweep (see the module docstring)."""
    from linreg_exp import parent_run, tracking

    experiment_id = tracking.open_experiment(target.tracking_uri, target.experiment_name)
    conn.send(("ok", experiment_id))
    import linreg_exp.plots  # noqa: F401  (matplotlib, while the first job imports torch)

    parent: SweepInfo | None = None  # created with the first job: a sweep rejected before has none
    recorder: LocalRecorder | None = None  # the job whose run is open
    failure: str | None = None  # the first job whose outcome could not be logged fails the sweep
    closed = False
    status_if_cut_short = FAILED
    try:
        while not closed:
            message = conn.recv()
            if message[0] == "start":
                if recorder is not None:  # pragma: no cover - every job finishes or abandons
                    recorder.close("the next job started before this one reported")
                _, job, request = message
                try:
                    parent = parent or parent_run.create_parent(target, experiment_id)
                    recorder = LocalRecorder(
                        dataclasses.replace(
                            job, experiment_id=experiment_id, parent_run_id=parent.parent_run_id
                        )
                    )
                    recorder.start(request)  # ends its run FAILED if it fails after creating it
                except Exception as error:  # that job fails with this error; the next may work
                    recorder = None
                    conn.send(("error", str(error), isinstance(error, LinregError)))
                    continue
                conn.send(("ok", recorder.started))
            elif message[0] == "finish" and recorder is not None:
                job_recorder, recorder = recorder, None
                try:
                    job_recorder.finish(message[1])  # ends its run, FAILED if logging fails
                except Exception as error:
                    traceback.print_exc()
                    failure = failure or f"could not log a job's outcome: {describe_error(error)}"
            elif message[0] == "abandon" and recorder is not None:
                job_recorder, recorder = recorder, None
                job_recorder.close(message[1])
            elif message[0] == "end":
                closed = True  # even if closing fails: never twice
                status = FAILED if failure is not None else message[1]
                summary = None if parent is None else parent_run.close_parent(parent, status)[1]
                _send_quietly(conn, ("ended", summary, failure))
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the sweep's process is gone
        status_if_cut_short = KILLED
    finally:
        if recorder is not None:
            recorder.close("the sweep's process ended before the job reported")
        if not closed and parent is not None:
            parent_run.close_parent(parent, status_if_cut_short)


# ---------------------------------------------------------------- the companion process


def serve(conn: Connection) -> None:
    """The companion's side of the conversation (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import linreg_exp.tracking  # noqa: F401  (MLflow: the slow import, done while the job starts)

    recorder: LocalRecorder | None = None
    try:
        target: RunTarget | SweepTarget = conn.recv()
        if isinstance(target, SweepTarget):
            _serve_sweep(conn, target)
            return
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
