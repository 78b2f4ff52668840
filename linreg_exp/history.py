"""What training leaves behind, as plain data: no torch, no MLflow.

Every epoch streams to MLflow as it happens (see tracking/recorder.py); the History keeps only
what the pictures and the summary need, within a fixed size whatever the run's length: an
evenly spaced sample of the trajectory (the first epoch always), the last epoch, and why
training stopped. It is pickled to the process that records the run, so it stays small.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum

SAMPLE_SIZE = 4096  # the sample halves itself at this size: pictures need no more points

Point = tuple[int, float, float, float]  # epoch, loss (before the step), weight, bias (after)


class StopReason(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"


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

    step: str = "autograd"  # or "fused": how gradients were computed (see train.step_kind)
    sample: list[Point] = field(default_factory=list)
    stride: int = 1
    last: Point | None = None
    stop_reason: StopReason = StopReason.RUNNING
    diverged_at_epoch: int | None = None
    divergence: str | None = None  # how it diverged, for the run's linreg.failure tag
    capacity: int = SAMPLE_SIZE

    def diverges(self, loss: float, factor: float) -> bool:
        """Whether this next epoch's loss ends the run as diverged: non-finite, or grown past
        `factor` times the first epoch's loss (which catches a blow-up long before it
        overflows, while L1's bounded oscillation at a large learning rate stays in)."""
        first = self.sample[0][1] if self.sample else None
        if math.isfinite(loss) and (first is None or first <= 0 or loss <= factor * first):
            return False
        self.stop_reason, self.diverged_at_epoch = StopReason.DIVERGED, self.epochs_done
        self.divergence = (
            f"loss became non-finite at epoch {self.epochs_done}"
            if not math.isfinite(loss)
            else f"loss {loss:.4g} at epoch {self.epochs_done} exceeds {factor:g} x the first "
            f"epoch's {first:.4g}"
        )
        return True

    def append(self, loss: float, weight: float, bias: float) -> None:
        epoch = 0 if self.last is None else self.last[0] + 1
        point = (epoch, loss, weight, bias)
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
        return [p[0] for p in self.sample]

    @property
    def loss(self) -> list[float]:
        return [p[1] for p in self.sample]

    @property
    def weight(self) -> list[float]:
        return [p[2] for p in self.sample]

    @property
    def bias(self) -> list[float]:
        return [p[3] for p in self.sample]

    def trajectory(self) -> History:
        """The sample with the last epoch added if the stride skipped it: what pictures draw."""
        if self.last is None or self.sample[-1] == self.last:
            return self
        return dataclasses.replace(self, sample=[*self.sample, self.last])

    @property
    def final(self) -> LinearParams:
        assert self.last is not None, "no epoch done"
        return LinearParams(self.last[2], self.last[3])

    @property
    def final_loss(self) -> float:
        assert self.last is not None, "no epoch done"
        return self.last[1]
