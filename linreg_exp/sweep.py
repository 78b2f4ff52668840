"""A multirun is one MLflow parent run with one nested child run per job.

The Hydra callback opens the parent when the multirun starts and closes it with a summary when
it ends (`on_multirun_end`, or `close_open_sweeps` when a job failure or a signal skips that
hook). Where the parent's MLflow work happens depends on where the jobs run:

- the basic launcher runs every job in this process, one after the other: the parent and every
  child are recorded by one companion process (companion.py), which imports MLflow and opens the
  store while this process composes and imports torch, and logs each job while the next starts;
- other launchers (joblib, submitit local or SLURM) run jobs in other processes or machines:
  this process creates the store, the experiment and the parent before any job starts (so
  parallel jobs never race on a new store's schema migration) and hands their ids to the jobs
  through a file in the sweep dir and an environment variable.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from linreg_exp import companion
from linreg_exp.parent_run import SweepInfo, SweepTarget

# mlflow, torch and matplotlib are imported inside the functions that need them: Hydra
# instantiates this callback for every command, and `--help` or a bad override should not wait.

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"
SWEEP_FILE_ENV = "LINREG_EXP_SWEEP_FILE"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def current_sweep() -> SweepInfo | None:
    """The sweep a job in another process belongs to (None for a single run)."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    path = Path(os.environ.get(SWEEP_FILE_ENV) or Path(hydra_cfg.sweep.dir) / SWEEP_FILE)
    if not path.is_file():
        return None
    return SweepInfo(**json.loads(path.read_text()))


_open_sweeps: dict[str, SweepInfo] = {}


def sweep_target(config: DictConfig) -> SweepTarget:
    """The parent run's store, name and tags, from the multirun's config."""
    from linreg_exp import uris

    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    overrides = [uris.mask_override(o) for o in config.hydra.overrides.task]
    return SweepTarget(
        tracking_uri=uris.resolve_tracking_uri(config.mlflow.tracking_uri, Path.cwd()),
        experiment_name=config.mlflow.experiment_name,
        run_name=config.mlflow.run_name or f"sweep {sweep_dir.parent.name}/{sweep_dir.name}",
        tags={
            "linreg.kind": "sweep",
            "linreg.sweep_dir": str(sweep_dir),
            "linreg.overrides": " ".join(overrides),
            "linreg.command": shlex.join(["python", "-m", "linreg_exp", "-m", *overrides]),
            "linreg.launcher": str(config.hydra.launcher._target_).rsplit(".", 1)[-1],
            "linreg.sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
        },
    )


class MlflowSweepCallback(Callback):
    """Owns the parent run of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra turns a callback's exception into a warning and goes on; a sweep whose store
        or shared config is unusable must stop instead, so errors leave as SystemExit."""
        from linreg_exp.errors import LinregError

        try:
            self._open_parent(config)
        except LinregError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        except Exception as error:
            log.exception("could not open the sweep's MLflow parent run")
            raise SystemExit(1) from error

    def _open_parent(self, config: DictConfig) -> None:
        from linreg_exp.schema import validate

        validate(config)  # the values every job shares: reject them before any run exists
        target = sweep_target(config)
        sweep_dir = Path(target.tags["linreg.sweep_dir"])
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if str(config.hydra.launcher._target_) == BASIC_LAUNCHER and companion.start_sweep(target):
            return  # the jobs run here and record through the companion; it opens the parent
        companion.discard_prestarted()

        from linreg_exp.parent_run import open_parent

        info = open_parent(target)
        path = sweep_dir / SWEEP_FILE
        path.write_text(json.dumps(asdict(info)))
        os.environ[SWEEP_FILE_ENV] = str(path)
        _open_sweeps[info.parent_run_id] = info
        log.info("MLflow parent run %s: %s", info.parent_run_id, info.url)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        error = close_open_sweeps(None)
        if error is not None:  # the companion could not record the last job
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1)


def close_open_sweeps(status: str | None) -> str | None:
    """Summarise and close every parent run still open (None = status from the jobs' outcome).

    Returns the error that kept the companion from recording a job, if one did."""
    error = None
    if companion.sweep_in_progress():
        summary, error = companion.end_sweep(status)
        if summary is not None:
            log.info("%s", summary)
    if not _open_sweeps:
        return error
    from linreg_exp.parent_run import close_parent

    while _open_sweeps:
        _, info = _open_sweeps.popitem()
        log.info("%s", close_parent(info, status)[1])
    os.environ.pop(SWEEP_FILE_ENV, None)
    return error


atexit.register(close_open_sweeps, "FAILED")
