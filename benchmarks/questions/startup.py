"""§1 start-up: a whole default run (`python -m linreg_exp`) against the bare tutorial script.

Both are whole processes, timed from a small launcher (children.run_child) on a warm SQLite store
(a warm-up run created its schema), interleaved in rotating order; the first repetitions also
time a run on a NEW store. The same runs give §6 its default run's peak RSS (questions/memory).
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.children import Child, bare, cli, helper_peak_mib, run_child, sqlite_env
from benchmarks.harness import Context, Row, Target, progress, rotated


@dataclass(frozen=True)
class Sizes:
    process_reps: int  # each repetition: bare, plots on, plots off
    new_store_reps: int  # runs on a new store (one a repetition, the first ones)


FULL = Sizes(process_reps=12, new_store_reps=2)
QUICK = Sizes(process_reps=2, new_store_reps=1)


@dataclass(frozen=True)
class Processes:
    """The whole-process runs: by variant (bare, plots, noplots, new), and the bare runs paired
    with the new-store ones; the peak RSS of a run's MLflow helper process."""

    runs: dict[str, list[Child]]
    new_bare: list[Child]
    helper_mib: float

    def seconds(self, name: str) -> list[float]:
        return [c.seconds for c in self.runs[name]]

    def cpu(self, name: str) -> list[float]:
        return [c.cpu_seconds for c in self.runs[name]]


def measure(ctx: Context) -> Processes:
    """The runs, once an invocation (§1 and §6 both read them)."""
    return ctx.once("startup", lambda: _measure(ctx))


def _measure(ctx: Context) -> Processes:
    sizes = ctx.pick(FULL, QUICK)
    root = ctx.folder("process")
    env = sqlite_env(root / "warm" / "mlflow.db")
    log = root / "child.log"
    progress("1: warming up the store (first run creates its schema) and the page cache")
    run_child(cli(f"hydra.run.dir={root}/warmup"), root, env, log)
    run_child(bare(), root, env, log)

    def linreg(name: str, rep: int, *extra: str, store_env: dict[str, str] = env) -> Child:
        return run_child(cli(f"hydra.run.dir={root}/{name}{rep}", *extra), root, store_env, log)

    results: dict[str, list[Child]] = {"bare": [], "plots": [], "noplots": [], "new": []}
    new_bare: list[Child] = []
    for rep in range(sizes.process_reps):
        progress(f"1: repetition {rep + 1}/{sizes.process_reps}")
        variants: list[tuple[str, Callable[[], Child]]] = [
            ("bare", lambda: run_child(bare(), root, env, log)),
            ("plots", functools.partial(linreg, "plots", rep)),
            ("noplots", functools.partial(linreg, "noplots", rep, "plots.enabled=false")),
        ]
        if rep < sizes.new_store_reps:
            new_env = sqlite_env(root / f"new{rep}" / "mlflow.db")
            variants.append(("new", functools.partial(linreg, "new", rep, store_env=new_env)))
        for name, run in rotated(variants, rep):
            results[name].append(run())
        if rep < sizes.new_store_reps:
            new_bare.append(results["bare"][-1])

    helper_mib = helper_peak_mib(cli(f"hydra.run.dir={root}/helper"), root, env)
    return Processes(results, new_bare, helper_mib)


def run(ctx: Context) -> list[Row]:
    p = measure(ctx)
    schema = statistics.median(p.seconds("new")) - statistics.median(
        p.seconds("plots")[: len(p.new_bare)]
    )
    return [
        Row(
            1,
            "default run (plots on) vs bare tutorial script, whole process",
            p.seconds("plots"),
            p.seconds("bare"),
            "s",
            Target(1.3, True, "≤ 1.3x"),
            "warm sqlite store",
        ),
        Row(
            1,
            "default run (plots on) vs bare tutorial script: CPU time (user + system, the job "
            "and its MLflow helper process)",
            p.cpu("plots"),
            p.cpu("bare"),
            "s",
            None,
            "the helper's MLflow import and store opening run beside the job's own start-up: "
            "CPU time, not wall time",
        ),
        Row(
            1,
            "default run, plots.enabled=false vs bare tutorial script",
            p.seconds("noplots"),
            p.seconds("bare"),
            "s",
            Target(1.3, True, "≤ 1.3x"),
            "warm sqlite store",
        ),
        Row(
            1,
            "default run (plots on) on a NEW store vs bare tutorial script",
            p.seconds("new"),
            [c.seconds for c in p.new_bare],
            "s",
            None,
            f"schema creation adds ≈ {schema:.2f} s",
        ),
    ]
