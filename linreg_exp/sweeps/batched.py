"""The batched launcher's work (hydra_plugins/linreg_exp_batched is where Hydra finds it): a
sweep's jobs composed, checked and trained as one program (engine.py), in the launching process.

Composing is Hydra's: each distinct choice of config groups (`loss=mse optimizer=adam`) is
composed once, by Hydra's config loader, as any launcher composes a job; each job's other
overrides (`optimizer.lr=0.01 seed=3`) are then applied to a copy of it, the way Hydra applies
overrides to a composed config, and the result is checked as a run checks its config. A job
whose overrides Hydra or the schema rejects is a failed job; the others go on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from linreg_exp.errors import LinregError
from linreg_exp.jobspec import Job
from linreg_exp.schema import LinregConfig, typed
from linreg_exp.sweeps import naming
from linreg_exp.sweeps.callback import LaunchCallback
from linreg_exp.sweeps.hydra_internals import get_overrides_dirname
from linreg_exp.sweeps.jobs import reproduce_command
from linreg_exp.sweeps.launch import LaunchInfo
from linreg_exp.sweeps.pruning import program_pruner

log = logging.getLogger(__name__)

# A writer beyond the launch's own pays for its process (importing MLflow: about 2 s of CPU) before
# it writes anything; it is worth that only for a batch whose runs keep one writer busy.
JOBS_PER_WRITER = 16


@dataclass(frozen=True)
class Composed:
    cfg: DictConfig  # the job's config, without Hydra's node
    checked: LinregConfig  # the same, checked and typed (schema.typed): what the job reads
    job: Job


def launch(
    config: DictConfig,
    hydra_context: HydraContext,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    writers: int = 2,
    bases: dict[tuple[str, ...], DictConfig] | None = None,
) -> list[JobReturn]:
    """Run the jobs; their JobReturns, for the sweeper (its objective, or the job's error).
    `writers`: processes that record the runs, in parallel, at most (one per JOBS_PER_WRITER
    jobs of the batch). `bases`: the configs Hydra composed for earlier batches of the sweep,
    by choice of config groups (see `compose`), kept by the launcher."""
    launch_ = LaunchCallback.launch_in(hydra_context)
    log.info("Launching %d jobs as one program (hydra/launcher=batched)", len(job_overrides))
    wanted = min(writers, -(-len(job_overrides) // JOBS_PER_WRITER))  # one per 16 jobs, at most
    trackers = launch_.writers(max(1, wanted))  # their processes start while jobs compose
    jobs = compose(config, hydra_context, job_overrides, initial_job_idx, launch_.info, bases)
    entries = [(item.checked, item.job) for item in jobs if isinstance(item, Composed)]
    if entries:
        # Jobs to run: their store opens while torch is imported. (A program may still refuse
        # every job, for a device it lacks, say: the parent is then left with no child, as when
        # every job of a sweep fails.) A batch whose every job was refused asks for no store.
        launch_.open_writers()
    from linreg_exp.engine import run_programs  # torch

    if entries:
        launch_.announce(wait=True)  # the parent's link, once its store (opening meanwhile) made it

    results = iter(run_programs(entries, trackers, program_pruner))
    returns = []
    for overrides, item in zip(job_overrides, jobs, strict=True):
        outcome: Any = next(results) if isinstance(item, Composed) else item
        ret = JobReturn(overrides=list(overrides), task_name=str(config.hydra.job.name),
                        working_dir=os.getcwd())  # fmt: skip
        if isinstance(outcome, BaseException):
            ret.status, ret.return_value = JobStatus.FAILED, outcome
        else:
            ret.status, ret.return_value = JobStatus.COMPLETED, outcome.objective
        returns.append(ret)
    return returns


def compose(
    config: DictConfig,
    hydra_context: HydraContext,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    info: LaunchInfo,
    bases: dict[tuple[str, ...], DictConfig] | None = None,
) -> list[Composed | Exception]:
    """Each job's config and description (or why it is rejected), composing once per choice of
    config groups (into `bases`, which a launcher keeps from one batch of its sweep to the next:
    Hydra's compose takes about 0.4 s, the rest of a job's a few ms)."""
    groups = set(config.hydra.runtime.choices) | config_groups(config, hydra_context)
    parser = OverridesParser.create()
    bases = {} if bases is None else bases
    composed: list[Composed | Exception] = []
    for offset, overrides in enumerate(job_overrides):
        number = initial_job_idx + offset
        try:
            parsed = parser.parse_overrides(list(overrides))
            choice = tuple(str(o.input_line) for o in parsed if _is_group(o, groups))
            if choice not in bases:
                bases[choice] = hydra_context.config_loader.load_sweep_config(config, list(choice))
            base = bases[choice]
            cfg = OmegaConf.masked_copy(base, [str(k) for k in base if k != "hydra"])
            for override in parsed:
                if not _is_group(override, groups):
                    _apply(cfg, override)
            checked = typed(cfg)  # validated first
        except (HydraException, OmegaConfBaseException, LinregError) as error:
            log.error("job %s rejected: %s", number, error)
            composed.append(error)
            continue
        composed.append(Composed(cfg, checked, _describe(base, checked, parsed, number, info)))
    return composed


def config_groups(config: DictConfig, hydra_context: HydraContext) -> set[str]:
    """The config groups every config dir of the launch holds: the loader's, and those that
    `hydra.searchpath` added when the config was composed (`hydra.runtime.config_sources`)."""
    groups = {name for source in hydra_context.config_loader.get_sources()
              for name in source.list("", ObjectType.GROUP)}  # fmt: skip
    for source in config.hydra.runtime.config_sources:
        if source.schema == "file" and Path(str(source.path)).is_dir():
            groups |= {p.name for p in Path(str(source.path)).iterdir() if p.is_dir()}
    return groups


def _is_group(override: Override, groups: set[str]) -> bool:
    """`loss=mse`, `+experiment=fast`, `hydra/launcher=...`: a choice of config group (`groups`:
    the config's own, and those its config dirs hold, a user's `--config-dir` too)."""
    key = override.key_or_group
    return key in groups or "/" in key


def _apply(cfg: DictConfig, override: Override) -> None:
    """A value override on a composed config, with Hydra's rules: `key=v` changes a key that
    exists (its type checked by the schema), `+key=v` adds one, `++key=v` either, `~key` drops."""
    key = override.key_or_group
    parent_key, _, leaf = key.rpartition(".")
    parent_node = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    # keys(), not `in`: a mandatory value not yet given (data.path: ???) is a key that exists
    exists = isinstance(parent_node, DictConfig) and leaf in parent_node.keys()  # noqa: SIM118
    if override.is_delete():
        parent, _, leaf = key.rpartition(".")
        with open_dict(cfg):
            del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
    elif override.is_add() and exists:
        raise ConfigKeyError(f"Could not append to config. An item is already at '{key}'")
    elif override.is_add() or override.is_force_add():
        OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)
    elif not exists:
        raise ConfigKeyError(f"Key '{key}' is not in the config: add it with +{key}=...")
    else:
        OmegaConf.update(cfg, key, override.value(), merge=True)


def _describe(
    base: DictConfig, cfg: LinregConfig, parsed: list[Override], number: int, info: LaunchInfo
) -> Job:
    """The job's description, as sweeps/jobs.py gives one to a job Hydra runs; its Hydra
    node says what Hydra's compose would (a sweep subdir may name the job's overrides)."""
    hydra = base.hydra
    overrides = [str(o.input_line) for o in parsed]
    task = [o for o in parsed if not o.is_hydra_override()]
    named = hydra.job.config.override_dirname
    with read_write(hydra), open_dict(hydra):
        hydra.job.num = hydra.job.id = number  # what the sweep subdir names: ${hydra.job.num}
        hydra.overrides.task = [str(o.input_line) for o in task]
        hydra.job.override_dirname = get_overrides_dirname(
            task, list(named.exclude_keys), named.item_sep, named.kv_sep
        )
        subdir = str(OmegaConf.select(base, "hydra.sweep.subdir"))
    return Job(
        output_dir=(Path(str(hydra.sweep.dir)) / subdir).resolve(),
        tracking_uri=info.tracking_uri,
        number=number,
        overrides=tuple(overrides),
        run_name=cfg.mlflow.run_name or naming.job_name(overrides, info.swept),
        command=reproduce_command(hydra, overrides),
        data_option=str(hydra.runtime.choices.get("data", "data")),
        launch_dir=Path(str(hydra.runtime.cwd)),
    )
