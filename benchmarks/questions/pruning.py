"""§10 pruning: a batched grid of learning rates with `sweep.pruner=asha` against the same grid
unpruned (`sweep.pruner=none`): the same best config, the share of epochs trained, wall time.

The grid is `hparams_search=lr_optuna`'s range, optimizer.lr log-spaced over [1e-4, 0.3], at
seed 0: one dataset, so that "the best config" is the best learning rate. (Until 2026-12-07 it was
§8's lr x seed grid, whose seeds each draw their own data and held-out points: its best was the
luckiest draw, which no pruner can be asked to find from the first epochs.)

ASHA here is synchronous successive halving over the program's rows (report every 25 epochs,
reduction factor 3: rungs at 25, 75, 225 epochs, 256 -> 85 -> 28 -> 9 rows); the survivors are
gathered into smaller tensors at each rung, so pruned rows stop costing compute and writes. Each
sweep is one whole `-m` process on a store of its own (batched.timed_sweep), one launch a
measurement; every epoch is logged, so the loss points stored are the epochs trained.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from benchmarks.harness import Context, Row, Target, progress
from benchmarks.questions.batched import Sweep, timed_sweep


def best_of(where: Path) -> dict[str, str]:
    """The sweep parent's best.* tags (the best job's swept values)."""
    with sqlite3.connect(f"file:{where / 'mlflow.db'}?mode=ro", uri=True) as connection:
        rows = connection.execute("select key, value from tags where key like 'best.%'")
        return dict(rows.fetchall())


LOW, HIGH = 1e-4, 0.3  # conf/hparams_search/lr_optuna.yaml's optimizer.lr


def lr_grid(configs: int) -> list[str]:
    """`configs` learning rates, log-spaced over LOW..HIGH, at seed 0."""
    lrs = ",".join(f"{LOW * (HIGH / LOW) ** (i / (configs - 1)):.6g}" for i in range(configs))
    return [f"optimizer.lr={lrs}", "seed=0", "plots.enabled=false"]


def run(ctx: Context) -> list[Row]:
    configs, epochs = ctx.pick((256, 500), (64, 200))
    root = ctx.folder("pruning")
    common = [f"trainer.epochs={epochs}", "hydra/launcher=batched", "sweep.report_every=25",
              "sweep.reduction_factor=3"]  # fmt: skip
    sweeps: dict[str, Sweep] = {}
    for pruner in ("none", "asha"):  # n=1 each, as §8: a sweep is minutes of one machine
        progress(f"10: {configs} configs, sweep.pruner={pruner}")
        sweeps[pruner] = timed_sweep(root, pruner, configs, *common, f"sweep.pruner={pruner}",
                                     grid=lr_grid)  # fmt: skip
    plain, pruned = sweeps["none"], sweeps["asha"]
    same = best_of(root / "none") == best_of(root / "asha")
    label = f"{configs} learning rates, {epochs} epochs, batched"
    fraction = pruned.loss_points / max(plain.loss_points, 1)
    best = f"same best: {'yes' if same else '**NO**'} ({best_of(root / 'asha')})"
    full = not ctx.quick  # the targets are the full grid's (quick: 2 rungs, not 3)
    return [
        Row(10, f"{label}: asha vs unpruned, wall time",
            [pruned.child.seconds], [plain.child.seconds], "s",
            Target(0.5, True, "≤ 0.5x") if full else None,
            f"{best}; asha {pruned.child.seconds:.1f} s, unpruned {plain.child.seconds:.1f} s"),
        Row(10, f"{label}: asha, epochs trained (loss points stored) / unpruned",
            [fraction], [], "", Target(0.25, False, "≤ 0.25") if full else None,
            f"{pruned.loss_points} of {plain.loss_points} loss points; {best}"),
        Row(10, f"{label}: asha picks another best config than unpruned (0: the same)",
            [0.0 if same else 1.0], [], "", Target(0.0, False, "0 (the same best)")),
    ]  # fmt: skip
