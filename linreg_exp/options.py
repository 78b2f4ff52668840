"""A loss or optimizer option as torch objects, through Hydra's `instantiate`: the one place a job
instantiates what its config names.

The trainer vectorises the schema's own losses and optimizers (train.py) and never builds them;
what it cannot vectorise (an option of the user's own, or a schema's keys given to another
`_target_`) is built here, for a program of one (train.OwnStep), and the yardsticks' loss is too
(scoring.compute_reference). Kept apart from the ML core, which imports no Hydra.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from hydra.utils import instantiate
from torch import nn

from linreg_exp.errors import ConfigError

OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


def build_loss(loss_cfg: Any) -> nn.Module:
    """Instantiate the loss (a schema.LossConfig, or a dict: an option of the user's own) from
    its `_target_`; `name` is ours, not the constructor's."""
    is_schema = dataclasses.is_dataclass(loss_cfg) and not isinstance(loss_cfg, type)
    keys = dataclasses.asdict(loss_cfg) if is_schema else dict(loss_cfg)
    spec = {key: value for key, value in keys.items() if key != "name"}
    return cast(nn.Module, instantiate(spec))


def own_loss_and_optimizer(
    loss_cfg: Any, optimizer_cfg: Any, target: str
) -> tuple[nn.Module, OptimizerFactory]:
    """The loss, and the optimizer as a factory of parameters (a partial: `_partial_` in the
    optimizer's config), its `_target_` being `target`. The optimizer is built once on a
    throw-away parameter, so that bad arguments fail before the run exists, in one line."""
    make_optimizer = cast(OptimizerFactory, instantiate(optimizer_cfg))
    try:
        make_optimizer([nn.Parameter(torch.zeros(1))])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer._target_={target} cannot be built from the optimizer's "
                          f"keys: {error}") from None  # fmt: skip
    return build_loss(loss_cfg), make_optimizer
