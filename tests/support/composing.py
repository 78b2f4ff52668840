"""Hydra's own composition, in-process, for unit tests of what the app builds from it.

`hydra_config` composes the project's config as `python -m linreg_exp` would, `hydra` node
included (config sources, overrides, choices, the launch dir), for a single run or a multirun
(whose sweep overrides the compose API refuses), from the project's conf dir or another
(`--config-path`), with a user's extra config dir (`--config-dir`) and another config name
(`--config-name`). It uses Hydra's real loader, set up as `hydra.main` sets it up; nothing is
faked, and Hydra's global state is cleared again on the way out.
"""

from __future__ import annotations

from pathlib import Path

from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig

from linreg_exp.app import register_configs
from linreg_exp.schema import CONFIG_DIR


def hydra_config(
    overrides: list[str],
    *,
    multirun: bool = False,
    config_path: Path = CONFIG_DIR,
    config_dir: Path | None = None,
    config_name: str = "config",
) -> DictConfig:
    """The composed config with its `hydra` node, as Hydra hands it to the app."""
    register_configs()
    search_path = create_config_search_path(f"file://{config_path}")
    if config_dir is not None:  # what hydra.main does with --config-dir
        search_path.prepend(
            provider="command-line",
            path=f"file://{config_dir.resolve()}",
            anchor=SearchPathQuery(provider="schema"),
        )
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2("linreg_exp", search_path)
        return hydra.compose_config(
            config_name,
            overrides,
            run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
            with_log_configuration=False,
        )
    finally:
        GlobalHydra.instance().clear()
