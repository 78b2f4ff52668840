"""§11 optuna: our Optuna search with `sweep.pruner=median` against what a user writes by hand,
and what the pruner saves and costs in a larger search.

The anchor is benchmarks/anchor_optuna.py: plain torch + optuna + mlflow, the very search of
`hparams_search=lr_optuna` (optimizer.lr log-uniform in [1e-4, 0.3], TPE seeded, 500 epochs,
Optuna's MedianPruner on val_mse every 25 epochs, each trial an MLflow child run with every
epoch's loss/weight/bias). Ours runs `python -m linreg_exp hparams_search=lr_optuna
sweep.pruner=median` with our fastest honest settings (OURS): the batched launcher, asked for 8
trials at a time, trained as one program, every epoch still logged to each trial's run.

1. Wall time, the anchor and ours interleaved in rotating order, each whole process on a new
   SQLite store of its own (warmed by a one-epoch run, as §8's), n repetitions.
2. 64 TPE trials with the median pruner against the same 64 without: the share of epochs trained
   (loss points stored: every epoch is logged), and the best val_mse against a 256-value lr grid
   at seed 0 over the same range, batched and unpruned (GRID_NOTE says why not §8's lr x seed
   grid).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from benchmarks.children import PYTHON, Child, cli, run_child, sqlite_env
from benchmarks.harness import REPO, Context, Row, Target, progress, rotated
from tests.support.store import store_count

ANCHOR = REPO / "benchmarks" / "anchor_optuna.py"
# 8 trials asked and trained together; the study in a journal file (Optuna's JournalStorage)
# rather than the default SQLite file: an ask or a tell there costs ~10x less (docs/sweeps.md)
OURS = ["hydra/launcher=batched", "hydra.sweeper.n_jobs=8", "hydra.sweeper.storage=optuna.log"]
SQLITE_STUDY = OURS[:-1]  # the same search, its study in the default <sweep dir>/optuna.db
LOW, HIGH = 1e-4, 0.3  # conf/hparams_search/lr_optuna.yaml's optimizer.lr
GRID_NOTE = (
    "the grid: {} lr values, log-spaced over the search's range, at seed 0 (§8's lr x seed grid "
    "scores each seed on its own data and held-out draw, so its best is the luckiest draw, not a "
    "better lr, and its lrs span 0.001-0.05 only)"
)


@dataclass(frozen=True)
class Sizes:
    trials: int  # the timed search (the issue's: 32)
    epochs: int
    reps: int
    compare_trials: int  # pruned against unpruned (the issue's: 64)
    grid: int  # lr values of the reference grid (the issue's: 256)


FULL = Sizes(trials=32, epochs=500, reps=3, compare_trials=64, grid=256)
QUICK = Sizes(trials=16, epochs=200, reps=1, compare_trials=32, grid=64)


@dataclass(frozen=True)
class Search:
    child: Child
    loss_points: int  # epochs trained, all trials together
    best: float  # the parent run's best_val_mse
    best_lr: str  # the parent run's best.optimizer.lr tag
    pruned: int


def _one(where: Path, sql: str) -> str:
    with sqlite3.connect(f"file:{where}?mode=ro", uri=True) as connection:
        row = connection.execute(sql).fetchone()
    return "" if row is None or row[0] is None else str(row[0])


def timed(where: Path, args: list[str]) -> Search:
    """`args` run once in `where`, on a store of its own warmed by a one-epoch run (schema and
    page cache), and what it stored: the loss points, the best val_mse and lr, pruned trials."""
    where.mkdir()
    db = where / "mlflow.db"
    env, log = sqlite_env(db), where / "child.log"
    run_child(cli("trainer.epochs=1", "plots.enabled=false", f"hydra.run.dir={where}/warmup"),
              where, env, log)  # fmt: skip
    count = "select count(*) from metrics where key = 'loss'"
    before = store_count(db, count)
    child = run_child(args, where, env, log)
    best = _one(db, "select min(value) from metrics where key = 'best_val_mse'")
    lr = _one(db, "select value from tags where key = 'best.optimizer.lr'")
    pruned = _one(db, "select max(value) from metrics where key in ('jobs_pruned', "
                      "'trials_pruned')")  # fmt: skip
    return Search(child, store_count(db, count) - before, float(best or "nan"), lr,
                  int(float(pruned or 0)))  # fmt: skip


def anchor(where: Path, trials: int, epochs: int, pruner: str) -> Search:
    args = [PYTHON, str(ANCHOR), f"--trials={trials}", f"--epochs={epochs}", f"--pruner={pruner}",
            "--report-every=25"]  # fmt: skip
    return timed(where, args)


def ours(where: Path, trials: int, epochs: int, pruner: str, settings: list[str] = OURS) -> Search:
    args = cli("hparams_search=lr_optuna", f"hydra.sweeper.n_trials={trials}",
               f"sweep.pruner={pruner}", "sweep.report_every=25", "plots.enabled=false",
               f"trainer.epochs={epochs}", *settings, f"hydra.sweep.dir={where}/sweep")  # fmt: skip
    return timed(where, args)


def ours_sqlite_study(where: Path, trials: int, epochs: int, pruner: str) -> Search:
    return ours(where, trials, epochs, pruner, SQLITE_STUDY)


def lr_grid(where: Path, values: int, epochs: int) -> Search:
    """The search's range as a log-spaced grid at seed 0, batched, unpruned."""
    lrs = ",".join(f"{LOW * (HIGH / LOW) ** (i / (values - 1)):.6g}" for i in range(values))
    args = cli("-m", "hydra/launcher=batched", f"optimizer.lr={lrs}", "seed=0",
               "plots.enabled=false", f"trainer.epochs={epochs}",
               f"hydra.sweep.dir={where}/sweep")  # fmt: skip
    return timed(where, args)


def said(search: Search) -> str:
    lr = float(search.best_lr or "nan")
    return (f"{search.child.seconds:.1f} s, {search.loss_points} epochs, {search.pruned} "
            f"pruned, best val_mse {search.best:.6g} (lr {lr:.4g})")  # fmt: skip


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    root = ctx.folder("optuna")
    full = not ctx.quick  # the issue's targets are the full sizes'
    n, epochs = sizes.trials, sizes.epochs
    measures = {"anchor": anchor, "ours": ours, "ours, SQLite study": ours_sqlite_study}
    runs: dict[str, list[Search]] = {name: [] for name in measures}
    for rep in range(sizes.reps):
        for name in rotated(list(measures), rep):
            progress(f"11: {n} TPE trials, median pruner, {name} (repetition {rep + 1})")
            where = root / f"{name.replace(', ', '-').replace(' ', '_')}-{rep}"
            runs[name].append(measures[name](where, n, epochs, "median"))
    hand, mine, default = runs["anchor"], runs["ours"], runs["ours, SQLite study"]
    label = f"{n} TPE trials, median pruner, {epochs} epochs"
    rows = [
        Row(11, f"{label}: ours ({' '.join(OURS)}) vs the hand-written anchor, wall time",
            [s.child.seconds for s in mine], [s.child.seconds for s in hand], "s",
            Target(0.5, True, "≤ 0.5x") if full else None,
            f"ours: {said(mine[-1])}; anchor: {said(hand[-1])} (the last repetition's)"),
        Row(11, f"{label}: ours with the study in the default SQLite file "
                f"({' '.join(SQLITE_STUDY)}) vs the anchor, wall time",
            [s.child.seconds for s in default], [s.child.seconds for s in hand], "s", None,
            f"ours: {said(default[-1])} (the last repetition's)"),
    ]  # fmt: skip

    m = sizes.compare_trials
    progress(f"11: {m} TPE trials, ours, median pruner")
    pruned = ours(root / f"ours-{m}-median", m, epochs, "median")
    progress(f"11: {m} TPE trials, ours, unpruned")
    plain = ours(root / f"ours-{m}-none", m, epochs, "none")
    progress(f"11: {sizes.grid}-value lr grid at seed 0, batched, unpruned")
    grid = lr_grid(root / f"grid-{sizes.grid}", sizes.grid, epochs)
    label = f"{m} TPE trials, median pruner, {epochs} epochs"
    gap = pruned.best / grid.best - 1
    rows += [
        Row(11, f"{label}: epochs trained (loss points stored) / the same search unpruned",
            [pruned.loss_points / max(plain.loss_points, 1)], [], "",
            Target(0.5, False, "≤ 0.5") if full else None,
            f"median: {said(pruned)}; unpruned: {said(plain)}"),
        Row(11, f"{label}: best val_mse over the {sizes.grid}-value lr grid's best, - 1",
            [gap], [], "", Target(0.01, False, "≤ 0.01 (within 1%)") if full else None,
            f"grid: {said(grid)}; unpruned search: {plain.best / grid.best - 1:+.2e}; "
            + GRID_NOTE.format(sizes.grid)),
    ]  # fmt: skip
    return rows
