"""A run's pictures in its output dir, and the sampled loss its sweep's report draws.

Always: loss_curve.png, loss_curve.json (what the sweep's report reads) and, when the job gave a
held-out sample, predicted_vs_actual.png. With one feature, the line over the data: fit.png and
training.gif. With more, there is no line to draw over the data, so weights.png shows each
weight (and the bias) over the epochs instead.

The job describes them (RunPictures) and hands `draw` to tracking in a post-run Task
(lifecycle.py), which runs where the run is recorded: in the helper process, which imported the
plots while the job trained (startup.py), or in the job's own process when there is none. So
importing this module does not import matplotlib; drawing does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linreg_exp.history import History, LinearParams
from linreg_exp.params import weight_keys
from linreg_exp.vocab import LOSS_CURVE_FILE, Metric

CURVE_POINTS = 500  # points of a run's loss that its sweep's report draws


@dataclass(frozen=True)
class RunPictures:
    """What a run's pictures show: its trajectory (a bounded sample of its epochs, the last
    included, with metrics "loss", the weight keys (`weight_keys`) and "bias"), a sample of the
    held-out split with the final model's predictions, and for one feature a sample of the
    training data with the true line (synthetic data only) and the closed-form optimum."""

    features: tuple[str, ...]  # feature names; ("x",) for the tutorial
    x: list[float]  # d = 1 only: a sample of the training x (else empty)
    y: list[float]  # d = 1 only: the matching y (else empty)
    trajectory: History
    true: LinearParams | None  # d = 1 synthetic data only
    optimum: LinearParams | None  # d = 1 only
    optimum_loss: float | None
    val_actual: list[float]  # held-out: actual y, a sample
    val_predicted: list[float]  # held-out: the final model's prediction for the same rows
    frames: int
    out_dir: str


def draw(pictures: RunPictures) -> list[Path]:
    """Write the pictures and the sampled loss; returns their paths."""
    from linreg_exp.report import plots

    out_dir, trajectory = Path(pictures.out_dir), pictures.trajectory
    paths = [
        plots.save_figure(plots.loss_curve(trajectory, pictures.optimum_loss),
                          out_dir / "loss_curve.png"),
        write_loss_curve(trajectory, out_dir / LOSS_CURVE_FILE),
    ]  # fmt: skip
    if pictures.val_actual:
        figure = plots.predicted_vs_actual(
            np.asarray(pictures.val_actual, dtype=float),
            np.asarray(pictures.val_predicted, dtype=float),
        )
        paths.append(plots.save_figure(figure, out_dir / "predicted_vs_actual.png"))
    if len(pictures.features) == 1:
        paths += _draw_line(pictures)
    else:
        weights = {
            feature: trajectory.series(key)
            for feature, key in zip(pictures.features, weight_keys(pictures.features), strict=True)
        }
        figure = plots.weights_figure(trajectory.epochs, weights, trajectory.series(Metric.BIAS))
        paths.append(plots.save_figure(figure, out_dir / "weights.png"))
    return paths


def _draw_line(pictures: RunPictures) -> list[Path]:
    """fit.png and training.gif: the learned line over the training data (one feature)."""
    from linreg_exp.report import plots

    if not pictures.x:
        return []
    out_dir, trajectory = Path(pictures.out_dir), pictures.trajectory
    (feature,) = pictures.features
    x, y = np.asarray(pictures.x), np.asarray(pictures.y)
    final = trajectory.final
    learned = LinearParams(final[Metric.WEIGHT], final[Metric.BIAS])
    lines = plots.FitLines(pictures.true, learned, pictures.optimum)
    gif = out_dir / "training.gif"
    gif.write_bytes(plots.training_gif(x, y, trajectory, pictures.frames, xlabel=feature))
    fit = plots.save_figure(plots.fit_figure(x, y, lines, xlabel=feature), out_dir / "fit.png")
    return [fit, gif]


def write_loss_curve(trajectory: History, path: Path) -> Path:
    """At most CURVE_POINTS (epoch, loss) points, evenly spread, both ends kept: what a sweep's
    report draws of this run, however long it trained."""
    epochs, losses = trajectory.epochs, trajectory.series(Metric.LOSS)
    step = max(1, math.ceil(len(epochs) / CURVE_POINTS))
    picked = sorted({*range(0, len(epochs), step), len(epochs) - 1})
    path.write_text(json.dumps([[epochs[i], losses[i]] for i in picked]))
    return path
