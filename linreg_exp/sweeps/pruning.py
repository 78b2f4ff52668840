"""The sweep's pruners (`sweep.pruner=none|median|asha|hyperband`), built by the launch for the
run lifecycle, which applies their decisions (jobspec.Pruner: rows scored every
`sweep.report_every` epochs in, the rows to stop out).

Where the decisions are made depends on how the jobs run:

- The batched launcher trains a program's rows together, in step: its pruners decide over those
  rows at once, in memory (`program_pruner`). `asha` is synchronous successive halving: at each
  rung (after report_every * eta^k epochs, eta = sweep.reduction_factor) the best 1 in eta of the
  rows still training go on. `median` stops, at each report, the rows worse than the median of
  those still training. `hyperband` deals the rows out over brackets (row i to bracket i mod B),
  bracket b halving as asha does from report_every * eta^b epochs on, so that some rows are
  judged late: B = 1 + floor(log_eta(epochs / report_every)).
- Every other launcher runs jobs one after another, or in parallel processes (joblib, SLURM): a
  job shares its scores with the sweep's others through an Optuna study (`StudyPruner`): each
  job is a trial, reports `trial.report(value, epochs)` and asks `trial.should_prune()` of
  Optuna's MedianPruner, SuccessiveHalvingPruner (asynchronous, ASHA) or HyperbandPruner. The
  basic sweeper's study is `pruning` in `<sweep dir>/optuna.db` (made by the launch, before any
  job); an Optuna search's jobs report to the very trials its sweeper asked for (found by the
  user attributes the sweeper marks them with: its sweep key and the job's number), in its
  storage.

Nothing here is imported by the engines: they see only jobspec.Pruner.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from linreg_exp.errors import ConfigError
from linreg_exp.jobspec import Job, Pruner
from linreg_exp.schema import LinregConfig

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "optuna.db"  # in the sweep dir, as an Optuna search's study
STUDY_NAME = "pruning"  # the basic sweeper's study of the jobs' scores
SWEEP_KEY = "linreg.sweep_key"  # an Optuna trial's user attributes (as the Optuna sweeper's)
JOB_NUM = "linreg.job_num"
OPTUNA_SWEEPER = "linreg_exp_optuna"  # in hydra.sweeper._target_
BATCHED_LAUNCHER = "linreg_exp_batched"  # in hydra.launcher._target_
SQLITE_TIMEOUT_S = 60  # parallel jobs (joblib) write the study's SQLite file in turn


def _sign(direction: str) -> float:
    return 1.0 if direction == "minimize" else -1.0


def _ranked(rows: Sequence[int], values: Sequence[float], direction: str) -> list[int]:
    """The rows best first (ties: the lower row first, so decisions are reproducible)."""
    sign = _sign(direction)
    order = sorted(range(len(rows)), key=lambda k: (sign * values[k], rows[k]))
    return [rows[k] for k in order]


def rung(step: int, first: int, eta: int) -> bool:
    """Whether `step` epochs is a rung: first * eta^k, k >= 0."""
    if step < first or step % first:
        return False
    ratio = step // first
    while ratio % eta == 0:
        ratio //= eta
    return ratio == 1


class Halving:
    """Synchronous successive halving over a program's rows (`asha` in a batched program): at
    each rung the best floor(n / eta) of the n rows reaching it go on (one at least)."""

    def __init__(self, first: int, eta: int, direction: str) -> None:
        self.first, self.eta, self.direction = first, eta, direction

    def decide(self, step: int, rows: list[int], values: list[float]) -> list[int]:
        if not rows or not rung(step, self.first, self.eta):
            return []
        keep = max(1, len(rows) // self.eta)
        return _ranked(rows, values, self.direction)[keep:]

    def end(self, row: int, value: float | None) -> None:
        """Nothing to remember: each rung ranks the rows that reach it."""


class Median:
    """At each report, the rows worse than the median of the rows still training stop."""

    def __init__(self, direction: str) -> None:
        self.direction = direction

    def decide(self, step: int, rows: list[int], values: list[float]) -> list[int]:
        if len(rows) < 2:
            return []
        sign = _sign(self.direction)
        middle = statistics.median(sign * v for v in values)
        return [row for row, v in zip(rows, values, strict=True) if sign * v > middle]

    def end(self, row: int, value: float | None) -> None:
        """Nothing to remember: each report compares the rows still training."""


class Hyperband:
    """Brackets of successive halving: row i is in bracket i mod B, whose first rung is at
    first * eta^b epochs (bracket 0 is asha's; the last one judges its rows latest)."""

    def __init__(self, first: int, eta: int, epochs: int, direction: str) -> None:
        self.brackets = 1 + max(0, int(math.log(max(epochs, first) / first, eta) + 1e-9))
        self.halvings = [Halving(first * eta**b, eta, direction) for b in range(self.brackets)]

    def decide(self, step: int, rows: list[int], values: list[float]) -> list[int]:
        pruned: list[int] = []
        for bracket, halving in enumerate(self.halvings):
            mine = [k for k, row in enumerate(rows) if row % self.brackets == bracket]
            pruned += halving.decide(step, [rows[k] for k in mine], [values[k] for k in mine])
        return pruned

    def end(self, row: int, value: float | None) -> None:
        """Nothing to remember."""


def program_pruner(entries: Sequence[tuple[LinregConfig, Job]]) -> Pruner | None:
    """A batched program's pruner, over its rows (the sweep's settings: its first job's)."""
    sweep = entries[0][0].sweep
    kind, first, eta = str(sweep.pruner), int(sweep.report_every), int(sweep.reduction_factor)
    direction = str(sweep.direction)
    if kind == "median":
        return Median(direction)
    if kind == "asha":
        return Halving(first, eta, direction)
    if kind == "hyperband":
        epochs = max(int(cfg.trainer.epochs) for cfg, _ in entries)
        return Hyperband(first, eta, epochs, direction)
    return None


# ------------------------------------------------------------ jobs that share an Optuna study


def optuna_pruner(sweep: DictConfig, epochs: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner for `sweep.pruner` (steps are epochs trained): MedianPruner with its
    defaults (5 trials complete before any is pruned), SuccessiveHalvingPruner (asynchronous:
    a trial reaching a rung goes on if it is in the best 1 in eta of the trials there so far) and
    HyperbandPruner, both from sweep.report_every epochs with sweep.reduction_factor."""
    import optuna

    kind, first, eta = str(sweep.pruner), int(sweep.report_every), int(sweep.reduction_factor)
    if kind == "median":
        return optuna.pruners.MedianPruner()
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=eta)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max(epochs, first),
                                              reduction_factor=eta)  # fmt: skip
    return optuna.pruners.NopPruner()


def study_storage(setting: str | None, sweep_dir: Path) -> str:
    """Where an Optuna search's study lives (`hydra.sweeper.storage`): by default the SQLite
    file optuna.db in the sweep dir; a database URL (`scheme://...`) as given; any other value
    is the path of an Optuna journal file (JournalFileBackend), relative to the sweep dir."""
    if not setting:  # null, or an empty value
        return f"sqlite:///{sweep_dir / STUDY_FILE}"
    if "://" in setting:
        return setting
    return str(sweep_dir / Path(setting).expanduser())


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """The study's storage (`spec` as study_storage gives it). In a database, through SQLAlchemy
    (an SQLite file is waited for while another job writes it); in a journal file, appended to
    under a file lock, which works on a filesystem that SLURM nodes share and costs about a
    tenth of SQLite's time a trial (docs/performance.md, §11)."""
    import optuna

    if "://" not in spec:
        from optuna.storages.journal import JournalFileBackend

        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(spec))
    engine: dict[str, Any] = {}
    if spec.startswith("sqlite"):
        engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    return optuna.storages.RDBStorage(spec, engine_kwargs=engine)


class StudyPruner:
    """One job's pruning through an Optuna study shared with its sweep's other jobs. The study
    and the trial are opened at the job's first report (a job rejected before it trains leaves
    no trial). `own`: the job asks for its trial, and tells its end (the basic sweeper's jobs);
    else the trial is its sweeper's, which tells it (an Optuna search), and the job only reports
    and, when pruned, marks it PRUNED."""

    def __init__(
        self,
        storage: str,
        study_name: str,
        make_pruner: Any,  # () -> optuna.pruners.BasePruner: made in the job's process
        direction: str,
        sweep_key: str,
        job_num: int,
        own: bool,
    ) -> None:
        self.storage, self.study_name, self.make_pruner = storage, study_name, make_pruner
        self.direction, self.sweep_key, self.job_num, self.own = direction, sweep_key, job_num, own
        self._study: optuna.Study | None = None
        self._trial: optuna.Trial | None = None

    def _opened(self) -> tuple[optuna.Study, optuna.Trial]:
        if self._study is not None and self._trial is not None:
            return self._study, self._trial
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=open_storage(self.storage), pruner=self.make_pruner(),
                                    study_name=self.study_name, load_if_exists=True,
                                    direction=self.direction)  # type: ignore[arg-type]  # fmt: skip
        if self.own:
            trial = study.ask()
            trial.set_user_attr(SWEEP_KEY, self.sweep_key)
            trial.set_user_attr(JOB_NUM, self.job_num)
        else:
            states = (optuna.trial.TrialState.RUNNING,)
            mine = [t for t in study.get_trials(deepcopy=False, states=states)
                    if t.user_attrs.get(SWEEP_KEY) == self.sweep_key
                    and t.user_attrs.get(JOB_NUM) == self.job_num]  # fmt: skip
            if not mine:
                raise RuntimeError(f"no running trial of job {self.job_num} in study "
                                   f"{self.study_name}")  # fmt: skip
            trial = optuna.Trial(study, mine[-1]._trial_id)
        self._study, self._trial = study, trial
        return study, trial

    def decide(self, step: int, rows: list[int], values: list[float]) -> list[int]:
        import optuna

        study, trial = self._opened()
        trial.report(values[0], step)
        if not trial.should_prune():
            return []
        study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        return list(rows)

    def end(self, row: int, value: float | None) -> None:
        import optuna

        if not self.own:
            return  # its sweeper tells it
        study, trial = self._opened()
        if value is None or math.isnan(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(trial, value, skip_if_finished=True)


def job_pruner(config: DictConfig, sweep_key: str, number: int) -> Pruner | None:
    """A job's pruner (`config`: its composed config with its `hydra` node), for a job that
    the basic or Optuna sweeper launches through any launcher but the batched one (whose
    programs have their own: `program_pruner`). None without a pruner."""
    hydra, sweep = config.hydra, config.sweep
    optuna_search = OPTUNA_SWEEPER in str(hydra.sweeper.get("_target_", ""))
    own_node = hydra.sweeper.get("pruner") if optuna_search else None
    if sweep.pruner == "none" and own_node is None:
        return None
    if BATCHED_LAUNCHER in str(hydra.launcher.get("_target_", "")):
        return None
    epochs = int(config.trainer.epochs)

    def make() -> optuna.pruners.BasePruner:
        if own_node is not None:
            from hydra.utils import instantiate

            return instantiate(own_node)  # type: ignore[no-any-return]
        return optuna_pruner(sweep, epochs)

    sweep_dir = Path(str(hydra.sweep.dir)).resolve()
    if optuna_search:
        storage = study_storage(hydra.sweeper.get("storage"), sweep_dir)
        name = hydra.sweeper.get("study_name") or str(config.mlflow.experiment_name)
        return StudyPruner(str(storage), str(name), make, str(sweep.direction), sweep_key,
                           number, own=False)  # fmt: skip
    return StudyPruner(f"sqlite:///{sweep_dir / STUDY_FILE}", STUDY_NAME, make,
                       str(sweep.direction), sweep_key, number, own=True)  # fmt: skip


def prepare_study(config: DictConfig, sweep_dir: Path) -> None:
    """Before any job of a basic sweep with a pruner: its study made once, here, so that jobs
    in parallel processes only open it (two making an SQLite schema at once may fail)."""
    sweeper, launcher = config.hydra.sweeper, config.hydra.launcher
    if config.sweep.pruner == "none" or OPTUNA_SWEEPER in str(sweeper.get("_target_", "")):
        return
    if BATCHED_LAUNCHER in str(launcher.get("_target_", "")):
        return
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"sweep.pruner={config.sweep.pruner} needs optuna (the launchers but "
                          "the batched one share scores through a study): pip install "
                          "'linreg_exp[sweep]'") from None  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=open_storage(f"sqlite:///{sweep_dir / STUDY_FILE}"),
                        study_name=STUDY_NAME, load_if_exists=True,
                        direction=str(config.sweep.direction))  # type: ignore[arg-type]  # fmt: skip
