"""`hydra/sweeper=optuna`: a search with Optuna >= 5 whose study survives the process.

Hydra hands the sweeper the sweep's config and a launcher; each batch of trials (`n_jobs`) is
asked of the study, launched as one batch of jobs, and told back, each job's return value being
its `sweep.objective`. The study lives in a database (an SQLite file in the sweep dir unless
`storage` names another), so a search stopped half-way and rerun into its sweep dir goes on where
it stopped. The work is in _study.py, with Optuna: this module imports neither, so that Hydra's
scan of its plugins stays quick.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        # The settings are read from the sweep's config when the search starts (`hydra.sweeper`,
        # the sampler and pruner made then): its config node says `_recursive_: false`.
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.linreg_exp_optuna._study import Search  # optuna: only now

        assert self.config is not None and self.launcher is not None
        Search.start(self.config, arguments).run(self.launcher)
