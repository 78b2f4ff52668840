"""A run's pictures: loss_curve.png, fit.png and training.gif in its output dir, and the
sampled loss its sweep's report draws (loss_curve.json).

The job describes them (RunPictures) and hands `draw` to tracking as a post-run Task (job.py),
which runs where the run is recorded: in the helper process, which imported the plots while the
job trained (startup.py), or in the job's own process when there is none. So importing this
module does not import matplotlib; drawing does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linreg_exp.history import History, LinearParams
from linreg_exp.vocab import LOSS_CURVE_FILE, Metric

CURVE_POINTS = 500  # points of a run's loss that its sweep's report draws


@dataclass(frozen=True)
class RunPictures:
    """What a run's pictures show: a sample of its data, its trajectory (a bounded sample of
    its epochs, the last included), the true line and the closed-form optimum."""

    x: list[float]
    y: list[float]
    trajectory: History
    true: LinearParams
    optimum: LinearParams
    optimum_loss: float | None
    frames: int
    out_dir: str


def draw(pictures: RunPictures) -> list[Path]:
    """Write the pictures and the sampled loss; returns their paths."""
    from linreg_exp.report import plots

    out_dir, trajectory = Path(pictures.out_dir), pictures.trajectory
    x, y = np.asarray(pictures.x), np.asarray(pictures.y)
    lines = plots.FitLines(pictures.true, trajectory.final_line, pictures.optimum)
    gif = out_dir / "training.gif"
    gif.write_bytes(plots.training_gif(x, y, trajectory, pictures.frames))
    return [
        plots.save_figure(plots.loss_curve(trajectory, pictures.optimum_loss),
                          out_dir / "loss_curve.png"),
        plots.save_figure(plots.fit_figure(x, y, lines), out_dir / "fit.png"),
        gif,
        write_loss_curve(trajectory, out_dir / LOSS_CURVE_FILE),
    ]  # fmt: skip


def write_loss_curve(trajectory: History, path: Path) -> Path:
    """At most CURVE_POINTS (epoch, loss) points, evenly spread, both ends kept: what a sweep's
    report draws of this run, however long it trained."""
    epochs, losses = trajectory.epochs, trajectory.series(Metric.LOSS)
    step = max(1, math.ceil(len(epochs) / CURVE_POINTS))
    picked = sorted({*range(0, len(epochs), step), len(epochs) - 1})
    path.write_text(json.dumps([[epochs[i], losses[i]] for i in picked]))
    return path
