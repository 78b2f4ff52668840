"""What training leaves behind, as plain data: no torch, no MLflow.

Every epoch streams to the store as it happens (tracking/recorder.py); the History keeps only
what the pictures and the console need, within a fixed size whatever the run's length: an evenly
spaced sample of the epochs' named metrics (the first epoch always), the last epoch, and how
training ended.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from linreg_exp.params import Coefficients
from linreg_exp.vocab import Metric, Outcome

SAMPLE_SIZE = 4096  # the sample halves itself at this size: pictures need no more points

Point = tuple[int, tuple[float, ...]]  # epoch, the metrics' values in History.names order


def divergence(loss: float, first: float, factor: float, epoch: int) -> str | None:
    """How this epoch's loss ends a run as diverged, or None: non-finite, or grown past `factor`
    times the first epoch's loss (`first`), which catches a blow-up long before it overflows,
    while L1's bounded oscillation at a large learning rate stays in."""
    if not math.isfinite(loss):
        return f"loss became non-finite at epoch {epoch}"
    if first <= 0 or not math.isfinite(first) or loss <= factor * first:
        return None
    return f"loss {loss:.4g} at epoch {epoch} exceeds {factor:g} x the first epoch's {first:.4g}"


@dataclass(frozen=True)
class LinearParams:
    weight: float
    bias: float


@dataclass
class History:
    """Every `stride`-th epoch: when the sample fills up, every other point is dropped and the
    stride doubles, so it always spans the whole run evenly. A run of up to SAMPLE_SIZE epochs
    keeps every epoch. Each update is one list operation, so a signal arriving in the middle
    of one leaves the History consistent."""

    step: str = "autograd"  # or "fused", "batched": how it was trained (train.step_kind)
    names: tuple[str, ...] = ()  # the metrics of an epoch, set by the first one
    sample: list[Point] = field(default_factory=list)
    stride: int = 1
    last: Point | None = None
    outcome: Outcome | None = None  # None while training
    diverged_at_epoch: int | None = None
    divergence: str | None = None  # how it diverged, for the run's linreg.failure tag
    capacity: int = SAMPLE_SIZE

    def diverges(self, loss: float, factor: float) -> bool:
        """Whether this next epoch's loss ends the run as diverged: non-finite, or grown past
        `factor` times the first epoch's loss (which catches a blow-up long before it
        overflows, while L1's bounded oscillation at a large learning rate stays in)."""
        first = self.series(Metric.LOSS)[0] if self.sample else loss
        why = divergence(loss, first, factor, self.epochs_done)
        if why is None:
            return False
        self.outcome, self.diverged_at_epoch, self.divergence = (
            Outcome.DIVERGED,
            self.epochs_done,
            why,
        )
        return True

    def append(self, metrics: Mapping[str, float]) -> None:
        """The next epoch's metrics (the same names, in the same order, every epoch)."""
        if not self.names:
            self.names = tuple(metrics)
        epoch = 0 if self.last is None else self.last[0] + 1
        point = (epoch, tuple(metrics.values()))
        if epoch % self.stride == 0:
            self.sample.append(point)
            if len(self.sample) >= self.capacity:
                del self.sample[1::2]
                self.stride *= 2
        self.last = point

    @property
    def epochs_done(self) -> int:
        return 0 if self.last is None else self.last[0] + 1

    @property
    def epochs(self) -> list[int]:
        return [epoch for epoch, _ in self.sample]

    def series(self, name: str) -> list[float]:
        """One metric over the sampled epochs."""
        index = self.names.index(name)
        return [values[index] for _, values in self.sample]

    def trajectory(self) -> History:
        """The sample with the last epoch added if the stride skipped it: what pictures draw."""
        if self.last is None or self.sample[-1] == self.last:
            return self
        copy = History(self.step, self.names, [*self.sample, self.last], self.stride, self.last)
        copy.outcome = self.outcome
        return copy

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's metrics by name."""
        assert self.last is not None, "no epoch done"
        return dict(zip(self.names, self.last[1], strict=True))

    def final_coefficients(self, features: tuple[str, ...]) -> Coefficients:
        """The last epoch's model."""
        return Coefficients.from_named(self.final, features)

    @property
    def final_line(self) -> LinearParams:
        final = self.final
        return LinearParams(final[Metric.WEIGHT], final[Metric.BIAS])
