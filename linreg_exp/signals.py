"""Signals that stop a job become an exception, so its run ends KILLED with its epochs stored.

SIGINT and SIGTERM, and a submitit job's early warning (SIGUSR2: the time limit is near, or on
SLURM the job is being preempted), raise `Interrupted` in the main thread. An
inherited SIG_IGN is kept (a shell's background job ignores SIGINT). A handler that a job
wrapper installed before us is replaced: submitit's ignores SIGTERM ("Bypassing signal
SIGTERM"), which keeps a cancelled job training until SLURM's SIGKILL loses its run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

# SIGUSR2 with less time left than this is the time limit's warning (it comes signal_delay_s
# before the limit), else it is a preemption.
LIMIT_WARNING_SECONDS = 600


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives a stopping signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.told = False  # the user was told what it stopped (the job's epochs): say no more

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


def install(on_stop: Callable[[int], None] | None = None) -> None:
    """Route the stopping signals through `Interrupted`, telling `on_stop` the signal first
    (main thread only; an inherited SIG_IGN is kept)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, _frame: FrameType | None) -> None:
        if on_stop is not None:
            on_stop(signum)
        raise Interrupted(signum)

    stopping = [signal.SIGINT, signal.SIGTERM]
    if "SLURM_JOB_ID" in os.environ or "SUBMITIT_EXECUTOR" in os.environ:
        stopping.append(signal.SIGUSR2)  # submitit asks for it before the time limit
    for signum in stopping:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, stop)


def exit_code_for(error: BaseException) -> int:
    """128 + signal number for an interruption; Ctrl-C without our handler counts as SIGINT."""
    return error.exit_code if isinstance(error, Interrupted) else 128 + signal.SIGINT


def describe(error: BaseException) -> str:
    """What stopped the job, for its run's tags: the signal's name, or under SLURM what its
    signal means by the time the job has left (SLURM's own count): SIGUSR2 near the time
    limit, or SIGTERM at it, is the time limit; an earlier SIGUSR2 is a preemption."""
    signum = error.signum if isinstance(error, Interrupted) else signal.SIGINT
    name = signal.Signals(signum).name
    if signum not in (signal.SIGTERM, signal.SIGUSR2) or "SLURM_JOB_ID" not in os.environ:
        return "time limit" if signum == signal.SIGUSR2 else name  # submitit_local: only that
    left = _slurm_seconds_left()
    if signum == signal.SIGTERM:
        return "SLURM: time limit" if left is not None and left <= 5 else name
    if left is None:
        return "SLURM: time limit or preemption"
    return "SLURM: time limit" if left <= LIMIT_WARNING_SECONDS else "SLURM: preemption"


def _slurm_seconds_left() -> int | None:
    try:
        left = subprocess.run(
            ["squeue", "-h", "-j", os.environ["SLURM_JOB_ID"], "-o", "%L"],
            capture_output=True, text=True, timeout=15, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    parts = [int(p) for p in left.replace("-", ":").split(":") if p.isdigit()]  # [d-]h:m:s
    units = (1, 60, 3600, 86400)
    return sum(p * unit for p, unit in zip(reversed(parts), units, strict=False)) if parts else None
