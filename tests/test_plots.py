"""The pictures are pure functions of a History and the data: for one feature the line over the
data (fit.png, training.gif), for more each weight over the epochs (weights.png); for any number
the loss curve and the held-out predictions against the actual values."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linreg_exp.history import History, LinearParams
from linreg_exp.report import plots
from linreg_exp.report.pictures import CURVE_POINTS, RunPictures, draw, weight_keys

PICTURE_POINTS = 2000  # what a job draws of its data at most (job.py)


def fake_history(epochs: int = 300, features: tuple[str, ...] = ("x",)) -> History:
    """A run converging on weights 1, 2, 3, ... and bias 3, under the metric names a job logs."""
    history = History()
    keys = weight_keys(features)
    for i in range(epochs):
        done = i / epochs
        history.append(
            {
                "loss": 100.0 / (1 + i),
                **{key: (j + 1) * done for j, key in enumerate(keys)},
                "bias": 3.0 * done,
            }
        )
    return history


def line_data(points: int = PICTURE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's kind of data: y = 2 (x + noise) + 3, x in [-10, 10]."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-10, 10, points)
    return x, 2 * (x + rng.normal(0, 2, points)) + 3


def run_pictures(tmp_path: Path, features: tuple[str, ...], **changes: object) -> RunPictures:
    rng = np.random.default_rng(1)
    actual = rng.normal(0, 5, PICTURE_POINTS)
    one = len(features) == 1
    x, y = line_data() if one else (np.array([]), np.array([]))
    pictures = RunPictures(
        features=features,
        x=x.tolist(),
        y=y.tolist(),
        trajectory=fake_history(features=features).trajectory(),
        true=LinearParams(2, 3) if one else None,
        optimum=LinearParams(2.01, 3.02) if one else None,
        optimum_loss=0.5,
        val_actual=actual.tolist(),
        val_predicted=(actual + rng.normal(0, 1, PICTURE_POINTS)).tolist(),
        frames=5,
        out_dir=str(tmp_path),
    )
    return dataclasses.replace(pictures, **changes)


def test_weight_keys_are_the_metric_names_a_job_logs() -> None:
    assert weight_keys(("x",)) == ["weight"]
    assert weight_keys(("sqft", "age")) == ["weight.sqft", "weight.age"]


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
    gif = plots.training_gif(*line_data(), fake_history(), frames=20)
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF" and image.n_frames == 20
    assert len(gif) < 1_000_000


def test_static_figures_render(tmp_path: Path) -> None:
    x, y = line_data()
    history = fake_history()
    lines = plots.FitLines(LinearParams(2, 3), LinearParams(1.9, 2.5), LinearParams(2.01, 3.02))
    for name, figure in (
        ("loss.png", plots.loss_curve(history, optimum_loss=0.5)),
        ("fit.png", plots.fit_figure(x, y, lines)),
    ):
        path = plots.save_figure(figure, tmp_path / name)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (600, 400)
    # loss spanning decades is drawn on a log axis
    assert plots.loss_curve(history, None).axes[0].get_yscale() == "log"


def test_the_fit_draws_only_the_lines_it_is_given() -> None:
    """A table has no true line; only a loss with a closed form has an optimum."""
    x, y = line_data()
    figure = plots.fit_figure(x, y, plots.FitLines(None, LinearParams(1.9, 2.5), None), "sqft")
    texts = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert texts == ["data", "learned: w=1.9000, b=2.5000"]
    assert figure.axes[0].get_xlabel() == "sqft"


def test_one_feature_draws_the_line_as_before(tmp_path: Path) -> None:
    pictures = run_pictures(tmp_path, ("x",))
    paths = draw(pictures)
    names = {"loss_curve.png", "loss_curve.json", "predicted_vs_actual.png", "fit.png",
             "training.gif"}  # fmt: skip
    assert {p.name for p in paths} == names == {p.name for p in tmp_path.iterdir()}
    with Image.open(tmp_path / "training.gif") as image:
        assert image.n_frames == pictures.frames
    # a table's one column: no true line, and no held-out sample given: no such picture
    table = tmp_path / "table"
    table.mkdir()
    draw(run_pictures(table, ("sqft",), true=None, val_actual=[], val_predicted=[]))
    assert {p.name for p in table.iterdir()} == names - {"predicted_vs_actual.png"}


@pytest.mark.parametrize("num_features", [3, 20])
def test_many_features_draw_each_weight_over_the_epochs(tmp_path: Path, num_features: int) -> None:
    features = tuple(f"feature_{i}" for i in range(num_features))
    paths = draw(run_pictures(tmp_path, features))
    names = {"loss_curve.png", "loss_curve.json", "predicted_vs_actual.png", "weights.png"}
    assert {p.name for p in paths} == names == {p.name for p in tmp_path.iterdir()}
    for name in names - {"loss_curve.json"}:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG"


def test_the_weights_legend_names_every_feature_in_the_order_the_lines_end() -> None:
    features = tuple(f"feature_{i}" for i in range(20))
    trajectory = fake_history(features=features)
    weights = {
        f: trajectory.series(k) for f, k in zip(features, weight_keys(features), strict=True)
    }
    figure = plots.weights_figure(trajectory.epochs, weights, trajectory.series("bias"))
    (legend,) = figure.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert [t.split()[0] for t in texts] == list(reversed(features))  # weights 20, 19, ..., 1
    assert texts[0] == "feature_19  (19.93)"  # the last epoch's
    weight_axis, bias_axis = figure.axes
    assert len(weight_axis.get_lines()) == 20 + 1  # and the zero line
    assert bias_axis.get_ylabel() == "bias"


def test_past_the_legend_limit_the_largest_weights_are_named() -> None:
    count = plots.LEGEND_MAX + 25
    weights = {f"f{i}": [0.0, float(i)] for i in range(count)}
    figure = plots.weights_figure([0, 1], weights, [0.0, 1.0])
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert len(texts) == plots.LEGEND_MAX + 1 and texts[-1] == "25 smaller, unnamed"
    assert texts[0].startswith(f"f{count - 1} ") and texts[-2].startswith("f25 ")
    assert len(figure.axes[0].get_lines()) == count + 2  # and the zero line, the grey's handle


def test_a_diverged_run_still_draws(tmp_path: Path) -> None:
    """Non-finite weights and predictions are left out of the picture, not drawn as a crash."""
    features = ("a", "b")
    history = fake_history(10, features)
    history.append({"loss": float("inf"), "weight.a": float("nan"), "weight.b": float("inf"),
                    "bias": float("nan")})  # fmt: skip
    actual = [1.0, 2.0, 3.0]
    predicted = [1.1, float("inf"), float("nan")]
    pictures = run_pictures(tmp_path, features, trajectory=history.trajectory(),
                            val_actual=actual, val_predicted=predicted)  # fmt: skip
    assert {p.name for p in draw(pictures)} >= {"weights.png", "predicted_vs_actual.png"}
    figure = plots.predicted_vs_actual(np.array(actual), np.array([1.1, np.inf, np.nan]))
    assert figure.axes[0].get_title() == "Held-out: predicted vs actual (1 rows, 2 not finite)"


def test_the_loss_curve_a_sweep_reads_is_bounded_with_both_ends(tmp_path: Path) -> None:
    draw(run_pictures(tmp_path, ("x",), trajectory=fake_history(10_000).trajectory(), x=[]))
    curve = json.loads((tmp_path / "loss_curve.json").read_text())
    assert len(curve) <= CURVE_POINTS + 1
    assert curve[0] == [0, 100.0] and curve[-1][0] == 9_999


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
