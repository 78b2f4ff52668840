"""Each job's description (jobspec.Job), from Hydra's config of that job: the one place where
Hydra's view of a job becomes plain data for it."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from linreg_exp.jobspec import Job
from linreg_exp.sweeps import naming
from linreg_exp.sweeps.launch import LaunchInfo, MadeDirs, config_flags, sweep_key
from linreg_exp.sweeps.pruning import job_pruner
from linreg_exp.tracking.recorder import Tracker
from linreg_exp.tracking.uris import mask_override

# Overrides that select a sweep; a job's reproduce command must not start the sweep again.
SWEEP_ONLY_OVERRIDES = ("hparams_search=",)


@dataclass(frozen=True)
class Assignment:
    """A job as its launch hands it to the task function: what it is, what it records through,
    and whether that tracker is the job's own to close when it is done."""

    job: Job
    tracker: Tracker
    owns_tracker: bool
    made: MadeDirs | None = None  # a single run's output dir, and the dirs its launch made


def describe(config: DictConfig, info: LaunchInfo) -> Job:
    """`config`: the job's composed config with its `hydra` node, as Hydra hands it to
    callbacks when the job starts."""
    hydra = config.hydra
    overrides = tuple(str(o) for o in hydra.overrides.task)
    run_name = config.mlflow.run_name or (
        naming.job_name(overrides, info.swept) if info.multirun else naming.single_name(overrides)
    )
    pruner = None
    if info.multirun:  # its sweep's pruner: decisions shared through an Optuna study
        key = sweep_key(Path(str(hydra.sweep.dir)).resolve())
        pruner = job_pruner(config, key, int(hydra.job.num))
    return Job(
        output_dir=Path(str(hydra.runtime.output_dir)),
        tracking_uri=info.tracking_uri,
        number=int(hydra.job.num) if info.multirun else None,
        overrides=overrides,
        run_name=run_name,
        command=reproduce_command(hydra, overrides),
        data_option=str(hydra.runtime.choices.get("data", "data")),
        launch_dir=Path(str(hydra.runtime.cwd)),
        parent_run_id=info.parent_run_id,
        log_files=submitit_logs(),
        pruner=pruner,
    )


def reproduce_command(hydra: DictConfig, overrides: Sequence[str]) -> str:
    """The command line that re-runs exactly this job from any directory: the config dirs and
    name it was composed from (absolute, from its `hydra` node), and its overrides (sweep
    selectors dropped)."""
    flags = config_flags(hydra)
    # where its configs come from: a config dir added by hydra.searchpath composes it too
    searchpath = [str(o) for o in hydra.overrides.hydra if str(o).startswith("hydra.searchpath=")]
    kept = [absolute_paths(o, Path(str(hydra.runtime.cwd))) for o in [*searchpath, *overrides]
            if not o.startswith(SWEEP_ONLY_OVERRIDES)]  # fmt: skip
    return shlex.join(["python", "-m", "linreg_exp", *flags, *(mask_override(o) for o in kept)])


PATH_KEYS = ("data.path=", "data.val_path=")  # files, relative to where the run was launched


def absolute_paths(override: str, launch_dir: Path) -> str:
    """`data.path=my.csv` as `data.path=/where/it/was/launched/my.csv`: the recorded command
    reads the same file from any directory."""
    for key in PATH_KEYS:
        if override.startswith(key):
            value = override.removeprefix(key)
            if value and value != "null" and not Path(value).expanduser().is_absolute():
                return f"{key}{(launch_dir / value).resolve()}"
    return override


def submitit_logs() -> tuple[str, ...]:
    """submitit's stdout and stderr of this job, when a submitit launcher runs it (locally or
    on SLURM): attached to its run, so its output is found beside its metrics."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return ()
    import submitit

    paths = submitit.JobEnvironment().paths
    return str(paths.stdout), str(paths.stderr)
