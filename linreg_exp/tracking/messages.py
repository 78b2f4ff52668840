"""The tracking protocol: what a job asks of its store, and the answers.

One set of messages serves a single run (a sweep of one, without a parent) and every job of a
sweep. A Session (store.py) answers them one at a time, in order, whether it lives in a helper
process (service.py) or in the job's own process. Requests and replies are plain picklable
data: nothing here imports MLflow or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from linreg_exp.history import History, LinearParams

if TYPE_CHECKING:
    import numpy as np

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"  # MLflow's RunStatus names
TAG_ERROR, TAG_FAILURE, TAG_OUTCOME = "linreg.error", "linreg.failure", "linreg.outcome"
TAG_STOPPED_BY = "linreg.stopped_by"  # what interrupted a KILLED run: SIGINT, SLURM: time limit
TAG_CONFIG_HASH = "linreg.config_hash"  # a job's identity within its sweep, for resuming it


# ---------------------------------------------------------------- requests


@dataclass(frozen=True)
class Parent:
    """The parent run a sweep's own tracker owns: the one an earlier run of the same sweep left
    in its sweep dir (`linreg.sweep_dir` tag), reopened, or a new one. Where the jobs run:

    - "here" (the basic launcher): the parent is created with the first job's run, so a sweep
      rejected before any job leaves none;
    - "workers" (joblib): processes that end with the launcher;
    - "scheduler" (submitit, locally or on SLURM): jobs that may outlive a launcher that stops
      early, so only once every job has returned is a child still RUNNING taken as vanished.

    Jobs that run elsewhere need the parent's id before they start: it is created at once."""

    run_name: str
    tags: dict[str, str]
    jobs: str = "here"


@dataclass(frozen=True)
class Open:
    """Open the store (creating it and the experiment if new). Answered by Opened."""

    tracking_uri: str
    experiment_name: str
    parent: Parent | None = None  # this tracker owns a sweep's parent run
    parent_run_id: str | None = None  # a job of a sweep launched elsewhere: its runs' parent
    plots: bool = False  # load matplotlib now, while the job imports torch


@dataclass(frozen=True)
class DatasetInfo:
    """The run's training data as an MLflow dataset input: runs on the same data share it."""

    name: str
    digest: str  # identifies the data: a hash of its config and the seed
    source: dict[str, Any]  # the data config and the seed


@dataclass(frozen=True)
class StartRun:
    """Create a run (a child of the parent, if any) and log its config. Answered by Started;
    in a resumed sweep, by the FINISHED child of the same config (tag TAG_CONFIG_HASH) if one
    exists, and no run is created."""

    run_name: str | None
    tags: dict[str, str]
    config: dict[str, Any]  # the composed config: params (flattened) and config.yaml
    dataset: DatasetInfo | None = None


@dataclass(frozen=True)
class Epochs:
    """A batch of the open run's epochs, logged as `loss`, `weight` and `bias` at step = epoch.
    Steps already stored are skipped, so a batch sent twice is stored once."""

    rows: list[tuple[int, int, float, float, float]]  # epoch, ms timestamp, loss, weight, bias


@dataclass(frozen=True)
class Pictures:
    """What the pictures need: a sample of the data, the reference lines, where to write."""

    x: np.ndarray
    y: np.ndarray
    true: LinearParams
    optimum: LinearParams
    optimum_loss: float | None
    frames: int
    out_dir: Path


@dataclass(frozen=True)
class FinishRun:
    """End the open run with `status`, after logging what is left. Answered by Finished."""

    status: str
    history: History
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pictures: Pictures | None = None
    logs: list[str] = field(default_factory=list)  # files attached under logs/ (submitit's)


@dataclass(frozen=True)
class Close:
    """End a run left open (KILLED), summarise and close the parent (`status` None: from its
    jobs). Answered by Closed; the helper exits when its job hangs up after it."""

    status: str | None = None


Request = Open | StartRun | Epochs | FinishRun | Close


# ---------------------------------------------------------------- replies


@dataclass(frozen=True)
class Opened:
    experiment_id: str
    parent_run_id: str | None
    resumed: bool = False  # the parent has FINISHED children from an earlier run of the sweep


@dataclass(frozen=True)
class Started:
    run_id: str
    experiment_id: str
    parent_run_id: str | None
    kept_loss: float | None = None  # a FINISHED child kept from before: its final loss


@dataclass(frozen=True)
class Stored:
    count: int


@dataclass(frozen=True)
class Finished:
    run_id: str


@dataclass(frozen=True)
class Closed:
    summary: str | None  # the sweep's one-line summary; None without a parent
    error: str | None  # the first job whose outcome could not be logged


@dataclass(frozen=True)
class Failed:
    """The request could not be done. `user_error`: a problem the user can fix (exit 2)."""

    message: str
    user_error: bool


Reply = Opened | Started | Stored | Finished | Closed | Failed


def describe_error(error: BaseException) -> str:
    """The `linreg.error` tag: the exception's type and message, within MLflow's tag limit."""
    return f"{type(error).__name__}: {error}"[:5000]
