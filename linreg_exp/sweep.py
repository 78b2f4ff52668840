"""Which tracker a job records through: the Hydra side of tracking.

A single run is a sweep of one without a parent: it opens its own tracker. A multirun is one
MLflow parent run with a child per job; the Hydra callback below opens the sweep's tracker
when the multirun starts and closes it (summary, summary.csv, sweep.png) when it ends.

- The basic launcher runs every job in this process, one after another: they share the
  sweep's tracker, whose parent is created with the first job's run.
- Other launchers (joblib, submitit local or SLURM) run jobs in other processes or machines:
  the parent is created before any job starts, and its id reaches the jobs through a file in
  the sweep dir (and an environment variable); each job opens a tracker of its own on it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from linreg_exp import tracking
from linreg_exp.errors import ConfigError, LinregError
from linreg_exp.tracking.messages import Open, Parent
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.tracking.uris import mask_override, resolve_tracking_uri, run_url

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"
SWEEP_FILE_ENV = "LINREG_EXP_SWEEP_FILE"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@dataclass
class _Sweep:
    tracker: Tracker
    in_process: bool  # its jobs run here, one after another, and share its tracker
    pid: int
    swept: list[str]  # the keys the sweep varies, which name its jobs' runs
    lock: FileLock  # one launch at a time in a sweep dir (a rerun resumes the sweep)
    announced: bool = False


_sweep: _Sweep | None = None


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def swept_values(config: DictConfig) -> dict[str, str]:
    """What a multirun varies, as typed: `optimizer.lr` -> `0.005,0.02` (the sweeper's own
    search space too, such as Optuna's `params`)."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    swept = dict(_split(str(o.input_line)) for o in parsed if o.is_sweep_override())
    params = config.hydra.sweeper.get("params") or {}
    return swept | {str(key): str(value) for key, value in params.items()}


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """`optimizer.lr` -> `lr`, unless another key ends the same way."""
    last = [key.rpartition(".")[2] for key in keys]
    return {
        key: tail if last.count(tail) == 1 else key for key, tail in zip(keys, last, strict=True)
    }


def describe(values: dict[str, str]) -> str:
    """`lr=0.005 loss=l1`: short and, within a sweep, unique."""
    short = short_names(list(values))
    return " ".join(f"{short[key]}={value}" for key, value in values.items())


def run_name(cfg: DictConfig) -> str | None:
    """A job's run name: the user's mlflow.run_name, else its swept values (None: MLflow's)."""
    if cfg.mlflow.run_name:
        return str(cfg.mlflow.run_name)
    sweep = _here()
    swept = sweep.swept if sweep is not None else _sweep_file().get("swept", [])
    mine = dict(_split(o) for o in HydraConfig.get().overrides.task)
    return describe({key: mine[key] for key in swept if key in mine}) or None


def jobs_of(launcher: str) -> str:
    """Where a launcher runs the jobs (see messages.Parent)."""
    if launcher == BASIC_LAUNCHER:
        return "here"
    return "scheduler" if "submitit" in launcher else "workers"


def sweep_open_request(config: DictConfig, swept: dict[str, str]) -> Open:
    """The store and the parent run (name, tags) of a multirun, from its config and what it
    varies (`swept_values`)."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    overrides = [mask_override(o) for o in config.hydra.overrides.task]
    parent = Parent(
        run_name=config.mlflow.run_name or f"sweep {describe(swept)}".strip(),
        tags={
            "linreg.kind": "sweep",
            "linreg.sweep_dir": str(sweep_dir),
            "linreg.overrides": " ".join(overrides),
            "linreg.command": shlex.join(["python", "-m", "linreg_exp", "-m", *overrides]),
            "linreg.launcher": str(config.hydra.launcher._target_).rsplit(".", 1)[-1],
            "linreg.sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
        },
        jobs=jobs_of(str(config.hydra.launcher._target_)),
    )
    uri = resolve_tracking_uri(config.mlflow.tracking_uri, Path.cwd())
    return Open(uri, config.mlflow.experiment_name, parent, plots=config.plots.enabled)


class MlflowSweepCallback(Callback):
    """Owns the parent run of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra turns a callback's exception into a warning and goes on; a sweep whose store
        or shared config is unusable must stop instead, so errors leave as SystemExit."""
        try:
            _open_sweep(config)
        except LinregError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from error
        except Exception as error:
            log.exception("could not open the sweep's MLflow parent run")
            raise SystemExit(1) from error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        error = close_sweep(None)
        if error is not None:  # a job's outcome could not be logged
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1)


def _open_sweep(config: DictConfig) -> None:
    global _sweep
    from linreg_exp.schema import validate

    validate(config)  # the values every job shares: reject them before any run exists
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(sweep_dir / ".linreg_exp.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} is in use by another sweep that is still running"
        ) from None
    swept = swept_values(config)
    request = sweep_open_request(config, swept)
    in_process = request.parent is not None and request.parent.jobs == "here"
    tracker = tracking.open_tracker(request)
    _sweep = _Sweep(tracker, in_process, os.getpid(), list(swept), lock)
    if in_process:
        return  # the first job waits for the store; the parent comes with its run
    opened = tracker.opened()  # jobs elsewhere need the parent's id before they start
    path = sweep_dir / SWEEP_FILE
    info = {
        "tracking_uri": request.tracking_uri,
        "experiment_name": request.experiment_name,
        "parent_run_id": opened.parent_run_id,
        "swept": _sweep.swept,
    }
    path.write_text(json.dumps(info))
    os.environ[SWEEP_FILE_ENV] = str(path)
    announce(opened.experiment_id, opened.parent_run_id, request.tracking_uri, opened.resumed)


def _sweep_file() -> dict[str, Any]:
    """What a job launched elsewhere (joblib, submitit) knows of its sweep; {} if none."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    path = Path(os.environ.get(SWEEP_FILE_ENV) or Path(hydra_cfg.sweep.dir) / SWEEP_FILE)
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def close_sweep(status: str | None) -> str | None:
    """Summarise and close the sweep's parent (status None: from its jobs' outcomes).

    Returns the error that kept a job's outcome from being logged, if one did."""
    global _sweep
    sweep, _sweep = _here(), None
    if sweep is None:
        return None
    try:
        closed = sweep.tracker.close(status)
    except (LinregError, RuntimeError) as error:
        return str(error)
    finally:
        sweep.lock.release()
    if closed.summary is not None:
        log.info("%s", closed.summary)
    os.environ.pop(SWEEP_FILE_ENV, None)
    return closed.error


def _here() -> _Sweep | None:
    """The sweep opened in this process (not in the launcher a worker was forked from)."""
    return _sweep if _sweep is not None and _sweep.pid == os.getpid() else None


def job_tracker(cfg: DictConfig) -> tuple[Tracker, bool]:
    """The tracker this job records through, and whether the job owns it (must close it)."""
    sweep = _here()
    if sweep is not None and sweep.in_process:
        return sweep.tracker, False
    if info := _sweep_file():
        uri, name, parent = info["tracking_uri"], info["experiment_name"], info["parent_run_id"]
        request = Open(uri, name, parent_run_id=parent, plots=cfg.plots.enabled)
    else:
        uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, Path(HydraConfig.get().runtime.cwd))
        request = Open(uri, cfg.mlflow.experiment_name, plots=cfg.plots.enabled)
    return tracking.open_tracker(request), True


def announce(experiment_id: str, parent_run_id: str | None, uri: str, resumed: bool) -> None:
    """Say once where the sweep's parent run is (with the basic launcher it exists once the
    first job has started, unless an earlier run of the sweep left it)."""
    sweep = _here()
    if sweep is None or sweep.announced or parent_run_id is None:
        return
    sweep.announced = True
    url = run_url(uri, experiment_id, parent_run_id)
    resuming = " (resumed: FINISHED jobs are kept, the others run again)" if resumed else ""
    log.info("MLflow parent run %s%s: %s", parent_run_id, resuming, url)
