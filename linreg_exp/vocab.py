"""The words a run is recorded in: how it ended (`Outcome`), its tag keys, the metrics others read.

One vocabulary for the job, tracking, the sweep's summary, the README and the tests: an outcome,
a tag or a shared metric name is spelled here once. MLflow's run statuses are its own strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

FINISHED: Final = "FINISHED"
FAILED: Final = "FAILED"
KILLED: Final = "KILLED"
RUNNING: Final = "RUNNING"


class Outcome(StrEnum):
    """How a run ended, as its `linreg.outcome` tag says; its MLflow status follows from it."""

    COMPLETED = "completed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    ERROR = "error"
    PRUNED = "pruned"  # stopped early by the sweep's pruner: nothing went wrong

    @property
    def status(self) -> str:
        """FINISHED for a completed or pruned run, KILLED for an interrupted one, else FAILED."""
        finished = {Outcome.COMPLETED: FINISHED, Outcome.PRUNED: FINISHED}
        return {**finished, Outcome.INTERRUPTED: KILLED}.get(self, FAILED)

    @classmethod
    def of(cls, status: str, tagged: str | None) -> str:
        """A stored run's outcome: its tag, else read from its status ("running" while it is)."""
        if tagged:
            return tagged
        known = {FINISHED: cls.COMPLETED, KILLED: cls.INTERRUPTED, RUNNING: "running"}
        return str(known.get(status, cls.ERROR))


class Tag:
    """Every `linreg.*` run tag (and the `best.` prefix of a sweep's best values)."""

    OUTCOME: Final = "linreg.outcome"  # an Outcome
    ERROR: Final = "linreg.error"  # the exception of a run that raised
    FAILURE: Final = "linreg.failure"  # why a run failed or was killed, where nothing raised
    STOPPED_BY: Final = "linreg.stopped_by"  # what interrupted a KILLED run: SIGINT, SLURM: …
    OUTAGES: Final = "linreg.outages"  # how long the store did not answer while the run ran
    DIVERGED_AT_EPOCH: Final = "linreg.diverged_at_epoch"
    PRUNED_AT_EPOCH: Final = "linreg.pruned_at_epoch"  # the epoch a pruned run's last was
    TRAIN_STEP: Final = "linreg.train_step"  # autograd, fused or batched (train.step_kind)
    COMMAND: Final = "linreg.command"  # the command that reproduces the run
    OVERRIDES: Final = "linreg.overrides"  # the overrides as typed, passwords masked
    DEVICE: Final = "linreg.device"
    OUTPUT_DIR: Final = "linreg.hydra_output_dir"
    JOB_NUM: Final = "linreg.job_num"  # a sweep's job number: with CONFIG_HASH, its identity
    CONFIG_HASH: Final = "linreg.config_hash"  # a hash of the job's composed config
    GIT_DIRTY: Final = "linreg.git_dirty"  # the checkout had changes: its commit alone won't do
    VERSION: Final = "linreg.version"  # the linreg_exp package that recorded the run
    KIND: Final = "linreg.kind"  # "sweep" on a sweep's parent run
    SWEEP_DIR: Final = "linreg.sweep_dir"
    SWEEP_KEY: Final = "linreg.sweep_key"  # a hash of the sweep dir, safe to search by
    LAUNCHER: Final = "linreg.launcher"
    SWEEPER: Final = "linreg.sweeper"
    OBJECTIVE: Final = "linreg.objective"  # what picks a sweep's best job: "val_mse minimize"
    BEST_RUN_ID: Final = "linreg.best_run_id"
    BEST_COMMAND: Final = "linreg.best_command"
    BEST_PREFIX: Final = "best."  # best.optimizer.lr: the best job's value of a swept key


class Metric:
    """Metric names read beyond the code that logs them (the summary, the pictures)."""

    LOSS: Final = "loss"  # per epoch, like weight and bias
    WEIGHT: Final = "weight"
    BIAS: Final = "bias"
    FINAL_LOSS: Final = "final_loss"
    FINAL_WEIGHT: Final = "final_weight"
    FINAL_BIAS: Final = "final_bias"
    VAL_MSE: Final = "val_mse"  # on the held-out data: one yardstick whatever the loss
    VAL_MAE: Final = "val_mae"


LOSS_CURVE_FILE: Final = "loss_curve.json"  # a run's sampled loss: [[epoch, loss], ...]
