"""The parts of Hydra's internals linreg_exp uses, in one place, each with why: Hydra 1.3 has no
public API for them. A Hydra upgrade is checked here first (tests/test_sweeps.py and
tests/test_batched.py exercise each)."""

from __future__ import annotations

# The batched launcher names each job's subdir and `hydra.job.override_dirname` exactly as
# Hydra's own launchers do, from the job's overrides.
from hydra._internal.config_loader_impl import get_overrides_dirname

# (hydra_plugins/linreg_exp_batched/batched.py subclasses Hydra's basic sweeper, and imports
# it there itself: see its comment.)

# The launcher Hydra's default config names (jobs in this process): its class path, to tell it
# from the launchers that run jobs elsewhere.
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"

__all__ = ["BASIC_LAUNCHER", "get_overrides_dirname"]
