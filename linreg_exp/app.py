"""`python -m linreg_exp [overrides]` and the `linreg-exp` script: the Hydra adapter.

Hydra composes the config and calls the task function (`JobRunner`) for each job; the launch
callback (sweeps/callback.py) opens the tracking around the jobs and hands each job its
description. Every failure comes back to one policy here (`report`): one line naming the key
and value for bad input (exit 2), 3 for a single run that diverged, 128 + signal for Ctrl-C or
SIGTERM, 1 for a failed job, and a traceback only for a bug, or for every error with
HYDRA_FULL_ERROR=1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from linreg_exp import schema, signals, startup
from linreg_exp.errors import Abort, Diverged, LinregError, TrackingError
from linreg_exp.sweeps.jobs import Assignment
from linreg_exp.tracking.helper import start_early
from linreg_exp.vocab import Outcome

log = logging.getLogger(__name__)


def register_configs() -> None:
    """The schemas, in Hydra's ConfigStore (where conf/*.yaml find them)."""
    schema.register(ConfigStore.instance())
    # conf/hydra/sweeper/basic.yaml is checked against Hydra's own schema of that name, which is
    # what it needs; Hydra 1.3 warns of that check as deprecated, and still does it.
    warnings.filterwarnings(
        "ignore", r"\s*'hydra/sweeper/basic' is validated against ConfigStore", UserWarning
    )


# At import: joblib and submitit workers compose their job's config after unpickling the task
# function, which imports this module.
register_configs()


class JobRunner:
    """Hydra's task function: runs one job with what its launch handed over (`receive`, called
    by the launch callback just before). Returns the job's objective, for sweepers like Optuna."""

    def __init__(self) -> None:
        self._next: Assignment | None = None

    def receive(self, assignment: Assignment) -> None:
        self._next = assignment

    def __call__(self, cfg: DictConfig) -> float:
        assignment, self._next = self._next, None
        if assignment is None:
            raise LinregError("hydra.callbacks: linreg_exp's launch callback is missing")
        job, runs_before = assignment.job, assignment.tracker.runs_started
        try:
            from linreg_exp.job import run  # torch: imported while the helper imports MLflow

            result = run(schema.typed(cfg), job, assignment.tracker)  # validated first
        except Exception as error:
            rejected = assignment.tracker.runs_started == runs_before  # before its run existed
            if rejected and assignment.made is not None:  # leave nothing behind, no empty dir
                assignment.made.remove()
            # A single run's error, and a store no job can use, go straight to `report` (Hydra
            # would print a line of its own first, and a sweep would go on). Another job's error
            # is Hydra's to record: its sweep goes on, and the job's log file keeps the error.
            if job.number is None or isinstance(error, TrackingError):
                raise Abort(error) from error
            rejected = isinstance(error, LinregError)
            log.error("job %s %s: %s", job.number, "rejected" if rejected else "failed",
                      error, exc_info=not rejected)  # fmt: skip
            raise
        finally:
            if assignment.owns_tracker:  # waits until the run has ended in the store
                assignment.tracker.close()
        if job.number is None and result.outcome is Outcome.DIVERGED:  # said by the job's summary
            raise Abort(Diverged(f"run {result.run_id} diverged"))
        return result.objective


def main() -> None:
    """Run Hydra (or `sync`); end the process with the code `report` decided, without
    teardown."""
    teardown = startup.TeardownSkipped()  # first: its exit handler runs after all others
    signals.install()
    teardown.code = run_sync(sys.argv[2:]) if sys.argv[1:2] == ["sync"] else run_hydra()
    sys.exit(teardown.code)


def run_sync(argv: list[str]) -> int:
    """`linreg-exp sync PATH [--to URI]`: deliver the runs spooled under PATH."""
    parser = argparse.ArgumentParser(
        prog="linreg-exp sync",
        description="Deliver runs spooled while their store was down, or run offline "
        "(mlflow.tracking_uri=offline), to their MLflow runs.",
    )
    parser.add_argument("path", type=Path, help="a run's output dir, a sweep dir, or outputs/")
    parser.add_argument("--to", help="the tracking URI to deliver to (offline runs need one)")
    args = parser.parse_args(argv)
    try:
        from linreg_exp.report.sweep import draw
        from linreg_exp.tracking.sync import sync

        for line in sync(args.path, args.to, report=draw):  # a spooled sweep's report
            print(line)
    except BaseException as error:
        return report(error)
    return 0


def run_hydra() -> int:
    """Hydra raises its errors to us only with HYDRA_FULL_ERROR=1 (else it prints its own
    report and exits 1), so it is set here; the user's own setting shows every traceback."""
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    entry = hydra.main(version_base="1.3", config_path=str(schema.CONFIG_DIR), config_name="config")
    if not INFO_FLAGS & set(sys.argv[1:]):  # a launch: its helper imports MLflow meanwhile
        start_early()
    try:
        if {"-c", "--cfg"} & set(sys.argv[1:]):
            print_checked_config(lambda: entry(JobRunner())())
        else:
            entry(JobRunner())()
    except SystemExit as exit_:  # --help, --version, ...
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except BaseException as error:
        inner = error.error if isinstance(error, Abort) else error
        if full_error and not isinstance(inner, KeyboardInterrupt | Diverged):
            raise inner from None
        return report(inner)
    return 0


def print_checked_config(hydra_entry: Callable[[], None]) -> None:
    """`--cfg job` (or `all`): the composed config Hydra prints is checked first, as a run would
    check it (its values, the device, a table), and printed only if a run would take it: a
    value a run would reject is one line, not a page of config that looks fine above it."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        hydra_entry()
    cfg = OmegaConf.create(printed.getvalue())
    if isinstance(cfg, DictConfig) and all(key in cfg for key in ("data", "optimizer", "trainer")):
        from linreg_exp.sweeps.launch import check_shared

        schema.validate(cfg)
        check_shared(cfg, {})
    sys.stdout.write(printed.getvalue())


def report(error: BaseException) -> int:
    """The one error policy: what the user sees of `error`, and the exit code."""
    if isinstance(error, KeyboardInterrupt):
        if not (isinstance(error, signals.Interrupted) and error.told):  # else said, with epochs
            print("linreg_exp: interrupted", file=sys.stderr)
        return signals.exit_code_for(error)
    if isinstance(error, Diverged):  # the job's summary said why, and the run has it
        return Diverged.EXIT_CODE
    if isinstance(error, LinregError):
        line, code = str(error), 2
    elif isinstance(error, OSError) and error.filename is not None:  # a read-only directory
        line, code = (
            (
                f"cannot write {error.filename}: {error.strerror} (run from a directory "
                "you can write to, or set hydra.run.dir and mlflow.tracking_uri)"
            ),
            2,
        )
    elif isinstance(error, HydraException | OmegaConfBaseException):
        line, code = describe_config_error(error), 2
    elif type(error).__module__.startswith("submitit"):  # the scheduler ended a job: no bug
        line, code = describe_job_failure(error), 1
    else:
        traceback.print_exception(error)
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        print("(set HYDRA_FULL_ERROR=1 for the complete stack trace)", file=sys.stderr)
        return 1
    print(f"error: {line}", file=sys.stderr)
    return code


def _public_fields(node_type: object) -> list[str]:
    if not dataclasses.is_dataclass(node_type):
        return []
    return [f.name for f in dataclasses.fields(node_type) if not f.name.startswith("_")]


def describe_config_error(error: BaseException) -> str:
    """Hydra's multi-line composition errors, folded into one line naming key and choices."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if error.options is not None:
            line = f"{group}={option} is not an option; allowed: {', '.join(sorted(error.options))}"
        else:  # an option its defaults list needs is missing: the message's first line says which
            line = str(error).splitlines()[0].strip()
        if (group, option) in EXTRAS:
            line += (f"; {group}={option} comes with an extra: "
                     f"pip install 'linreg_exp[{EXTRAS[group, option]}]'")  # fmt: skip
        return line
    cause = error.__cause__ if isinstance(error, HydraException) else error
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key:
        parent = cause.full_key.rpartition(".")[0] or "the top level"
        allowed = ", ".join(_public_fields(cause.object_type)) or "see --help"
        return f"{cause.full_key} is not a config key; allowed keys in {parent}: {allowed}"
    if isinstance(cause, ValidationError) and cause.full_key:
        reason = str(cause.msg).splitlines()[0]
        return f"{cause.full_key}={cause.value}: {reason}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith("Ambiguous value for argument"):  # a,b without -m
        override = lines[0].partition("argument ")[2]
        return (f"{override} lists several values: add -m (--multirun) to sweep over them "
                "(or write key=[a,b] for a list value)")  # fmt: skip
    return "; ".join(lines[:2]) or type(error).__name__


# Hydra's flags that print and return: no launch, so no helper started early
INFO_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--version",
              "-sc", "--shell-completion", "-p", "--package", "--resolve"}  # fmt: skip

# The Hydra plugins an extra brings (pyproject.toml), by the config option each provides.
EXTRAS = {
    ("hydra/launcher", "joblib"): "sweep",
    ("hydra/launcher", "submitit_local"): "sweep",
    ("hydra/launcher", "submitit_slurm"): "sweep",
    ("hydra/sweeper", "optuna"): "sweep",
}


def describe_job_failure(error: BaseException) -> str:
    """submitit's report of a job that ended without a result (cancelled, timed out, killed),
    in one line: what it says before the job's error stream, which is in the job's log."""
    head = str(error).split("Error stream produced", 1)[0]
    return " ".join(head.split()) or type(error).__name__
