"""The command line: `python -m linreg_exp [overrides]` and the `linreg-exp` script.

Hydra composes the config and runs the job; this module decides how failures look to the
user: one line naming the key and value for bad input (exit 2), 128 + signal for Ctrl-C or
SIGTERM, and full tracebacks only with HYDRA_FULL_ERROR=1.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from linreg_exp import sweep, tracking
from linreg_exp.errors import LinregError, TrackingError
from linreg_exp.schema import register_configs, validate
from linreg_exp.signals import exit_code_for, install_handlers

log = logging.getLogger(__name__)

# An installed wheel carries the configs in the package; a checkout has them at its top level.
_PACKAGED = Path(__file__).resolve().parent / "conf"
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parent.parent / "conf"

# Hydra flags after which no job runs: no tracking helper is started for them.
_NO_JOB_FLAGS = frozenset(
    {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc",
     "--shell-completion"}
)  # fmt: skip

register_configs()
_user_full_error = False  # the user's HYDRA_FULL_ERROR=1: show tracebacks, never fold them
_exit_code: int | None = None  # what main() decided; None while it runs or if it raised


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def hydra_app(cfg: DictConfig) -> float:
    """One job. Returns final_loss, the objective for sweepers such as Optuna."""
    install_handlers()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        validate(cfg)  # before importing torch and mlflow: bad input is answered in a second
        tracker, owned = sweep.job_tracker(cfg)  # the store opens while torch is imported
        try:
            from linreg_exp.experiment import run_experiment

            result = run_experiment(cfg, tracker)
        finally:  # waits until the run has ended: once we exit, it is in the store
            closed = tracker.close() if owned else None
        if closed is not None and closed.error is not None:  # its outcome could not be logged
            raise RuntimeError(closed.error)
        return result
    except LinregError as error:
        # One line, no "Error executing job" preamble; a store no job can use stops a sweep.
        if (not multirun or isinstance(error, TrackingError)) and not _user_full_error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        log.error("job %s rejected: %s", HydraConfig.get().job.num, error)
        raise
    except Exception as error:
        if multirun:  # keep it in the job's own log file; Hydra reports only the first failure
            log.error("job %s failed: %s", HydraConfig.get().job.num, error, exc_info=True)
        raise


def _public_fields(node_type: object) -> list[str]:
    if not dataclasses.is_dataclass(node_type):
        return []
    return [f.name for f in dataclasses.fields(node_type) if not f.name.startswith("_")]


def describe_config_error(error: BaseException) -> str:
    """Hydra's multi-line composition errors, folded into one line naming key and choices."""
    if isinstance(error, MissingConfigException) and error.options:
        group, _, option = (error.missing_cfg_file or "").rpartition("/")
        return f"{group}={option} is not an option; allowed: {', '.join(sorted(error.options))}"
    cause = error.__cause__ if isinstance(error, HydraException) else error
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and cause.full_key:
        parent = cause.full_key.rpartition(".")[0] or "the top level"
        allowed = ", ".join(_public_fields(cause.object_type)) or "see --help"
        return f"{cause.full_key} is not a config key; allowed keys in {parent}: {allowed}"
    if isinstance(cause, ValidationError) and cause.full_key:
        reason = str(cause.msg).splitlines()[0]
        return f"{cause.full_key}={cause.value}: {reason}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines[:2]) or type(error).__name__


def describe_job_failure(error: BaseException) -> str:
    """submitit's report of a job that ended without a result (cancelled, timed out, killed),
    in one line: what it says before the job's error stream, which is in the job's log."""
    head = str(error).split("Error stream produced", 1)[0]
    return " ".join(head.split()) or type(error).__name__


def close_open_sweep(status: str) -> None:
    """Close a sweep that Hydra left open (it skips on_multirun_end after a failed job)."""
    error = sweep.close_sweep(status)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)


def _exit_without_teardown() -> None:
    """End the process once everything is stored and flushed, without tearing down its modules.

    Registered first thing in main(), this runs after the exit handlers of everything imported
    later (torch, MLflow, the sweep's). What is left is the interpreter destroying torch and the
    torch._dynamo/sympy modules torch.optim loads, after the last line of output, with the
    run already in the store. Logging's handlers (the job's log file) and the standard streams
    are flushed here, as the skipped teardown would have."""
    if _exit_code is None:  # main() did not finish: let Python exit as usual
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`| head`) must not change the code
            stream.flush()
    os._exit(_exit_code)


def main() -> None:
    """Run Hydra, reporting errors ourselves (Hydra's raw exceptions come through FULL_ERROR)."""
    global _user_full_error, _exit_code
    atexit.register(_exit_without_teardown)
    full_error = _user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    install_handlers()
    if not _NO_JOB_FLAGS.intersection(sys.argv[1:]):
        tracking.prestart()  # MLflow's imports start now, beside Hydra's and torch's
    code = 0
    try:
        hydra_app()
    except KeyboardInterrupt as error:
        close_open_sweep("KILLED")
        print("linreg_exp: interrupted", file=sys.stderr)
        code = exit_code_for(error)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except LinregError as error:
        if full_error:
            raise
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except (HydraException, OmegaConfBaseException) as error:
        if full_error:
            raise
        print(f"error: {describe_config_error(error)}", file=sys.stderr)
        code = 2
    except Exception as error:
        if full_error:
            raise
        if type(error).__module__.startswith("submitit"):  # the scheduler ended a job: no bug
            print(f"error: {describe_job_failure(error)}", file=sys.stderr)
        else:
            traceback.print_exc()
            print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
            print("(set HYDRA_FULL_ERROR=1 for the complete stack trace)", file=sys.stderr)
        code = 1
    finally:
        tracking.discard_prestarted()  # unused: --help, or an error before the run
        close_open_sweep("FAILED")
    _exit_code = code
    sys.exit(code)
