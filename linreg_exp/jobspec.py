"""What a launch and a job tell each other, as plain data: the job's description (`Job`), which
sweeps/jobs.py builds from Hydra's config of the job, and its result (`JobResult`). Light enough
to import where no job runs (the launching process), unlike job.py with torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from linreg_exp.vocab import Outcome


class Pruner(Protocol):
    """Which configs of a program stop early: the sweep decides (sweeps/pruning.py builds one a
    program: a batched program's rows together, or one job whose decisions are shared with its
    sweep's other jobs through an Optuna study), the run lifecycle applies it. Rows are the
    program's configs, numbered from 0 (a job is row 0)."""

    def decide(self, step: int, rows: list[int], values: list[float]) -> list[int]:
        """Each of `rows` scored `values` (its sweep.objective, the worst there is for a
        non-finite one) after `step` epochs: the rows to prune now."""

    def end(self, row: int, value: float | None) -> None:
        """`row` ended otherwise than pruned: its objective (None: it did not complete)."""


@dataclass(frozen=True)
class Job:
    """What the launch knows about this one job."""

    output_dir: Path
    tracking_uri: str
    number: int | None = None  # its job number in a sweep; None for a single run
    overrides: tuple[str, ...] = ()  # as typed on the command line
    run_name: str | None = None  # None: MLflow's generated name
    command: str = "python -m linreg_exp"  # the command that reproduces this job
    data_option: str = "default"  # the data group's option: names the dataset
    launch_dir: Path = field(default_factory=Path.cwd)  # where relative data paths start
    parent_run_id: str | None = None  # its sweep's parent run, for a tracker of its own
    log_files: tuple[str, ...] = ()  # attached to the run under logs/ (submitit's)
    # its sweep's pruner (sweep.pruner), where the launch gives it one: a job is its row 0
    pruner: Pruner | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class JobResult:
    outcome: Outcome
    run_id: str
    metrics: dict[str, float]
    objective: float  # what a sweeper optimises: see `objective`
    kept: bool = False  # a FINISHED run of an earlier launch of the sweep, not run again


def objective(outcome: Outcome, metrics: dict[str, float], name: str, direction: str) -> float:
    """The metric `name` of a completed run; the worst value there is for any other run (a
    diverged or pruned one, say), so a sweeper never prefers it."""
    worst = math.inf if direction == "minimize" else -math.inf
    return metrics.get(name, worst) if outcome is Outcome.COMPLETED else worst
