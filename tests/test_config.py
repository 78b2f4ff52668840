"""Config composition with Hydra's compose(): the keys are a contract; bad values fail early."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from linreg_exp.app import register_configs
from linreg_exp.engine import member_of
from linreg_exp.errors import ConfigError
from linreg_exp.options import build_loss
from linreg_exp.schema import (
    AdamConfig,
    HuberLossConfig,
    LinregConfig,
    LossConfig,
    loss_name,
    typed,
    validate,
    vectorisable,
)
from tests.conftest import CONF_DIR


@pytest.fixture(autouse=True)
def _hydra() -> Iterator[None]:
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield


def make(*overrides: str) -> DictConfig:
    return compose("config", overrides=list(overrides))


def test_default_config_is_the_tutorial() -> None:
    cfg = make()
    assert OmegaConf.to_container(cfg) == {
        "data": {
            "num_data": 1000,
            "noise_std": 1.0,
            "x_min": -10.0,
            "x_max": 10.0,
            "true_weight": 2.0,
            "true_bias": 3.0,
            "num_val": 1000,
            "num_features": 1,
        },
        "model": {"name": "linear", "standardize": False},
        "loss": {"name": "l1", "_target_": "torch.nn.L1Loss"},
        "optimizer": {
            "_target_": "torch.optim.SGD",
            "_partial_": True,
            "lr": 0.01,
            "momentum": 0.0,
            "dampening": 0.0,
            "weight_decay": 0.0,
            "nesterov": False,
        },
        "device": {"name": "auto"},
        "seed": 0,
        "trainer": {
            "epochs": 500,
            "batch_size": None,
            "log_every_n_epochs": 1,
            "divergence_factor": 10000.0,
        },
        "mlflow": {
            "experiment_name": "linreg",
            "tracking_uri": None,
            "run_name": None,
            "log_every_seconds": 1.0,
            "system_metrics": True,
            "register_best": None,
            "outage_timeout": 300.0,
        },
        "plots": {"enabled": True, "frames": 50},
        "sweep": {
            "objective": "val_mse",
            "direction": "minimize",
            "pruner": "none",
            "report_every": 25,
            "reduction_factor": 3,
        },
    }
    validate(cfg)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("l1", nn.L1Loss), ("mse", nn.MSELoss), ("huber", nn.HuberLoss)],
)
def test_losses_instantiate(choice: str, expected: type) -> None:
    cfg = make(f"loss={choice}")
    assert cfg.loss.name == choice
    assert isinstance(build_loss(OmegaConf.to_object(cfg.loss)), expected)


@pytest.mark.parametrize("choice", ["sgd", "adam"])
def test_optimizers_instantiate_with_parameters(choice: str) -> None:
    cfg = make(f"optimizer={choice}", "optimizer.lr=0.05")
    optimizer = instantiate(cfg.optimizer)(nn.Linear(1, 1).parameters())
    assert optimizer.param_groups[0]["lr"] == 0.05


@pytest.mark.parametrize("choice", ["cpu", "cuda", "auto"])
def test_device_options(choice: str) -> None:
    assert make(f"device={choice}").device.name == choice


def test_experiment_tutorial_is_the_exact_setting() -> None:
    cfg = make("experiment=tutorial")
    assert cfg.loss.name == "l1"
    assert cfg.optimizer.lr == 0.01
    assert cfg.trainer.epochs == 500
    assert cfg.trainer.batch_size is None
    assert cfg.data.num_data == 1000


def test_optuna_search_config() -> None:
    cfg = compose("config", overrides=["hparams_search=lr_optuna"], return_hydra_config=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert "optuna" in cfg.hydra.sweeper._target_.lower()
    assert cfg.hydra.sweeper.direction == "minimize"
    assert cfg.hydra.sweeper.sampler.seed == 0
    assert cfg.hydra.sweeper.params["optimizer.lr"].startswith("tag(log, interval(")


def test_sweep_callback_is_configured() -> None:
    cfg = compose("config", return_hydra_config=True)
    assert cfg.hydra.callbacks.linreg_exp._target_ == "linreg_exp.sweeps.callback.LaunchCallback"
    assert cfg.hydra.run.dir.startswith("outputs/runs/")
    assert cfg.hydra.sweep.dir.startswith("outputs/multirun/")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lrr=0.1", "lrr"),  # typo
        ("data.num_dat=10", "num_dat"),
        ("optimizer.lr=abc", "optimizer.lr"),  # wrong type
        ("data.num_data=1.5", "data.num_data"),
        ("trainer.epochs=many", "trainer.epochs"),
    ],
)
def test_schema_rejects_typos_and_types(override: str, key: str) -> None:
    with pytest.raises(ConfigCompositionException) as error:
        make(override)
    assert key in str(error.value) + str(error.value.__cause__)


@pytest.mark.parametrize("override", ["loss=l3", "device=tpu", "optimizer=rmsprop"])
def test_unknown_group_options(override: str) -> None:
    with pytest.raises(MissingConfigException):
        make(override)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["optimizer.lr=0"], "optimizer.lr"),
        (["optimizer.lr=-0.1"], "optimizer.lr"),
        (["data.num_data=1"], "data.num_data"),
        (["data.noise_std=-1"], "data.noise_std"),
        (["trainer.epochs=0"], "trainer.epochs"),
        (["data.x_min=5", "data.x_max=5"], "data.x_min"),
        (["trainer.batch_size=0"], "trainer.batch_size"),
        (["trainer.batch_size=1001"], "trainer.batch_size"),
        (["optimizer.momentum=-1"], "optimizer.momentum"),
        (["loss=huber", "loss.delta=0"], "loss.delta"),
        (["plots.frames=1"], "plots.frames"),
        (["+optimizer.foo=1"], "optimizer.foo"),
    ],
)
def test_validate_names_key_and_value(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}=") as error:
        validate(make(*overrides))
    assert "\n" not in str(error.value)


def test_slurm_launcher_config() -> None:
    cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert cfg.hydra.launcher.cpus_per_task == 1
    assert cfg.hydra.launcher.timeout_min == 30


def test_the_job_reads_its_config_as_the_schemas_objects(tmp_path: Path) -> None:
    """`typed`: the composed config as dataclasses, also from the batched launcher's copy
    without `hydra`; an option of the user's own without a schema stays a dict, and whatever
    the trainer's own update does not follow is a loss or optimizer of the user's own."""
    cfg = typed(make("loss=huber", "optimizer=adam"))
    assert isinstance(cfg, LinregConfig) and isinstance(cfg.loss, HuberLossConfig)
    assert isinstance(cfg.optimizer, AdamConfig) and cfg.optimizer.betas == [0.9, 0.999]
    assert vectorisable(cfg) and member_of(cfg).delta == 1.0
    with_hydra = compose("config", overrides=["loss=mse"], return_hydra_config=True)
    masked = OmegaConf.masked_copy(with_hydra, [str(k) for k in with_hydra if k != "hydra"])
    assert isinstance(typed(masked).loss, LossConfig) and typed(masked).loss.name == "mse"
    assert not vectorisable(typed(make("optimizer._target_=torch.optim.Adam")))  # SGD's keys
    assert not vectorisable(typed(make("loss=huber", "loss._target_=torch.nn.L1Loss")))
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "smooth_l1.yaml").write_text(
        "name: smooth_l1\n_target_: torch.nn.SmoothL1Loss\n"
    )
    own = typed(make("loss=smooth_l1", f"hydra.searchpath=[file://{tmp_path}]"))
    assert own.loss == {"name": "smooth_l1", "_target_": "torch.nn.SmoothL1Loss"}
    assert not vectorisable(own) and member_of(own).loss == "torch.nn.SmoothL1Loss"
    assert isinstance(build_loss(own.loss), nn.SmoothL1Loss) and loss_name(own) == "smooth_l1"
