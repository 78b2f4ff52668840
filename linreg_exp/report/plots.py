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
from matplotlib.lines import Line2D
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
    """The lines drawn over the data: truth (synthetic data only), the learned one, and the
    closed-form optimum."""

    true: LinearParams | None
    learned: LinearParams
    optimum: LinearParams | None


def fit_figure(x: np.ndarray, y: np.ndarray, lines: FitLines, xlabel: str = "x") -> Figure:
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
    ax.set(xlabel=xlabel, ylabel="y", title="Fitted line")
    ax.legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(**_MARGINS)
    return fig


def frame_indices(points: int, frames: int) -> list[int]:
    """Up to `frames` of `points` sampled epochs, evenly spread, the first and the last always."""
    if points == 0:
        return []
    return sorted({round(i) for i in np.linspace(0, points - 1, min(frames, points))})


def training_gif(
    x: np.ndarray, y: np.ndarray, history: History, frames: int, xlabel: str = "x"
) -> bytes:
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
    ax.set(xlabel=xlabel, ylabel="y", title=" ")
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


# Weights over epochs: a line each, told apart by colour and dash (10 colours x 4 dashes), the
# legend outside the axes in the order the lines end, top to bottom, so a line is found by
# where it ends. Past LEGEND_MAX features, the largest final weights are named and the rest
# drawn in thin grey: a legend of hundreds of names reads as nothing.
LEGEND_MAX = 40
_DASHES = ("-", "--", ":", "-.")
_NAME_CHARS = 20  # a legend entry's feature name is cut to this many characters
_LEGEND_COLUMN = 2.6  # inches a legend column takes: the name, its final weight, the handle


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "…"


def _final(values: Sequence[float]) -> float:
    """The last finite value of a series (a diverged run ends in inf or nan), else nan."""
    finite = [v for v in values if math.isfinite(v)]
    return finite[-1] if finite else math.nan


def weights_figure(
    epochs: Sequence[int], weights: Mapping[str, Sequence[float]], bias: Sequence[float]
) -> Figure:
    """Each feature's weight per epoch above, the bias below on its own scale (it is often far
    from the weights, and would flatten them on a shared axis). A feature keeps its colour and
    dash from its place in `weights`, so runs on the same columns look alike."""
    finals = {feature: _final(series) for feature, series in weights.items()}
    by_size = sorted(weights, key=lambda f: abs(finals[f]) if math.isfinite(finals[f]) else -1)
    named = set(by_size[-LEGEND_MAX:])
    columns = 1 if len(named) <= 20 else 2
    width = 7.4 + columns * _LEGEND_COLUMN
    right = 1 - (columns * _LEGEND_COLUMN + 0.1) / width
    fig = Figure(figsize=(width, 5.5), dpi=100)
    ax, ax_bias = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    entries: list[tuple[float, Line2D, str]] = []
    for index, (feature, series) in enumerate(weights.items()):
        if feature not in named:
            ax.plot(epochs, series, color="0.75", linewidth=0.6, zorder=1)
            continue
        (line,) = ax.plot(
            epochs,
            series,
            color=f"C{index % 10}",
            linestyle=_DASHES[(index // 10) % len(_DASHES)],
            linewidth=1.4,
            zorder=2,
        )
        final = finals[feature]
        rank = -final if math.isfinite(final) else math.inf  # top to bottom, as the lines end
        entries.append((rank, line, f"{_short(feature)}  ({final:.4g})"))
    entries.sort(key=lambda entry: entry[0])
    handles, labels = [line for _, line, _ in entries], [label for _, _, label in entries]
    if len(weights) > len(named):
        (grey,) = ax.plot([], [], color="0.75", linewidth=0.6)
        handles.append(grey)
        labels.append(f"{len(weights) - len(named)} smaller, unnamed")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(ylabel="weight", title=f"Weights per epoch ({len(weights)} features)")
    ax_bias.plot(epochs, bias, color="black", linewidth=1.4)
    ax_bias.set(xlabel="epoch", ylabel="bias")
    fig.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(right + 0.01, 0.92),
        ncol=columns,
        fontsize=8,
        title="feature  (final weight)",
        title_fontsize=8,
        frameon=False,
    )
    fig.subplots_adjust(left=0.7 / width, right=right, bottom=0.1, top=0.92, hspace=0.08)
    return fig


def predicted_vs_actual(actual: np.ndarray, predicted: np.ndarray) -> Figure:
    """The final model's predictions on held-out rows against their actual values; a perfect
    model puts every point on the diagonal. Pairs that are not finite (a diverged model) are
    left out, and counted in the title."""
    fig = Figure(figsize=(5.5, 5), dpi=100)
    ax = fig.add_subplot()
    keep = np.isfinite(actual) & np.isfinite(predicted)
    xs, ys = actual[keep], predicted[keep]
    dropped = int((~keep).sum())
    title = f"Held-out: predicted vs actual ({len(xs)} rows"
    title += f", {dropped} not finite)" if dropped else ")"
    ax.set(xlabel="actual y", ylabel="predicted y", title=title)
    if len(xs):
        low, high = float(min(xs.min(), ys.min())), float(max(xs.max(), ys.max()))
        pad = 0.05 * (high - low) or 1.0
        ax.scatter(xs, ys, s=5, alpha=0.4, color="tab:blue", linewidths=0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], color="tab:red",
                linestyle="--", linewidth=1, label="predicted = actual")  # fmt: skip
        ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(low - pad, high + pad)
        ax.set_aspect("equal")
        residual = float(((ys - xs) ** 2).sum())
        spread = float(((xs - xs.mean()) ** 2).sum())
        if spread > 0:
            ax.text(0.97, 0.03, f"R² = {1 - residual / spread:.4f}", transform=ax.transAxes,
                    ha="right", va="bottom")  # fmt: skip
        ax.legend(loc="upper left", fontsize=8)
    fig.subplots_adjust(left=0.15, right=0.95, bottom=0.11, top=0.92)
    return fig


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
