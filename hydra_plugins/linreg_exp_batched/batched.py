"""`hydra/launcher=batched` (conf/hydra/launcher/batched.yaml): a sweep's jobs trained as one
program, each config still its own MLflow run (linreg_exp/sweeps/batched.py does the work).

Hydra's basic sweeper composes every job once before the launch, only to check it; the batched
launcher composes and checks each job itself, once per choice of config groups. So `hydra/
sweeper=basic` is, in linreg_exp's configs, this module's BasicSweeper: Hydra's own, but for
leaving that check to the batched launcher when it is the one launching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Hydra's internals: linreg_exp/sweeps/hydra_internals.py says why each is used. This one stays
# here: Hydra's plugin scan loads its core plugins' modules afresh, and a subclass must derive
# from the module object the scan gives (`super(BasicSweeper, self)` looks its name up there).
from hydra._internal.core_plugins import basic_sweeper
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class BatchedLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        # each choice of config groups, composed by Hydra once for the whole sweep: a sweeper
        # that launches batch after batch (Optuna) composes it once, not once a batch
        self.composed_bases: dict[tuple[str, ...], DictConfig] = {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.composed_bases = {}

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from linreg_exp.sweeps.batched import launch  # torch: only when such a sweep runs

        assert self.config is not None and self.hydra_context is not None
        writers = int(self.params.get("writers", 2))
        return launch(self.config, self.hydra_context, job_overrides, initial_job_idx, writers,
                      self.composed_bases)  # fmt: skip


class BasicSweeper(basic_sweeper.BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not isinstance(self.launcher, BatchedLauncher):  # which checks each job itself
            super().validate_batch_is_legal(batch)
