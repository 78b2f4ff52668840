"""The pictures are pure functions of a History and the data."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from PIL import Image

from linreg_exp.data import make_dataset
from linreg_exp.history import History, LinearParams
from linreg_exp.job import PICTURE_POINTS
from linreg_exp.report import plots
from linreg_exp.schema import DataConfig


def fake_history(epochs: int = 300) -> History:
    history = History()
    for i in range(epochs):
        history.append(
            {"loss": 100.0 / (1 + i), "weight": 2.0 * i / epochs, "bias": 3.0 * i / epochs}
        )
    return history


def test_frames_are_bounded_and_include_both_ends() -> None:
    assert plots.frame_indices(500, 50)[0] == 0 and plots.frame_indices(500, 50)[-1] == 499
    assert len(plots.frame_indices(500, 50)) == 50
    assert plots.frame_indices(3, 50) == [0, 1, 2]
    assert plots.frame_indices(0, 50) == []


def test_pictures_of_a_long_run_draw_a_bounded_sample(tmp_path: Path) -> None:
    history = fake_history(1_000_003)
    trajectory = history.trajectory()
    assert len(trajectory.sample) <= history.capacity + 1
    assert trajectory.epochs[0] == 0 and trajectory.epochs[-1] == 1_000_002
    figure = plots.loss_curve(trajectory, None)
    (line,) = [li for li in figure.axes[0].get_lines() if li.get_label() == "training loss"]
    assert len(line.get_xdata()) == len(trajectory.sample)


def test_training_gif_has_bounded_frames() -> None:
    data = make_dataset(DataConfig(num_data=100_000), seed=0)
    gif = plots.training_gif(*data.sample(PICTURE_POINTS), fake_history(), frames=20)
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF" and image.n_frames == 20
    assert len(gif) < 1_000_000


def test_static_figures_render(tmp_path: Path) -> None:
    data = make_dataset(DataConfig(), seed=0)
    history = fake_history()
    lines = plots.FitLines(LinearParams(2, 3), LinearParams(1.9, 2.5), LinearParams(2.01, 3.02))
    for name, figure in (
        ("loss.png", plots.loss_curve(history, optimum_loss=0.5)),
        ("fit.png", plots.fit_figure(*data.sample(PICTURE_POINTS), lines)),
    ):
        path = plots.save_figure(figure, tmp_path / name)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (600, 400)
    # loss spanning decades is drawn on a log axis
    assert plots.loss_curve(history, None).axes[0].get_yscale() == "log"


def test_sweep_figure_marks_diverged_jobs(tmp_path: Path) -> None:
    jobs = [
        plots.SweepJob(
            {"optimizer.lr": lr, "loss.name": loss}, final, diverged, [(0, 5.0), (1, final)]
        )
        for lr, loss, final, diverged in [
            ("0.01", "l1", 1.6, False),
            ("0.1", "l1", 1.5, False),
            ("0.01", "mse", 3.8, False),
            ("0.5", "mse", float("nan"), True),
        ]
    ]
    figure = plots.sweep_figure(jobs, ["optimizer.lr", "loss.name"])
    final_axis = figure.axes[0]
    assert final_axis.get_xscale() == "log"
    assert "diverged" in [t.get_text() for t in final_axis.get_legend().get_texts()]
    assert len(figure.axes) == 2  # and the loss curves
    with Image.open(plots.save_figure(figure, tmp_path / "sweep.png")) as image:
        assert image.format == "PNG"
    without_curves = [dataclasses.replace(job, loss_curve=[]) for job in jobs]  # plots off
    assert len(plots.sweep_figure(without_curves, ["optimizer.lr"]).axes) == 1
