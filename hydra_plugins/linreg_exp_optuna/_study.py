"""The Optuna search (optuna_sweeper.py is the plugin Hydra sees): the search space read from
Hydra's syntax, the study opened from its storage and resumed, and the ask / launch / tell loop.

Everything a user can get wrong (a search space, a sampler, a storage) is checked before the first
job, and reported as one ConfigError naming the key: no job, and so no MLflow parent run, starts.

A study is shared by every sweep that names its storage and study name; the trials of this sweep
are those whose user attribute `linreg.sweep_key` is its sweep dir's key (as on its MLflow parent
run). Those count towards `n_trials`; the others still guide the sampler.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal, cast

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, Trial, TrialState

from linreg_exp.errors import ConfigError
from linreg_exp.sweeps import pruning
from linreg_exp.sweeps.launch import sweep_key
from linreg_exp.sweeps.pruning import optuna_pruner
from linreg_exp.tracking.uris import mask_uri

log = logging.getLogger(__name__)

SWEEP_KEY = "linreg.sweep_key"  # a trial's user attribute: the sweep dir that ran it
JOB_NUM = "linreg.job_num"  # a trial's user attribute: its job number (and sweep subdir)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards n_trials
PARAMS = "hydra.sweeper.params"
# A trial is marked as a sweep's the moment after it is asked for: one still unmarked this long
# after is an orphan, whichever sweep asked for it.
ORPHAN_AFTER = timedelta(seconds=10)

Space = dict[str, BaseDistribution]


@dataclass(frozen=True)
class SearchSpace:
    """What each trial samples (`space`), and the overrides every job gets as they are
    (`fixed`: the command line's other overrides and the fixed values of `params`)."""

    space: Space
    fixed: dict[str, str]

    @classmethod
    def parse(cls, params: Mapping[str, Any], arguments: Sequence[str]) -> SearchSpace:
        """`params` (hydra.sweeper.params) first, then the command line's overrides: a key
        given again later wins, so `optimizer.lr=0.01` on the command line fixes a searched key."""
        parser = OverridesParser.create()
        given = [(f"{key}={value}", f"{PARAMS}.{key}") for key, value in params.items()]
        space: Space = {}
        fixed: dict[str, str] = {}
        for line, where in [*given, *((arg, arg) for arg in arguments)]:
            try:
                (override,) = parser.parse_overrides([line])
            except HydraException as error:  # its 2nd line says what is wrong
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                reason = lines[1] if len(lines) > 1 else lines[0]
                raise ConfigError(f"{where}: not a search space ({reason})") from None
            key = override.get_key_element()
            space.pop(key, None)
            fixed.pop(key, None)
            if override.is_sweep_override():
                space[key] = distribution(override, where)
            else:
                fixed[key] = str(override.input_line)
        return cls(space, fixed)

    def check_keys(self, config: DictConfig, params: Mapping[str, Any]) -> None:
        """Every searched key is one the experiment has (or a config group): a misspelt key
        would otherwise fail every trial."""
        groups = set(config.hydra.runtime.choices)
        for key in self.space:
            if key.startswith(("+", "~")) or key in groups or "/" in key or "@" in key:
                continue  # adds a key, or chooses a config: Hydra checks it per job
            if OmegaConf.select(config, key, default=_ABSENT) is not _ABSENT:
                continue
            parent = key.rpartition(".")[0]
            node = OmegaConf.select(config, parent) if parent else config
            allowed = ", ".join(str(k) for k in node if not str(k).startswith(("_", "hydra"))
                                ) if isinstance(node, DictConfig) else "see --help"  # fmt: skip
            where = f"{PARAMS}.{key}: " if key in params else ""
            raise ConfigError(f"{where}{key} is not a config key; allowed keys in "
                              f"{parent or 'the top level'}: {allowed}")  # fmt: skip

    def grid(self) -> dict[str, list[Any]]:
        """Every value of each key, for the grid sampler (choice and range only)."""
        grid = {}
        for key, dist in self.space.items():
            if isinstance(dist, CategoricalDistribution):
                grid[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[key] = list(range(dist.low, dist.high + 1, dist.step))
            elif isinstance(dist, FloatDistribution) and dist.step is not None:
                count = round((dist.high - dist.low) / dist.step) + 1
                grid[key] = [dist.low + i * dist.step for i in range(count)]
            else:
                raise ConfigError(f"{PARAMS}.{key}: the grid sampler takes choice(...) or "
                                  "range(...), not interval(...)")  # fmt: skip
        return grid

    def overrides(self, trial: Trial) -> tuple[str, ...]:
        return (*(f"{k}={v}" for k, v in trial.params.items()), *self.fixed.values())


_ABSENT = object()


def distribution(override: Override, where: str) -> BaseDistribution:
    """Hydra's sweep syntax as an Optuna distribution: `choice(a, b)` and `shuffle(range(..))`
    categorical, `range(start, stop, step)` stepped (stop excluded, as Hydra's range), and
    `interval(low, high)` continuous (integer where both ends are, `tag(log, ...)` log-scaled)."""
    value = override.value()
    try:
        if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
            given = list(override.sweep_iterator(transformer=Transformer.encode))
            choices = [c for c in given if c is None or isinstance(c, bool | int | float | str)]
            if len(choices) != len(given):
                raise ValueError("a choice is a number, a string, a boolean or null")
            return CategoricalDistribution(choices)
        if isinstance(value, RangeSweep):
            values = [v for v in override.sweep_iterator() if isinstance(v, int | float)]
            if not values:
                raise ValueError("the range is empty")
            low, high, step = min(values), max(values), abs(value.step or 1)
            if all(isinstance(v, int) for v in (low, high, step)):
                return IntDistribution(int(low), int(high), step=int(step))
            return FloatDistribution(float(low), float(high), step=float(step))
        if isinstance(value, IntervalSweep) and value.start is not None and value.end is not None:
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log_scale)
            return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    except ValueError as error:  # low above high, a log scale reaching 0, ...
        raise ConfigError(f"{where}: {error}") from None
    raise ConfigError(f"{where}: not a search space (use interval, range, choice or a value)")


def make_sampler(
    node: DictConfig, space: SearchSpace, trials_before: int = 0
) -> optuna.samplers.BaseSampler:
    """The sampler its config names (hydra/sweeper/sampler), the grid one given the grid. Its
    seed moves on by the study's earlier trials: a resumed search, seeded as it was, would
    propose its first trials again."""
    target = str(node.get("_target_", ""))
    if target.endswith("CmaEsSampler") and find_spec("cmaes") is None:
        raise ConfigError("hydra/sweeper/sampler=cmaes needs the cmaes package: "
                          "pip install 'linreg_exp[sweep]'")  # fmt: skip
    extra: dict[str, Any] = {"search_space": space.grid()} if target.endswith("GridSampler") else {}
    seed = node.get("seed")
    if trials_before and isinstance(seed, int):
        extra["seed"] = seed + trials_before
    try:
        sampler = instantiate(node, _partial_=True)(**extra)
    except Exception as error:
        reason = str(error.__cause__ or error).splitlines()[0]
        raise ConfigError(f"hydra.sweeper.sampler._target_={target}: {reason}") from None
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        raise ConfigError(f"hydra.sweeper.sampler._target_={target}: not an Optuna sampler")
    return sampler


def make_pruner(node: DictConfig | None, config: DictConfig) -> optuna.pruners.BasePruner:
    """The pruner its config names; where it is null, sweep.pruner's (none: Optuna's
    NopPruner). The jobs make the same one, in their processes (sweeps/pruning.py): they report
    to their trials and ask it whether to stop."""
    if node is None:
        return optuna_pruner(config.sweep, int(config.trainer.epochs))
    try:
        pruner = instantiate(node)
    except Exception as error:
        reason = str(error.__cause__ or error).splitlines()[0]
        raise ConfigError(f"hydra.sweeper.pruner: {reason}") from None
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ConfigError(f"hydra.sweeper.pruner: {node.get('_target_')} is not an Optuna pruner")
    return pruner


def open_storage(url: str) -> optuna.storages.BaseStorage:
    try:
        return pruning.open_storage(url)
    except Exception as error:
        cause = error.__cause__ or error.__context__  # Optuna's ImportError hides the module
        text = f"{error} ({cause})" if isinstance(error, ImportError) and cause else str(error)
        reason = " ".join(text.split()) or repr(error)
        raise ConfigError(f"hydra.sweeper.storage={mask_uri(url)}: cannot open the study's "
                          f"storage: {reason[:300]}") from None  # fmt: skip


@dataclass
class Search:
    study: optuna.Study
    space: SearchSpace
    key: str  # this sweep's key (its sweep dir's)
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    objective: str
    grid_size: int | None = None  # the grid sampler's points
    next_job: int = 0  # after every job number this sweep has used
    rerun: list[int] = field(default_factory=list)  # earlier jobs that did not finish
    done: int = 0  # trials of this sweep COMPLETE or PRUNED

    @classmethod
    def start(cls, config: DictConfig, arguments: Sequence[str]) -> Search:
        """Everything checked, then the study opened (created, or loaded to go on)."""
        settings = config.hydra.sweeper
        if settings.n_trials < 1 or settings.n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be >= 1")
        if not 0.0 <= settings.max_failure_rate <= 1.0:
            raise ConfigError("hydra.sweeper.max_failure_rate must be between 0 and 1")
        given = OmegaConf.to_container(settings.params or {}, resolve=True)
        assert isinstance(given, dict)
        params = {str(key): value for key, value in given.items()}
        space = SearchSpace.parse(params, arguments)
        if not space.space:
            raise ConfigError(f"{PARAMS}: nothing to search: give a key an interval(...), "
                              "range(...) or choice(...)")  # fmt: skip
        space.check_keys(config, params)
        sampler = make_sampler(settings.sampler, space)
        pruner = make_pruner(settings.pruner, config)
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        url = pruning.study_storage(settings.storage, sweep_dir)
        if not settings.storage:  # the default study file, in the sweep dir
            sweep_dir.mkdir(parents=True, exist_ok=True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its set-up lines are ours to say
        storage = open_storage(url)
        name = settings.study_name or str(config.mlflow.experiment_name)
        direction = str(settings.direction)
        if direction not in ("minimize", "maximize"):  # one objective: no list of them
            raise ConfigError(f"hydra.sweeper.direction={direction}: minimize or maximize")
        try:
            study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                        study_name=name, load_if_exists=True,
                                        direction=cast(Literal["minimize", "maximize"],
                                                       direction))  # fmt: skip
        except Exception as error:  # a database it cannot use (read-only, another schema)
            reason = " ".join(str(error).split())[:300]
            raise ConfigError(f"hydra.sweeper.storage={mask_uri(url)}: {reason}") from None
        trials_before = len(study.get_trials(deepcopy=False))
        if trials_before:
            study.sampler = sampler = make_sampler(settings.sampler, space, trials_before)
        if [d.name.lower() for d in study.directions] != [direction]:
            had = " ".join(d.name.lower() for d in study.directions)
            raise ConfigError(f"hydra.sweeper.study_name={name}: the study in {mask_uri(url)} is"
                              f" to {had}, not {direction}: choose another study_name")  # fmt: skip
        objective = str(OmegaConf.select(config, "sweep.objective", default="objective"))
        with warnings.catch_warnings():  # experimental in some Optuna releases: harmless
            warnings.simplefilter("ignore")
            study.set_metric_names([objective])
        grid = space.grid() if isinstance(sampler, optuna.samplers.GridSampler) else None
        search = cls(study, space, sweep_key(sweep_dir), int(settings.n_trials),
                     int(settings.n_jobs), float(settings.max_failure_rate), objective,
                     math.prod(map(len, grid.values())) if grid is not None else None)  # fmt: skip
        search.resume()
        to_run = max(0, min(search.n_trials, search.grid_size or search.n_trials) - search.done)
        log.info("Optuna study %s in %s: %d of %d trials done, %d to run (%s, %s %s%s)", name,
                 mask_uri(url), search.done, search.n_trials, to_run, type(sampler).__name__,
                 direction, objective, "" if isinstance(pruner, optuna.pruners.NopPruner)
                 else f", {type(pruner).__name__}")  # fmt: skip
        return search

    def resume(self) -> None:
        """Take stock of this sweep's earlier trials: those RUNNING when its search stopped
        (killed outright) never will finish, so they are marked FAIL (their MLflow runs were
        ended KILLED by the tracking helper, or are when this launch's parent run closes); the
        done ones count. A trial still without a sweep key long after it was asked for is an
        orphan too: its search died between asking for it and marking it."""
        trials = self.study.get_trials(deepcopy=False)
        mine = [t for t in trials if t.user_attrs.get(SWEEP_KEY) == self.key]
        asked_before = datetime.now() - ORPHAN_AFTER
        orphans = [t for t in trials if SWEEP_KEY not in t.user_attrs and t.datetime_start
                   and t.datetime_start < asked_before]  # fmt: skip
        for trial in [*mine, *orphans]:
            if trial.state in (TrialState.RUNNING, TrialState.WAITING):
                self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                log.warning("trial %d (job %s) was running when the search stopped: marked "
                            "failed", trial.number, trial.user_attrs.get(JOB_NUM))  # fmt: skip
        self.done = sum(t.state in DONE for t in mine)
        numbers = {int(t.user_attrs.get(JOB_NUM, -1)) for t in mine} - {-1}
        finished = {int(t.user_attrs.get(JOB_NUM, -1)) for t in mine if t.state in DONE}
        self.rerun = sorted(numbers - finished)
        self.next_job = max(numbers, default=-1) + 1

    def _job_numbers(self, count: int) -> list[int]:
        """The next batch's job numbers: first those of earlier jobs that did not finish, as a
        resumed grid reruns them (its new run is then that job's latest attempt, and the sweep's
        summary counts it instead of the killed one); contiguous, as a launcher numbers a batch
        from its first job."""
        if not self.rerun:
            self.next_job += count
            return list(range(self.next_job - count, self.next_job))
        numbers = [self.rerun.pop(0)]
        while len(numbers) < count and self.rerun and self.rerun[0] == numbers[-1] + 1:
            numbers.append(self.rerun.pop(0))
        return numbers

    def run(self, launcher: Launcher) -> None:
        """Ask for a batch of trials (`n_jobs`), launch them as one batch of jobs, tell each
        its job's objective; until n_trials are done, or a batch fails more than allowed."""
        to_run = min(self.n_trials, self.grid_size or self.n_trials) - self.done
        while to_run > 0:
            numbers = self._job_numbers(min(self.n_jobs, to_run))
            trials = [self._ask(number) for number in numbers]
            overrides = [self.space.overrides(trial) for trial in trials]
            try:
                returns = launcher.launch(overrides, initial_job_idx=numbers[0])
            except BaseException:  # stopped (Ctrl-C, a store no job can use): not left RUNNING
                for trial in trials:
                    self._fail_quietly(trial)
                raise
            to_run -= len(trials)
            failed = [ret for trial, ret in zip(trials, returns, strict=True)
                      if self.tell(trial, ret) is TrialState.FAIL]  # fmt: skip
            if failed and len(failed) / len(returns) > self.max_failure_rate:
                _ = failed[0].return_value  # raises the job's error, as Hydra's sweepers do
                raise RuntimeError(f"{len(failed)} of {len(returns)} trials failed")
        self._say_best()

    def _ask(self, number: int) -> Trial:
        """A new trial, marked as this sweep's job `number` at once (see `resume`)."""
        trial = self.study.ask(self.space.space)
        trial.set_user_attr(SWEEP_KEY, self.key)
        trial.set_user_attr(JOB_NUM, number)
        return trial

    def tell(self, trial: Trial, ret: JobReturn) -> TrialState:
        """A completed job's objective (inf for a diverged one: the worst there is, so the
        study goes on); a failed job, or a value that is no number, fails the trial. A job
        its pruner stopped has marked its trial PRUNED itself, which stays."""
        value: float | None = None
        if ret.status is JobStatus.COMPLETED:
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                log.error("trial %d: its job returned %r, not a number", trial.number,
                          ret.return_value)  # fmt: skip
        failed = value is None or math.isnan(value)
        try:
            told = self.study.tell(trial, None if failed else value,
                                   state=TrialState.FAIL if failed else None,
                                   skip_if_finished=True)  # fmt: skip
            if told.state is TrialState.PRUNED:
                self.done += 1
                return TrialState.PRUNED
        except RuntimeError:
            # The grid sampler stops the study once its grid is done, a call Optuna allows
            # only inside study.optimize; the trial is stored all the same.
            if self.grid_size is None:
                raise
        if failed:
            return TrialState.FAIL
        self.done += 1
        return TrialState.COMPLETE

    def _fail_quietly(self, trial: Trial) -> None:
        try:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        except Exception as error:  # the process is stopping: the next launch marks it
            log.warning("could not mark trial %d failed: %s", trial.number, error)

    def _say_best(self) -> None:
        best: FrozenTrial | None
        try:
            best = self.study.best_trial
        except ValueError:  # no trial completed
            best = None
        if best is not None:
            params = " ".join(f"{k}={v}" for k, v in best.params.items())
            log.info("Optuna best %s %.6g: trial %d (job %s) %s", self.objective, best.value,
                     best.number, best.user_attrs.get(JOB_NUM), params)  # fmt: skip
