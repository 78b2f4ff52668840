"""The tracking protocol: what a job asks of its store, and the answers.

One set of messages serves a single run (a sweep of one, without a parent), every job of a
sweep, and many runs at once. A Session (session.py) answers them one at a time, in order,
whether it lives in a helper process or in the job's own. They carry named metrics, params,
tags and files, as plain picklable data: nothing here imports MLflow, torch or the plots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Literal

from linreg_exp.params import LinearModelSpec as LinearModelSpec  # re-exported: the protocol's
from linreg_exp.vocab import Outcome

# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Task:
    """Work done where the run is recorded, before its files are logged: drawing its pictures,
    say, in the helper process that already loaded the plotting library, so the job need not.
    `function` is called with `argument` and returns the paths of the files it wrote, which are
    logged with the run. The caller injects it (reporting: tracking never imports report); a
    module-level function, it crosses the helper's pipe by reference (pickle names it), and a
    spool never holds one: a run's Task is done before its end is spooled."""

    function: Callable[[Any], Iterable[str | PathLike[str]]]
    argument: object

    def __post_init__(self) -> None:
        by_reference(self.function)

    def run(self) -> list[str]:
        return [str(path) for path in self.function(self.argument)]


SweepReport = Callable[["SweepSummary", str], Iterable[str | PathLike[str]]]


def by_reference(function: Callable[..., Any]) -> None:
    """A function handed to tracking crosses the helper's pipe by reference (pickle names its
    module and name): a lambda, a nested function or one of `__main__` would fail there, not
    in the job's own process, so it is refused here, in both."""
    name, module = getattr(function, "__qualname__", "<?>"), getattr(function, "__module__", "")
    if "<" in name or module in ("", "__main__"):
        raise ValueError(f"{module}.{name}: tracking takes a module-level function of an "
                         "importable module")  # fmt: skip


@dataclass(frozen=True)
class Parent:
    """The parent run a sweep's own tracker owns: the one an earlier launch of the same sweep
    left (same `linreg.sweep_key`), reopened, or a new one. Where the jobs run:

    - "here" (the basic launcher): the parent is created with the first job's run, so a sweep
      rejected before any job leaves none;
    - "workers" (joblib): processes that end with the launcher;
    - "scheduler" (submitit, locally or on SLURM): jobs that may outlive a launcher that stops
      early, so only once every job has returned is a child still RUNNING taken as vanished.

    Jobs that run elsewhere need the parent's id before they start: it is created at once.
    The best job is the one with the best `objective` metric in its `direction`; its model is
    registered under `register_best` (alias "best") if that is set. `report`, injected by the
    launch (reporting: tracking never imports report), is called with the SweepSummary and the
    sweep dir when the sweep ends; it returns the files to log on the parent. A spool records
    only that there is one (journal.py); sync is handed the function again."""

    run_name: str
    tags: dict[str, str]
    jobs: Literal["here", "workers", "scheduler"] = "here"
    objective: str = "val_mse"
    direction: Literal["minimize", "maximize"] = "minimize"
    register_best: str | None = None
    report: SweepReport | None = None

    def __post_init__(self) -> None:
        if self.report is not None:
            by_reference(self.report)


@dataclass(frozen=True)
class Open:
    """Open the store (creating it and the experiment if new). Answered by Opened."""

    tracking_uri: str
    experiment_name: str
    parent: Parent | None = None  # this tracker owns a sweep's parent run
    parent_run_id: str | None = None  # a job of a sweep launched elsewhere: its runs' parent
    spool_dir: str | None = None  # where requests wait when the store is down (spool.py)
    outage_timeout: float = 300.0  # how long a run waits for a store that stopped answering


@dataclass(frozen=True)
class DatasetInfo:
    """The run's training data as an MLflow dataset input: runs on the same data share it."""

    name: str
    digest: str  # identifies the data: a hash of its config and the seed
    source: dict[str, Any]  # the data config and the seed


@dataclass(frozen=True)
class StartRun:
    """Create a run (a child of the parent, if any) and log its params and config. Answered by
    Started; in a resumed sweep, by the FINISHED child with the same identity tags (job number
    and config hash) if one exists, and no run is created."""

    run: str  # the key that names this run in the tracker's later requests
    name: str | None
    tags: dict[str, str]
    params: dict[str, str]
    config: dict[str, Any]  # the composed config, logged as config.yaml
    dataset: DatasetInfo | None = None
    system_metrics: bool = False  # MLflow's sampler of CPU, memory, disk, network while it runs


Row = tuple[int, int, tuple[float, ...]]  # step, ms timestamp, the values in `names` order


@dataclass(frozen=True)
class EpochBatch:
    """One run's epochs: each row's values logged as the metrics `names` at step = epoch."""

    run: str
    names: tuple[str, ...]
    rows: list[Row]


@dataclass(frozen=True)
class Epochs:
    """Epochs of one or more open runs, stored together. Steps a run already has are skipped,
    so a batch sent twice is stored once."""

    batches: list[EpochBatch]


@dataclass(frozen=True)
class Artifact:
    path: str
    directory: str | None = None  # where in the run's artifacts; None: at the top


@dataclass(frozen=True)
class FinishRun:
    """Log what is left of a run and end it with its outcome's status. Answered by Finished."""

    run: str
    outcome: Outcome
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: list[Artifact] = field(default_factory=list)
    report: Task | None = None  # its files are logged too
    model: LinearModelSpec | None = None  # the run's MLflow model (model.py)


@dataclass(frozen=True)
class Close:
    """End the runs left open (KILLED), summarise and close the parent (`status` None: from its
    jobs). Answered by Closed; the helper exits when its job hangs up after it."""

    status: str | None = None
    reason: str = "the job never finished"  # the linreg.failure of runs it finds still open


Request = Open | StartRun | Epochs | FinishRun | Close


# ---------------------------------------------------------------- replies


@dataclass(frozen=True)
class Opened:
    experiment_id: str
    parent_run_id: str | None
    resumed: bool = False  # the parent has FINISHED children from an earlier launch


@dataclass(frozen=True)
class Started:
    run: str
    run_id: str
    experiment_id: str
    parent_run_id: str | None
    kept: dict[str, float] | None = None  # a FINISHED child kept from before: its metrics


@dataclass(frozen=True)
class Stored:
    count: int  # epochs stored (those already there skipped)


@dataclass(frozen=True)
class Finished:
    run_id: str


@dataclass(frozen=True)
class Closed:
    summary: str | None  # the sweep's one-line summary; None without a parent
    error: str | None  # the first run whose outcome could not be logged


@dataclass(frozen=True)
class Failed:
    """The request could not be done. `user_error`: a problem the user can fix (exit 2)."""

    message: str
    user_error: bool


Reply = Opened | Started | Stored | Finished | Closed | Failed


# ---------------------------------------------------------------- a sweep's end, for its report


@dataclass(frozen=True)
class ChildRun:
    """One job of a sweep as its parent's summary reads it from the store."""

    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    status: str
    outcome: str
    overrides: str
    loss_curve: list[tuple[int, float]]  # (epoch, loss), a bounded sample; [] if none


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep's report draws: its children (the latest attempt of each job) and the
    params that tell them apart."""

    children: list[ChildRun]
    swept: list[str]
    objective: str  # the metric the best job was picked by


def describe_error(error: BaseException) -> str:
    """The `linreg.error` tag: the exception's type and message, within MLflow's tag limit."""
    return f"{type(error).__name__}: {error}"[:5000]
