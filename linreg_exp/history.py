"""What training produces, as plain data: no torch, no MLflow.

Training fills a History; tracking and plots read it, possibly in another process (see
recorder.py), so these types stay picklable and cheap to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class StopReason(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"


@dataclass
class History:
    """Per-epoch loss (before the step) and weight/bias (after it), and why training stopped."""

    step: str = "autograd"  # or "fused": how gradients were computed (see train.fused_step_for)
    loss: list[float] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    bias: list[float] = field(default_factory=list)
    timestamp_ms: list[int] = field(default_factory=list)
    initial_weight: float = math.nan
    initial_bias: float = math.nan
    stop_reason: StopReason = StopReason.RUNNING
    diverged_at_epoch: int | None = None

    @property
    def epochs_done(self) -> int:
        return len(self.loss)


@dataclass(frozen=True)
class LinearParams:
    weight: float
    bias: float
