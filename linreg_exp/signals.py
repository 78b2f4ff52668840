"""Turn SIGTERM (and SIGINT) into an exception, so runs end KILLED with their metrics stored."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal."""
        return 128 + self.signum


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install_handlers() -> None:
    """Route SIGINT and SIGTERM through `Interrupted` (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _raise_interrupted)


def exit_code_for(error: BaseException) -> int:
    """128 + signal number for an interruption; Ctrl-C without our handler counts as SIGINT."""
    return error.exit_code if isinstance(error, Interrupted) else 128 + signal.SIGINT
