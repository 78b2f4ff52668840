"""§8 batched sweeps: `hydra/launcher=batched` against the basic and joblib launchers on an
lr x seed grid, and against the store's floor.

Each sweep is one whole `-m` process on a new directory's SQLite store warmed by a one-epoch
run, one launch a measurement (n=1: a 256-config sweep of the basic launcher takes minutes);
per job = the sweep's wall time / its configs. The loss points stored are counted, so a sweep
that dropped epochs cannot look fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from benchmarks.children import Child, cli, run_child, sqlite_env
from benchmarks.harness import MIB, Context, Row, Target, progress
from benchmarks.store_floor import floor_seconds
from tests.support.store import store_count

EPOCHS = 500  # the default config's, which every grid here keeps


@dataclass(frozen=True)
class Sizes:
    batched_sizes: tuple[int, ...]  # configs in an lr x seed grid (squares of 2)
    launcher_max: int  # the largest grid the basic and joblib launchers run


FULL = Sizes(batched_sizes=(16, 256, 4096), launcher_max=256)
QUICK = Sizes(batched_sizes=(16, 64), launcher_max=16)


@dataclass(frozen=True)
class Sweep:
    child: Child
    configs: int
    loss_points: int  # loss points stored, all runs together (checks that nothing was dropped)

    @property
    def per_job(self) -> float:
        return self.child.seconds / self.configs


def lr_seed_grid(configs: int) -> list[str]:
    """Overrides for an lr x seed grid of `configs` (a square of a power of two) configs."""
    side = round(configs**0.5)
    assert side * side == configs, configs
    lrs = ",".join(f"{0.001 * (50 ** (i / max(side - 1, 1))):.4g}" for i in range(side))
    return [f"optimizer.lr={lrs}", f"seed=range(0,{side})", "plots.enabled=false"]


def timed_sweep(
    root: Path, name: str, configs: int, *overrides: str,
    grid: Callable[[int], list[str]] | None = None,
) -> Sweep:  # fmt: skip
    """One sweep in a directory of its own, on a store made there by a one-epoch warm-up run;
    its configs `grid`'s (the lr x seed grid by default)."""
    where = root / name
    where.mkdir()
    db = where / "mlflow.db"
    env = sqlite_env(db)
    log = where / "child.log"
    run_child(cli("trainer.epochs=1", "plots.enabled=false", f"hydra.run.dir={where}/warmup"),
              where, env, log)  # fmt: skip
    args = cli("-m", *overrides, *(grid or lr_seed_grid)(configs),
               f"hydra.sweep.dir={where}/sweep")  # fmt: skip
    child = run_child(args, where, env, log)
    points = store_count(db, "select count(*) from metrics where key = 'loss'") - 1
    return Sweep(child, configs, points)


def expected_points(configs: int, every: int) -> int:
    return configs * len({*range(0, EPOCHS, every), EPOCHS - 1})


def run(ctx: Context) -> list[Row]:
    sizes = ctx.pick(FULL, QUICK)
    root = ctx.folder("batched")
    launchers = {
        "batched": ["hydra/launcher=batched"],
        "basic": [],
        "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    }
    rows: list[Row] = []
    for configs in sizes.batched_sizes:
        thin = configs > 256  # the 4,096-config grid logs every 10th epoch
        every = 10 if thin else 1
        logging = [f"trainer.log_every_n_epochs={every}"] if thin else []
        sweeps: dict[str, Sweep] = {}
        names = ["batched"] + (["basic", "joblib"] if configs <= sizes.launcher_max else [])
        for name in names:
            progress(f"8: {configs} configs, {name} launcher")
            sweeps[name] = timed_sweep(root, f"{name}-{configs}", configs, *launchers[name],
                                       *logging)  # fmt: skip
        batched = sweeps["batched"]
        stored = ", ".join(f"{n}: {s.loss_points}" for n, s in sweeps.items())
        want = expected_points(configs, every)
        check = "all stored" if all(s.loss_points == want for s in sweeps.values()) else (
            f"**expected {want}**")  # fmt: skip
        memory = f"peak RSS {batched.child.peak_bytes / MIB:.0f} MiB (its largest process)"
        label = f"{configs} configs (lr x seed), every {'10th ' if thin else ''}epoch logged"
        if "basic" in sweeps:
            basic = sweeps["basic"]
            rows.append(Row(
                8, f"{label}: batched launcher vs basic launcher, per job all-in",
                [batched.per_job], [basic.per_job], "s",
                Target(0.2, True, "≤ 0.2x") if configs == 256 else None,
                f"{memory}; loss points ({stored}; {check}); basic: "
                f"{basic.child.seconds:.0f} s, batched {batched.child.seconds:.1f} s",
            ))  # fmt: skip
            joblib = sweeps["joblib"]
            rows.append(Row(
                8, f"{label}: joblib launcher (n_jobs=2) vs basic launcher, per job all-in",
                [joblib.per_job], [basic.per_job], "s", None,
                f"joblib: {joblib.child.seconds:.0f} s",
            ))  # fmt: skip
        if configs == 256 or "basic" not in sweeps:
            rows.append(Row(
                8, f"{label}: batched launcher, per job all-in",
                [batched.per_job], [], "s",
                Target(0.25, False, "≤ 0.25 s") if configs == 256 else None,
                f"{batched.child.seconds:.1f} s in all; {memory}; {batched.loss_points} loss "
                f"points ({check})" + ("" if "basic" in sweeps else
                f"; the basic and joblib launchers are run up to {sizes.launcher_max} configs"),
            ))  # fmt: skip
        if configs == 256:
            rows += store_floor(root, batched)
    return rows


def store_floor(root: Path, batched: Sweep, writers: int = 2) -> list[Row]:
    """The issue's floor (benchmarks/store_floor.py): the sweep's runs and metric points written
    through MlflowClient directly by as many writer processes, on a store of its own."""
    progress(
        f"8: the store's floor: {batched.configs} runs through MlflowClient, {writers} writers"
    )
    where = root / "floor"
    where.mkdir()
    uri = f"sqlite:///{where / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # the store made (its schema) before it is timed
    floor = floor_seconds(uri, batched.configs, EPOCHS, writers)
    points = 3 * batched.loss_points
    return [
        Row(
            8, f"{batched.configs} configs: the batched sweep vs the store's floor (the same "
            f"runs and points through MlflowClient, {writers} writer processes)",
            [batched.child.seconds], [floor], "s", Target(1.25, True, "≤ 1.25x"),
            f"{points} points; floor {floor:.1f} s = {floor / batched.configs:.3f} s a job "
            f"({points / floor:.0f} points/s); the sweep {batched.child.seconds:.1f} s whole "
            "process, Python's and torch's start, training, params, configs and models included",
        ),
    ]  # fmt: skip
