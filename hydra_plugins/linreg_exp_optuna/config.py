"""The configs of `hydra/sweeper=optuna` and its samplers (`hydra/sweeper/sampler=tpe|random|grid|
cmaes`), typed, so that a misspelt key or a value of the wrong type is refused when the config is
composed, before anything runs.

They are registered only where Optuna is installed (the `sweep` extra): elsewhere Hydra says
`hydra/sweeper=optuna is not an option`, and the app adds which extra brings it. Looking Optuna up
costs nothing; importing it would cost every run, single ones included, the time Hydra takes to
scan its plugins. (No `from __future__ import annotations`: Hydra's scan runs this module before
it is in sys.modules, where dataclasses would look its annotations up.)
"""

from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import Any

from hydra.core.config_store import ConfigStore

SWEEPER = "hydra_plugins.linreg_exp_optuna.optuna_sweeper.OptunaSweeper"
PROVIDER = "linreg_exp"


@dataclass
class TPESamplerConf:
    """Optuna's default: tree-structured Parzen estimators, seeded from the sweeper's seed."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Any = "${..seed}"
    n_startup_trials: int = 10  # random trials before the model guides the search
    constant_liar: bool = True  # trials running together (n_jobs > 1) steer each other away


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Any = "${..seed}"


@dataclass
class GridSamplerConf:
    """Every point of the search space (choice and range only), in a seeded order; the search
    space is the sweeper's, handed over when the sampler is made."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: Any = "${..seed}"


@dataclass
class CmaEsSamplerConf:
    """CMA-ES, for numeric spaces (needs the `cmaes` package, in the `sweep` extra)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Any = "${..seed}"
    n_startup_trials: int = 1
    sigma0: float | None = None
    restart_strategy: str | None = None  # "ipop" or "bipop"


@dataclass
class OptunaSweeperConf:
    _target_: str = SWEEPER
    _recursive_: bool = False  # the sampler is made when the search space is known
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}])
    sampler: Any = None  # from hydra/sweeper/sampler
    # A pruner's config (`_target_: optuna.pruners.MedianPruner`, ...); null: none. The study is
    # created with it; trials report their intermediate values through the storage.
    pruner: Any = None
    direction: str = "${sweep.direction}"  # one objective (sweep.objective): minimize, maximize
    study_name: str | None = "${mlflow.experiment_name}"
    # null: sqlite:///<sweep dir>/optuna.db; a database URL; or a journal file's path (relative to
    # the sweep dir), Optuna's JournalFileBackend: quicker a trial, and fit for a shared filesystem
    storage: str | None = None
    seed: int | None = 0  # the sampler's seed
    n_trials: int = 20  # in total: a search rerun into its sweep dir runs only the rest
    n_jobs: int = 1  # trials asked for and launched together (one launcher batch)
    max_failure_rate: float = 0.0  # failed jobs of a batch above this share stop the search
    params: dict[str, Any] | None = None  # the search space: key -> interval(...), choice(...), ...


def register(store: ConfigStore) -> None:
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=PROVIDER)
    samplers = {"tpe": TPESamplerConf, "random": RandomSamplerConf, "grid": GridSamplerConf,
                "cmaes": CmaEsSamplerConf}  # fmt: skip
    for name, node in samplers.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider=PROVIDER)


if find_spec("optuna") is not None:
    register(ConfigStore.instance())
