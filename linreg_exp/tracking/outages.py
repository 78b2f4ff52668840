"""The outage clock: when the store stopped answering, and the outages each run lived through.

A run's outages end up in its `linreg.outages` tag ("25 s, 130 s"), so that a gap in its
timestamps is explained where the run is read. The transport (transport.py) starts and ends
outages; time comes from a Clock, a test's fake one or the system's.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

from linreg_exp.tracking.messages import FinishRun, Request, StartRun
from linreg_exp.vocab import Tag


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Outages:
    """Every outage so far (seconds), the one going on, and those of each open run."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lasted: list[float] = []
        self.began: float | None = None  # when the store stopped answering, if it has
        self.runs: dict[str, list[float]] = {}  # by run key, while its run is open

    def see(self, request: Request) -> None:
        """A request on its way: a new run lives through the outages from now on."""
        if isinstance(request, StartRun):
            self.runs.setdefault(request.run, [])

    def saw(self, request: Request) -> None:
        """A request done (delivered or spooled): an ended run's outages are forgotten."""
        if isinstance(request, FinishRun):
            self.runs.pop(request.run, None)

    def begin(self) -> float:
        self.began = self.clock.monotonic()
        return self.began

    def end(self, back_at: float) -> float:
        """The outage is over (the store answered at `back_at`): on every open run."""
        lasted = back_at - (self.began if self.began is not None else back_at)
        self.lasted.append(lasted)
        for outages in self.runs.values():
            outages.append(lasted)
        self.began = None
        return lasted

    def so_far(self) -> float:
        return 0.0 if self.began is None else self.clock.monotonic() - self.began

    def tagged(self, request: Request) -> Request:
        """A FinishRun with its run's outages in a tag (the one still on, so far, too)."""
        if not isinstance(request, FinishRun):
            return request
        outages = [*self.runs.get(request.run, [])]
        if self.began is not None:
            outages.append(self.so_far())
        if not outages:
            return request
        lasted = ", ".join(f"{seconds:.0f} s" for seconds in outages)
        return dataclasses.replace(request, tags={**request.tags, Tag.OUTAGES: lasted})
