"""The config schema: dataclasses (types, key typos) plus the range checks types cannot express.

The YAML files under conf/ stay the user's interface; every option there pulls in its schema
from the `schema/<group>` entries that app.py registers in Hydra's ConfigStore (`register`), so
Hydra rejects unknown keys and wrong types while composing. `validate` adds the range checks.
Plain dataclasses and OmegaConf only: the ML core (data.py) reads DataConfig without Hydra.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from omegaconf import MISSING, DictConfig, OmegaConf

from linreg_exp.errors import ConfigError

# An installed wheel carries the configs in the package; a checkout has them at its top level.
_PACKAGED = Path(__file__).resolve().parent / "conf"
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parent.parent / "conf"


@dataclass
class DataConfig:
    """The tutorial's synthetic points (data.py), with any number of features."""

    num_data: int = 1000
    noise_std: float = 1.0
    x_min: float = -10.0
    x_max: float = 10.0
    true_weight: Any = 2.0  # a number (every feature's), or a list: one a feature
    true_bias: float = 3.0
    num_val: int = 1000  # held-out points from the same generator, a stream of their own
    num_features: int = 1


@dataclass
class TableConfig:
    """A table of the user's (data=csv, data=parquet): `target` against `features`."""

    format: str = "csv"  # or parquet
    path: str = MISSING  # relative: to the directory the run was launched from
    target: str = MISSING
    features: list[str] | None = None  # None: every numeric column but the target
    val_fraction: float = 0.2  # held-out rows, drawn by `seed` ...
    val_path: str | None = None  # ... unless a file of their own holds them


@dataclass
class ModelConfig:
    """The model: `linear` is y = x·w + b on every feature."""

    name: str = "linear"
    standardize: bool = False  # train on features scaled on the training split


@dataclass
class LossConfig:
    name: str = MISSING
    _target_: str = MISSING


@dataclass
class HuberLossConfig(LossConfig):
    delta: float = 1.0


@dataclass
class OptimizerConfig:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = 0.01


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False


@dataclass
class DeviceConfig:
    name: str = "auto"


@dataclass
class TrainerConfig:
    epochs: int = 500
    batch_size: int | None = None
    log_every_n_epochs: int = 1
    divergence_factor: float = 1e4


@dataclass
class MlflowConfig:
    experiment_name: str = "linreg"
    tracking_uri: str | None = None
    run_name: str | None = None
    log_every_seconds: float = 1.0
    system_metrics: bool = True
    register_best: str | None = None
    outage_timeout: float = 300.0


@dataclass
class SweepConfig:
    objective: str = "val_mse"
    direction: str = "minimize"
    pruner: str = "none"  # none, median, asha, hyperband: which jobs stop early (PRUNERS)
    report_every: int = 25  # epochs between a job's scores of its objective, with a pruner
    reduction_factor: int = 3  # asha and hyperband: a rung keeps 1 in this many


@dataclass
class PlotsConfig:
    enabled: bool = True
    frames: int = 50


@dataclass
class LinregConfig:
    data: Any = MISSING  # a DataConfig or a TableConfig: the data option's schema says which
    model: ModelConfig = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    device: DeviceConfig = MISSING
    seed: int = 0
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    plots: PlotsConfig = field(default_factory=PlotsConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


DEVICES = ("auto", "cpu", "cuda")
MODELS = ("linear",)
TABLE_FORMATS = ("csv", "parquet")
DIRECTIONS = ("minimize", "maximize")
# Metrics a job can be judged by: computed on the held-out data, or the training loss.
OBJECTIVES = ("val_mse", "val_mae", "final_loss")
PRUNERS = ("none", "median", "asha", "hyperband")


class ConfigStore(Protocol):
    """What `register` needs of Hydra's ConfigStore."""

    def store(self, name: str, node: Any, group: str | None = None) -> None: ...


def register(cs: ConfigStore) -> None:
    """Register the schemas; conf/config.yaml and each group option name them in `defaults`."""
    cs.store(name="linreg_schema", node=LinregConfig)
    cs.store(group="schema/data", name="default", node=DataConfig)
    cs.store(group="schema/data", name="table", node=TableConfig)
    cs.store(group="schema/model", name="linear", node=ModelConfig)
    cs.store(group="schema/device", name="default", node=DeviceConfig)
    for name in ("l1", "mse"):
        cs.store(group="schema/loss", name=name, node=LossConfig)
    cs.store(group="schema/loss", name="huber", node=HuberLossConfig)
    cs.store(group="schema/optimizer", name="sgd", node=SGDConfig)
    cs.store(group="schema/optimizer", name="adam", node=AdamConfig)


def typed(cfg: DictConfig) -> LinregConfig:
    """The composed config as the schema's objects (`OmegaConf.to_object`): what a job reads,
    attributes with types, never a DictConfig with casts. Checked first (`validate`).

    A loss or optimizer option of the user's own without a schema (a `--config-dir` file of
    `name` and `_target_`) stays a plain dict: read its keys with `option_value`."""
    validate(cfg)
    config = OmegaConf.to_object(cfg)
    if isinstance(config, dict):  # a masked copy (the batched launcher's, without `hydra`)
        config = LinregConfig(**{str(k): v for k, v in config.items()})  # its nodes keep
        # their types, its root does not
    if not isinstance(config, LinregConfig):  # pragma: no cover - every composed config is
        raise TypeError(f"not a linreg_exp config: {type(config).__name__}")
    return config


def option_value(option: Any, key: str, default: Any = None) -> Any:
    """A key of a loss or optimizer option: the schema's dataclass, or a plain dict (an option
    of the user's own without a schema)."""
    if isinstance(option, dict):
        return option.get(key, default)
    return getattr(option, key, default)


def loss_name(cfg: LinregConfig) -> str:
    """The loss option's name (`l1`, `mse`, `huber`, or one of the user's own)."""
    return str(option_value(cfg.loss, "name", ""))


# (schema type, _target_) pairs that the trainer's own vectorised update follows: anything else
# (another target, a schema's keys given to another class) is a loss or optimizer of your own,
# built by Hydra's instantiate, where torch refuses keys that are not its own.
VECTORISED_LOSSES = {(LossConfig, "torch.nn.L1Loss"), (LossConfig, "torch.nn.MSELoss"),
                     (HuberLossConfig, "torch.nn.HuberLoss")}  # fmt: skip
VECTORISED_OPTIMIZERS = {(SGDConfig, "torch.optim.SGD"), (AdamConfig, "torch.optim.Adam")}


def vectorisable(cfg: LinregConfig) -> bool:
    """Whether the trainer's own update trains this config (else it is a program of one,
    stepped by its own torch.nn loss and torch.optim optimizer: train.OwnStep)."""
    loss = (type(cfg.loss), option_value(cfg.loss, "_target_"))
    optimizer = (type(cfg.optimizer), option_value(cfg.optimizer, "_target_"))
    return loss in VECTORISED_LOSSES and optimizer in VECTORISED_OPTIMIZERS


def _require(ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is not allowed: {allowed}")


def _check_no_extra_keys(cfg: DictConfig) -> None:
    """`+optimizer.foo=1` slips past Hydra's struct mode; the schema's fields are the contract."""
    groups = ("data", "model", "loss", "optimizer", "device", "trainer", "mlflow", "plots", "sweep")
    for group in groups:
        node = cfg[group]
        schema = OmegaConf.get_type(node)
        if not dataclasses.is_dataclass(schema):
            continue
        known = {f.name for f in dataclasses.fields(schema)}
        for key in node:
            if key in known:
                continue
            allowed = ", ".join(sorted(k for k in known if not k.startswith("_")))
            _require(False, f"{group}.{key}", node[key], f"unknown key; allowed: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Range checks Hydra's types cannot express; raises ConfigError naming the key and value."""
    _check_no_extra_keys(cfg)
    data, trainer, optim = cfg.data, cfg.trainer, cfg.optimizer
    # `--cfg job` checks the printed config, read back untyped: a table is the data with a target
    if OmegaConf.get_type(data) is TableConfig or "target" in data:
        _validate_table(data)
    else:
        _validate_synthetic(data)
    _require(trainer.epochs >= 1, "trainer.epochs", trainer.epochs, "must be an integer >= 1")
    _require(
        trainer.divergence_factor > 1,
        "trainer.divergence_factor",
        trainer.divergence_factor,
        "must be > 1",
    )
    _require(
        trainer.log_every_n_epochs >= 1,
        "trainer.log_every_n_epochs",
        trainer.log_every_n_epochs,
        "must be an integer >= 1",
    )
    batch_size = trainer.batch_size
    num_data = data.get("num_data")  # a table's rows are counted when it is read (data.py)
    _require(
        batch_size is None or (batch_size >= 1 and (num_data is None or batch_size <= num_data)),
        "trainer.batch_size",
        batch_size,
        f"must be null (full batch) or an integer in [1, data.num_data={num_data}]",
    )
    _require(cfg.model.name in MODELS, "model", cfg.model.name, f"one of {', '.join(MODELS)}")
    _require(optim.lr > 0, "optimizer.lr", optim.lr, "must be > 0")
    for key in ("momentum", "dampening", "weight_decay", "eps"):
        if key in optim:
            _require(optim[key] >= 0, f"optimizer.{key}", optim[key], "must be >= 0")
    if optim.get("nesterov"):  # as torch.optim.SGD, which the trainer's own update follows
        _require(optim.momentum > 0 and optim.dampening == 0, "optimizer.nesterov", True,
                 "needs optimizer.momentum > 0 and optimizer.dampening=0")  # fmt: skip
    if "betas" in optim:
        ok = len(optim.betas) == 2 and all(0 <= beta < 1 for beta in optim.betas)
        _require(ok, "optimizer.betas", list(optim.betas), "two numbers in [0, 1)")
    if "delta" in cfg.loss:
        _require(cfg.loss.delta > 0, "loss.delta", cfg.loss.delta, "must be > 0")
    _require(cfg.device.name in DEVICES, "device", cfg.device.name, f"one of {', '.join(DEVICES)}")
    _require(cfg.plots.frames >= 2, "plots.frames", cfg.plots.frames, "must be an integer >= 2")
    _require(
        cfg.mlflow.log_every_seconds > 0,
        "mlflow.log_every_seconds",
        cfg.mlflow.log_every_seconds,
        "must be > 0",
    )
    sweep = cfg.sweep
    _require(sweep.objective in OBJECTIVES, "sweep.objective", sweep.objective,
             f"one of {', '.join(OBJECTIVES)}")  # fmt: skip
    _require(sweep.direction in DIRECTIONS, "sweep.direction", sweep.direction,
             f"one of {', '.join(DIRECTIONS)}")  # fmt: skip
    _require(sweep.pruner in PRUNERS, "sweep.pruner", sweep.pruner,
             f"one of {', '.join(PRUNERS)}")  # fmt: skip
    _require(sweep.report_every >= 1, "sweep.report_every", sweep.report_every,
             "must be an integer >= 1 (epochs)")  # fmt: skip
    _require(sweep.reduction_factor >= 2, "sweep.reduction_factor", sweep.reduction_factor,
             "must be an integer >= 2")  # fmt: skip
    _require(
        cfg.mlflow.outage_timeout >= 0,
        "mlflow.outage_timeout",
        cfg.mlflow.outage_timeout,
        "must be >= 0 (seconds)",
    )
    _require(
        bool(cfg.mlflow.experiment_name),
        "mlflow.experiment_name",
        repr(cfg.mlflow.experiment_name),
        "must be a non-empty name",
    )


def _validate_synthetic(data: DictConfig) -> None:
    _require(data.num_data >= 2, "data.num_data", data.num_data, "must be an integer >= 2")
    _require(data.num_val >= 1, "data.num_val", data.num_val, "must be an integer >= 1")
    _require(data.noise_std >= 0, "data.noise_std", data.noise_std, "must be >= 0")
    _require(
        data.x_min < data.x_max, "data.x_min", data.x_min, f"must be < data.x_max={data.x_max}"
    )
    d = data.num_features
    _require(d >= 1, "data.num_features", d, "must be an integer >= 1")
    weight = data.true_weight
    if isinstance(weight, int | float) and not isinstance(weight, bool):
        return
    allowed = f"a number, or a list of data.num_features={d} numbers"
    _require(OmegaConf.is_list(weight), "data.true_weight", weight, allowed)
    _require(len(weight) == d, "data.true_weight", list(weight), allowed)
    for value in weight:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        _require(ok, "data.true_weight", list(weight), allowed)


def _validate_table(data: DictConfig) -> None:
    for key in ("path", "target"):
        if OmegaConf.is_missing(data, key):
            raise ConfigError(f"data.{key} is required: data={data.format} needs "
                              "data.path=FILE and data.target=COLUMN")  # fmt: skip
    _require(data.format in TABLE_FORMATS, "data.format", data.format,
             f"one of {', '.join(TABLE_FORMATS)}")  # fmt: skip
    _require(bool(data.path), "data.path", repr(data.path), "a file's path")
    _require(bool(data.target), "data.target", repr(data.target), "a column's name")
    _require(0 < data.val_fraction < 1, "data.val_fraction", data.val_fraction,
             "must be in (0, 1)")  # fmt: skip
