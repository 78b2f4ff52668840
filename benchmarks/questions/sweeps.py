"""§4 sweeps: an lr grid as one sweep (`-m`, the basic launcher; and joblib with n_jobs=2)
against the same jobs as separate `python -m linreg_exp` processes in turn.

Whole processes on one warm SQLite store, the three ways interleaved in rotating order.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.children import cli, run_child, sqlite_env
from benchmarks.harness import Context, Row, Target, progress, rotated


@dataclass(frozen=True)
class Sizes:
    grid_jobs: int
    grid_reps: int


FULL = Sizes(grid_jobs=16, grid_reps=2)
QUICK = Sizes(grid_jobs=4, grid_reps=1)


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    root = ctx.folder("grid")
    jobs = sizes.grid_jobs
    lrs = [f"{0.001 * 1.25**i:.5g}" for i in range(jobs)]
    env = sqlite_env(root / "store" / "mlflow.db")
    log = root / "child.log"
    progress(f"4: {jobs}-job grid, warming up the store")
    run_child(cli(f"hydra.run.dir={root}/warmup", "trainer.epochs=1", "plots.enabled=false"),
              root, env, log)  # fmt: skip
    sweep = [f"optimizer.lr={','.join(lrs)}", "plots.enabled=false"]

    def separate(rep: int) -> float:
        started = time.perf_counter()
        for i, lr in enumerate(lrs):
            overrides = [f"optimizer.lr={lr}", "plots.enabled=false"]
            run_child(cli(*overrides, f"hydra.run.dir={root}/sep{rep}-{i}"), root, env, log)
        return time.perf_counter() - started

    def basic(rep: int) -> float:
        args = cli("-m", *sweep, f"hydra.sweep.dir={root}/basic{rep}")
        return run_child(args, root, env, log).seconds

    def joblib(rep: int) -> float:
        args = cli(
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *sweep,
            f"hydra.sweep.dir={root}/joblib{rep}",
        )
        return run_child(args, root, env, log).seconds

    times: dict[str, list[float]] = {"separate": [], "basic": [], "joblib": []}
    variants: list[tuple[str, Callable[[int], float]]] = [
        ("separate", separate),
        ("basic", basic),
        ("joblib", joblib),
    ]
    for rep in range(sizes.grid_reps):
        for name, fn in rotated(variants, rep):
            progress(f"4: repetition {rep + 1}/{sizes.grid_reps}: {name}")
            times[name].append(fn(rep))
    per_job = statistics.median(times["separate"]) / jobs
    return [
        Row(
            4,
            f"{jobs}-job lr grid: one sweep (-m, basic launcher) vs {jobs} processes in turn",
            times["basic"],
            times["separate"],
            "s",
            Target(0.2, True, "≤ 0.2x") if jobs == 16 else None,
            f"jobs in one process, MLflow in its helper; one process a job: {per_job:.1f} s",
        ),
        Row(
            4,
            f"{jobs}-job lr grid: -m hydra/launcher=joblib n_jobs=2 vs {jobs} processes in turn",
            times["joblib"],
            times["separate"],
            "s",
            None,
            "",
        ),
    ]
