"""§6 memory: peak RSS of a default run against the bare tutorial script's (§1's runs), of a
long streaming run over time (§7's runs), and of a run on 1e8 points (does it fit 24 GiB?).

Peak RSS of a whole process is ru_maxrss, read by the launcher the child starts from (see
children.py); a job's MLflow helper process is a process of its own, read from /proc (VmHWM).
In quick mode the big run has fewer points and the 1e8 figure is projected from it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from benchmarks.children import bare, cli, run_child, sqlite_env
from benchmarks.harness import GIB, MIB, Context, Row, Target, progress
from benchmarks.questions import startup, stopping


@dataclass(frozen=True)
class Sizes:
    big_points: int


FULL = Sizes(big_points=100_000_000)
QUICK = Sizes(big_points=20_000_000)  # above baseline.LAD_MAX_POINTS, as 1e8 is


def run(ctx: Context) -> list[Row]:
    processes = startup.measure(ctx)
    plots_mib = [c.peak_bytes / MIB for c in processes.runs["plots"]]
    small_run_mib = statistics.median(plots_mib)
    noplots_mib = statistics.median(c.peak_bytes / MIB for c in processes.runs["noplots"])
    rows = [
        Row(
            6,
            "peak RSS: default run (plots on) vs bare tutorial script",
            plots_mib,
            [c.peak_bytes / MIB for c in processes.runs["bare"]],
            "MiB",
            None,
            f"plots off: {noplots_mib:.0f} MiB; the job process"
            f" only: its MLflow helper process peaks at {processes.helper_mib:.0f} MiB beside it",
        ),
        long_run_row(stopping.measure(ctx), small_run_mib),
    ]
    return rows + big_memory(ctx, small_run_mib)


def long_run_row(runs: list[stopping.LongRun], small_run_mib: float) -> Row:
    """The long runs' memory: peaks, and RSS midway against at SIGTERM (flat: no growth)."""
    epochs = stopping.span([r.epochs for r in runs])
    rss = "; ".join(
        f"job {r.rss_mid_mib[0]:.0f} → {r.rss_end_mib[0]:.0f} MiB, helper "
        f"{r.rss_mid_mib[1]:.0f} → {r.rss_end_mib[1]:.0f} MiB"
        for r in runs
    )
    return Row(
        6,
        f"peak RSS of a long streaming run ({epochs} epochs before SIGTERM): the job "
        "(its helper: in the note)",
        [r.job_peak_mib for r in runs],
        [],
        "MiB",
        None,
        f"its MLflow helper process peaks at {stopping.span([r.helper_peak_mib for r in runs])} "
        f"MiB; RSS midway → at SIGTERM: {rss}: flat, so a longer run stays at these peaks"
        f"; a 500-epoch default run peaks at {small_run_mib:.0f} MiB (first §6 row)",
    )


def big_memory(ctx: Context, small_run_mib: float) -> list[Row]:
    """Peak RSS of a run with big_points points (3 epochs) against the bare script's."""
    n = ctx.pick(FULL, QUICK).big_points
    root = ctx.folder("big")
    env = sqlite_env(root / "mlflow.db")
    log = root / "child.log"
    progress(f"6: data.num_data={n} trainer.epochs=3 (and the bare script at {n})")
    overrides = [f"hydra.run.dir={root}/run", f"data.num_data={n}", "trainer.epochs=3"]
    ours = run_child(cli(*overrides, "plots.enabled=false"), root, env, log)
    base = run_child(bare(str(n), "3"), root, env, log)
    per_point = ours.peak_bytes / n
    marginal = f"; ≈ {(ours.peak_bytes - small_run_mib * MIB) / n:.1f} above a 1e3-point run"
    budget = 24 * GIB
    projected = float(ours.peak_bytes)
    if n < 100_000_000:  # the fixed part (a 1e3-point run) plus the per-point part, scaled
        fixed = small_run_mib * MIB
        projected = fixed + (ours.peak_bytes - fixed) * 100_000_000 / n
    label = f"{n:.0e}".replace("+0", "")
    return [
        Row(
            6,
            f"peak RSS, {label} points, 3 epochs: linreg_exp vs bare tutorial script",
            [ours.peak_bytes / MIB],
            [base.peak_bytes / MIB],
            "MiB",
            None,
            f"{per_point:.1f} bytes a point (bare: {base.peak_bytes / n:.1f}){marginal}; "
            f"wall {ours.seconds:.1f} s vs {base.seconds:.1f} s",
        ),
        Row(
            6,
            "1e8 points fit in 24 GiB: peak RSS"
            + ("" if n >= 100_000_000 else f" (projected from {label})"),
            [projected / GIB],
            [],
            "GiB",
            Target(24.0, False, "≤ 24 GiB"),
            f"{100 * projected / budget:.0f}% of 24 GiB",
        ),
    ]
