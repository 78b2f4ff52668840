"""A sweep's report: sweep.png (the objective against the swept values, every job's loss curve)
and summary.csv (a row per job), drawn from the SweepSummary its parent's end reads from the
store (tracking/parent.py calls `draw`, which the launch hands it). Importing this module does
not import matplotlib (the launch imports it); drawing does."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from linreg_exp.tracking.messages import SweepSummary
from linreg_exp.vocab import Metric, Outcome


def draw(summary: SweepSummary, out_dir: str) -> list[Path]:
    """Write sweep.png and summary.csv into `out_dir`; returns their paths. A pruned job has
    no final value to draw (its objective is where it stopped): the picture counts them."""
    from linreg_exp.report import plots

    jobs = [
        plots.SweepJob(
            params=child.params,
            value=math.nan
            if child.outcome == Outcome.PRUNED
            else child.metrics.get(summary.objective, math.nan),
            diverged=child.outcome == Outcome.DIVERGED,
            loss_curve=sorted(child.loss_curve),
        )
        for child in summary.children
    ]
    figure = plots.sweep_figure(jobs, summary.swept, summary.objective)
    pruned = sum(child.outcome == Outcome.PRUNED for child in summary.children)
    if pruned:
        figure.text(0.01, 0.01, f"{pruned} of {len(jobs)} jobs pruned (not drawn)", fontsize=8)
    picture = plots.save_figure(figure, Path(out_dir) / "sweep.png")
    return [picture, write_csv(summary, Path(out_dir) / "summary.csv")]


def write_csv(summary: SweepSummary, path: Path) -> Path:
    named = [summary.objective, Metric.VAL_MSE, Metric.FINAL_LOSS, Metric.FINAL_WEIGHT,
             Metric.FINAL_BIAS]  # fmt: skip
    columns = list(dict.fromkeys(named))
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["run_id", "overrides", *summary.swept, *columns, "status", "outcome"])
        for child in summary.children:
            writer.writerow([
                child.run_id,
                child.overrides,
                *(child.params.get(key, "") for key in summary.swept),
                *(child.metrics.get(key, "") for key in columns),
                child.status,
                child.outcome,
            ])  # fmt: skip
    return path
