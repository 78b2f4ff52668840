"""Pictures of a run and of a sweep; pure functions from data to files, no MLflow here.

Data comes as numpy arrays, already a sample of the dataset (`Dataset.sample(PICTURE_POINTS)`),
and the trajectory as a History's bounded sample of the epochs: every point given is drawn, so
a picture costs the same for 500 epochs or 1e8. No torch and no MLflow here: the helper process
that records a run draws its pictures (report/pictures.py) without loading torch.

Uses matplotlib's object-oriented API with the Agg canvas: no pyplot state, no GUI backend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import font_manager, rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from linreg_exp.history import History, LinearParams
from linreg_exp.vocab import Metric

# Fixed margins instead of tight_layout, which lays all text out once more.
_MARGINS = {"left": 0.12, "right": 0.97, "bottom": 0.12, "top": 0.92}
_GIF_MARGINS = {"left": 0.14, "right": 0.97, "bottom": 0.14, "top": 0.95}


def _spans_decades(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > 100


def loss_curve(history: History, optimum_loss: float | None) -> Figure:
    """Loss per epoch; log-y when it spans decades; the closed-form optimum as a reference."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    loss = history.series(Metric.LOSS)
    ax.plot(history.epochs, loss, label="training loss")
    if optimum_loss is not None:
        ax.axhline(optimum_loss, color="tab:green", linestyle="--", label="closed-form optimum")
    if _spans_decades([*loss, *([optimum_loss] if optimum_loss else [])]):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss per epoch")
    ax.legend()
    fig.subplots_adjust(**_MARGINS)
    return fig


@dataclass(frozen=True)
class FitLines:
    """The lines drawn over the data: truth, the learned one, and the closed-form optimum."""

    true: LinearParams
    learned: LinearParams
    optimum: LinearParams | None


def fit_figure(x: np.ndarray, y: np.ndarray, lines: FitLines) -> Figure:
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    xs, ys = x.ravel(), y.ravel()
    ax.scatter(xs, ys, s=4, alpha=0.35, color="tab:gray", label="data")
    grid = np.array([xs.min(), xs.max()])
    styles: list[tuple[str, LinearParams | None, str, str]] = [
        ("true", lines.true, "tab:green", ":"),
        ("closed form", lines.optimum, "tab:orange", "--"),
        ("learned", lines.learned, "tab:blue", "-"),
    ]
    for label, params, color, style in styles:
        if params is not None:
            ax.plot(
                grid,
                params.weight * grid + params.bias,
                color=color,
                linestyle=style,
                label=f"{label}: w={params.weight:.4f}, b={params.bias:.4f}",
            )
    ax.set(xlabel="x", ylabel="y", title="Fitted line")
    ax.legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(**_MARGINS)
    return fig


def frame_indices(points: int, frames: int) -> list[int]:
    """Up to `frames` of `points` sampled epochs, evenly spread, the first and the last always."""
    if points == 0:
        return []
    return sorted({round(i) for i in np.linspace(0, points - 1, min(frames, points))})


def training_gif(x: np.ndarray, y: np.ndarray, history: History, frames: int) -> bytes:
    """The fitted line moving onto the data, one frame per selected epoch (bounded size).

    The data and axes are rendered once; each frame only redraws the line onto that background
    (blitting) and writes its label with PIL in matplotlib's font (matplotlib would lay the text
    out anew each frame, half the GIF's time); all frames share one palette.
    """
    fig = Figure(figsize=(4.8, 3.6), dpi=80)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs, ys = x.ravel(), y.ravel()
    ax.scatter(xs, ys, s=3, alpha=0.35, color="tab:gray")
    grid = np.array([xs.min(), xs.max()])
    margin = 0.1 * float(ys.max() - ys.min())
    ax.set_ylim(float(ys.min()) - margin, float(ys.max()) + margin)
    ax.set(xlabel="x", ylabel="y", title=" ")
    fig.subplots_adjust(**_GIF_MARGINS)
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    (line,) = ax.plot(grid, grid * 0, color="tab:blue", linewidth=2, animated=True)
    width, height = canvas.get_width_height()
    label_x, label_y = ax.transAxes.transform((0.02, 0.95))
    font = ImageFont.truetype(
        font_manager.findfont(font_manager.FontProperties()),
        round(rcParams["font.size"] * fig.dpi / 72),
    )
    images: list[Image.Image] = []
    epochs = history.epochs
    weights, biases = history.series(Metric.WEIGHT), history.series(Metric.BIAS)
    for index in frame_indices(len(epochs), frames):
        epoch, weight, bias = epochs[index], weights[index], biases[index]
        line.set_ydata(weight * grid + bias)
        canvas.restore_region(background)
        ax.draw_artist(line)
        rgb = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba()).convert("RGB")
        ImageDraw.Draw(rgb).text(
            (label_x, height - label_y),
            f"epoch {epoch + 1}: w={weight:.3f}  b={bias:.3f}",
            fill="black",
            font=font,
            anchor="la",
        )
        palette = images[0] if images else None
        images.append(
            rgb.quantize(colors=64, palette=palette, dither=Image.Dither.NONE)
            if palette
            else rgb.quantize(colors=64)
        )
    buffer = io.BytesIO()
    if images:
        images[0].save(
            buffer, format="GIF", save_all=True, append_images=images[1:], duration=80, loop=0
        )
    return buffer.getvalue()


def save_figure(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path)
    return path


@dataclass(frozen=True)
class SweepJob:
    """What the sweep plot needs of one child run."""

    params: Mapping[str, str]
    value: float  # the sweep's objective (val_mse, say)
    diverged: bool
    loss_curve: Sequence[tuple[int, float]]  # (epoch, loss), a bounded sample


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _distinct_keys(jobs: Sequence[SweepJob], keys: Sequence[str]) -> list[str]:
    """Drop keys that split the jobs exactly as another does (loss._target_ as loss.name), the
    readable ones kept: Hydra's own keys (`_target_`) give way."""
    kept, seen = [], set()
    for key in sorted(keys, key=lambda k: ("._" in k, keys.index(k))):
        groups: dict[str, set[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(str(job.params.get(key)), set()).add(index)
        partition = frozenset(frozenset(g) for g in groups.values())
        if partition not in seen:
            seen.add(partition)
            kept.append(key)
    return kept


def sweep_figure(
    jobs: Sequence[SweepJob], swept: Sequence[str], measure: str = "final loss"
) -> Figure:
    """`measure` against the swept parameter, one line per other choice; all loss curves, where
    the jobs drew them (plots.enabled: a sweep with plots off has none, and no empty panel)."""
    with_curves = any(job.loss_curve for job in jobs)
    fig = Figure(figsize=(11, 4.2) if with_curves else (6, 4.2), dpi=100)
    if with_curves:
        ax_final, ax_curves = fig.subplots(1, 2)
    else:
        ax_final, ax_curves = fig.subplots(1, 1), None
    numeric = [k for k in swept if all(_as_float(j.params.get(k, "")) is not None for j in jobs)]
    x_key = "optimizer.lr" if "optimizer.lr" in numeric else (numeric[0] if numeric else None)
    others = _distinct_keys(jobs, [k for k in swept if k != x_key])
    groups: dict[str, list[SweepJob]] = {}
    for job in jobs:
        label = ", ".join(f"{k}={job.params.get(k)}" for k in others) or "all jobs"
        groups.setdefault(label, []).append(job)
    finite = [j.value for j in jobs if not j.diverged and math.isfinite(j.value)]
    ceiling = max(finite) * 2 if finite else 1.0
    for index, (label, members) in enumerate(sorted(groups.items())):
        color = f"C{index % 10}"
        positions = (
            [float(j.params[x_key]) for j in members] if x_key else list(range(len(members)))
        )
        ordered = sorted(zip(positions, members, strict=True), key=lambda pair: pair[0])
        done = [(p, j.value) for p, j in ordered if not j.diverged]
        if done:
            ax_final.plot(*zip(*done, strict=True), marker="o", color=color, label=label)
        failed = [p for p, j in ordered if j.diverged]
        if failed:
            ax_final.scatter(failed, [ceiling] * len(failed), marker="x", s=60, color=color)
        for _, job in ordered:
            if job.loss_curve and ax_curves is not None:
                ax_curves.plot(*zip(*job.loss_curve, strict=True), color=color, alpha=0.6, lw=1)
    if any(j.diverged for j in jobs):
        ax_final.scatter([], [], marker="x", color="black", label="diverged")
    if x_key == "optimizer.lr":
        ax_final.set_xscale("log")
    if _spans_decades(finite):
        ax_final.set_yscale("log")
    ax_final.set(xlabel=x_key or "job", ylabel=measure, title=f"{measure} per job")
    ax_final.legend(fontsize=8)
    if ax_curves is not None:
        if _spans_decades([v for j in jobs for _, v in j.loss_curve]):
            ax_curves.set_yscale("log")
        ax_curves.set(xlabel="epoch", ylabel="loss", title="Loss curves of all jobs")
    fig.tight_layout()
    return fig
