"""Training's progress on the console: how far a program of N configs (one job: N = 1) is.

In a terminal, one line redrawn (tqdm): epochs done of all the configs' epochs, epochs a second,
the time left, and for many configs how many are done and pruned. Anywhere else (a log file, a
pipe, a SLURM job's output), a plain line now and then, without control characters, so a log
reads as a log. Quiet for runs too short to need it: nothing is shown before `quiet_for` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

PLAIN_EVERY_SECONDS = 30.0  # a plain line this often, where the console is not a terminal
QUIET_FOR_SECONDS = 2.0  # a program shorter than this shows nothing


def duration(seconds: float) -> str:
    """`1h02m`, `3m05s`, `42s`."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """Counts epochs as the program trains them; `update` once an epoch, `close` at the end."""

    def __init__(
        self,
        total_epochs: int,
        configs: int,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = PLAIN_EVERY_SECONDS,
        quiet_for: float = QUIET_FOR_SECONDS,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.configs, self.clock = total_epochs, configs, clock
        self.every, self.quiet_for = every, quiet_for
        self.started = clock()
        self.next_line = self.started + quiet_for
        self.epochs = self.done = self.pruned = 0
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None

    def update(self, epochs: int, done: int, pruned: int = 0) -> None:
        """`epochs` more epochs trained (all configs together); `done` configs ended so far,
        `pruned` of them stopped early by their sweep's pruner."""
        self.epochs += epochs
        self.done, self.pruned = done, pruned
        now = self.clock()
        if now < self.next_line:
            return
        if self.terminal:
            self._draw()
            self.next_line = now + 0.25
        else:
            self.stream.write(f"linreg_exp: {self.line(now)}\n")
            self.stream.flush()
            self.next_line = now + self.every

    def line(self, now: float) -> str:
        """`12,000 of 128,000 epochs (9%), 4,100 epochs/s, 28s left; 3 of 256 configs done, 1
        pruned`."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.epochs / elapsed
        left = (self.total - self.epochs) / rate if rate > 0 else 0.0
        share = 100 * self.epochs / self.total if self.total else 100.0
        text = (f"{self.epochs:,} of {self.total:,} epochs ({share:.0f}%), {rate:,.0f} epochs/s, "
                f"{duration(left)} left")  # fmt: skip
        if self.configs > 1:
            text += f"; {self.done} of {self.configs} configs done"
            if self.pruned:
                text += f", {self.pruned} pruned"
        return text

    def _draw(self) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=self.total, desc="training", unit="epoch", leave=False,
                             file=self.stream, dynamic_ncols=True)  # fmt: skip
        self._bar.update(self.epochs - self._bar.n)
        if self.configs > 1:
            pruned = f", {self.pruned} pruned" if self.pruned else ""
            self._bar.set_postfix_str(f"{self.done}/{self.configs} configs done{pruned}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
