"""The schema's range checks (schema.validate), table-driven and in-process: every check refuses
its bad values in one line naming the key, the value and what is allowed, and lets the values at
its edge through. Each option's config is composed once by Hydra; a case sets its values on a
copy, typed by the schema as an override would be."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from linreg_exp.app import register_configs
from linreg_exp.errors import ConfigError
from linreg_exp.schema import validate
from tests.conftest import CONF_DIR

OPTIONS = {
    "default": [],
    "huber": ["loss=huber"],
    "adam": ["optimizer=adam"],
    "csv": ["data=csv", "data.path=t.csv", "data.target=y"],
}


@pytest.fixture(scope="module")
def bases() -> Iterator[dict[str, DictConfig]]:
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield {name: compose("config", overrides=o) for name, o in OPTIONS.items()}


def config(bases: dict[str, DictConfig], option: str, values: dict[str, object]) -> DictConfig:
    cfg = bases[option].copy()
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


# (option, values, the start of the error line); one row per check and side
REFUSED: list[tuple[str, dict[str, object], str]] = [
    ("default", {"data.num_data": 1}, "data.num_data=1 is not allowed: must be an integer >= 2"),
    ("default", {"data.num_val": 0}, "data.num_val=0 is not allowed: must be an integer >= 1"),
    ("default", {"data.noise_std": -0.1}, "data.noise_std=-0.1 is not allowed: must be >= 0"),
    ("default", {"data.x_min": 5, "data.x_max": 5},
     "data.x_min=5.0 is not allowed: must be < data.x_max=5.0"),
    ("default", {"data.num_features": 0}, "data.num_features=0 is not allowed: must be an integer"),
    ("default", {"data.true_weight": "two"}, "data.true_weight=two is not allowed: a number, or "),
    ("default", {"data.true_weight": True}, "data.true_weight=True is not allowed: "),
    ("default", {"data.true_weight": [1.0, 2.0]},
     "data.true_weight=[1.0, 2.0] is not allowed: a number, or a list of data.num_features=1 "),
    ("default", {"data.num_features": 2, "data.true_weight": [1.0, "x"]},
     "data.true_weight=[1.0, 'x'] is not allowed"),
    ("default", {"trainer.epochs": 0}, "trainer.epochs=0 is not allowed: must be an integer >= 1"),
    ("default", {"trainer.divergence_factor": 1}, "trainer.divergence_factor=1.0 is not allowed"),
    ("default", {"trainer.log_every_n_epochs": 0}, "trainer.log_every_n_epochs=0 is not allowed"),
    ("default", {"trainer.batch_size": 0}, "trainer.batch_size=0 is not allowed: must be null "),
    ("default", {"trainer.batch_size": 1001},
     "trainer.batch_size=1001 is not allowed: must be null (full batch) or an integer in "
     "[1, data.num_data=1000]"),
    ("default", {"model.name": "cubic"}, "model=cubic is not allowed: one of linear"),
    ("default", {"optimizer.lr": 0}, "optimizer.lr=0.0 is not allowed: must be > 0"),
    ("default", {"optimizer.momentum": -1}, "optimizer.momentum=-1.0 is not allowed: must be >= 0"),
    ("default", {"optimizer.dampening": -1}, "optimizer.dampening=-1.0 is not allowed"),
    ("default", {"optimizer.weight_decay": -1}, "optimizer.weight_decay=-1.0 is not allowed"),
    ("adam", {"optimizer.eps": -1e-8}, "optimizer.eps=-1e-08 is not allowed: must be >= 0"),
    ("default", {"optimizer.nesterov": True},
     "optimizer.nesterov=True is not allowed: needs optimizer.momentum > 0"),
    ("adam", {"optimizer.betas": [0.9, 1.0]},
     "optimizer.betas=[0.9, 1.0] is not allowed: two numbers in [0, 1)"),
    ("huber", {"loss.delta": 0}, "loss.delta=0.0 is not allowed: must be > 0"),
    ("default", {"device.name": "tpu"}, "device=tpu is not allowed: one of auto, cpu, cuda"),
    ("default", {"plots.frames": 1}, "plots.frames=1 is not allowed: must be an integer >= 2"),
    ("default", {"mlflow.log_every_seconds": 0}, "mlflow.log_every_seconds=0.0 is not allowed"),
    ("default", {"mlflow.outage_timeout": -1},
     "mlflow.outage_timeout=-1.0 is not allowed: must be >= 0 (seconds)"),
    ("default", {"mlflow.experiment_name": ""},
     "mlflow.experiment_name='' is not allowed: must be a non-empty name"),
    ("default", {"sweep.objective": "loss"},
     "sweep.objective=loss is not allowed: one of val_mse, val_mae, final_loss"),
    ("default", {"sweep.direction": "up"},
     "sweep.direction=up is not allowed: one of minimize, maximize"),
    ("csv", {"data.format": "xlsx"}, "data.format=xlsx is not allowed: one of csv, parquet"),
    ("csv", {"data.path": ""}, "data.path='' is not allowed: a file's path"),
    ("csv", {"data.target": ""}, "data.target='' is not allowed: a column's name"),
    ("csv", {"data.val_fraction": 0}, "data.val_fraction=0.0 is not allowed: must be in (0, 1)"),
    ("csv", {"data.val_fraction": 1}, "data.val_fraction=1.0 is not allowed: must be in (0, 1)"),
]  # fmt: skip


def case_id(option: str, values: dict[str, object]) -> str:
    return " ".join([option, *(f"{k}={v}" for k, v in values.items())])


@pytest.mark.parametrize(
    ("option", "values", "line"), REFUSED, ids=[case_id(o, v) for o, v, _ in REFUSED]
)
def test_a_value_out_of_range_is_refused_in_one_line_naming_it(
    bases: dict[str, DictConfig], option: str, values: dict[str, object], line: str
) -> None:
    with pytest.raises(ConfigError) as error:
        validate(config(bases, option, values))
    assert str(error.value).startswith(line) and "\n" not in str(error.value)


def test_a_key_the_schema_does_not_know_is_refused_naming_those_it_does(
    bases: dict[str, DictConfig],
) -> None:
    cfg = bases["default"].copy()
    with open_dict(
        cfg.optimizer
    ):  # as Hydra adds +optimizer.foo=1: struct mode lets an added key in
        cfg.optimizer.foo = 1
    with pytest.raises(ConfigError, match=r"^optimizer\.foo=1 is not allowed: unknown key; "
                       r"allowed: dampening, lr, momentum, nesterov, weight_decay$"):  # fmt: skip
        validate(cfg)


# (option, values): the edges of the allowed ranges, and the defaults, pass
ACCEPTED: list[tuple[str, dict[str, object]]] = [
    ("default", {}),
    ("huber", {}),
    ("adam", {}),
    ("csv", {}),
    ("default", {"data.num_data": 2, "data.num_val": 1, "data.noise_std": 0}),
    ("default", {"data.x_min": 4.999, "data.x_max": 5}),
    ("default", {"data.num_features": 3, "data.true_weight": [1, 2.5, -3]}),
    ("default", {"data.num_features": 3, "data.true_weight": 2}),  # every feature's
    ("default", {"trainer.epochs": 1, "trainer.log_every_n_epochs": 1}),
    ("default", {"trainer.divergence_factor": 1.0001}),
    ("default", {"trainer.batch_size": 1}),
    ("default", {"trainer.batch_size": 1000}),
    ("default", {"trainer.batch_size": None}),
    ("default", {"optimizer.lr": 1e-12, "optimizer.momentum": 0}),
    ("adam", {"optimizer.eps": 0}),
    ("huber", {"loss.delta": 1e-9}),
    ("default", {"device.name": "cuda"}),  # whether there is one is the job's to say
    ("default", {"plots.frames": 2, "mlflow.outage_timeout": 0}),
    ("default", {"sweep.objective": "final_loss", "sweep.direction": "maximize"}),
    ("csv", {"data.val_fraction": 0.999, "data.format": "parquet"}),
    ("csv", {"trainer.batch_size": 10**9}),  # a table's rows are counted when it is read
]


@pytest.mark.parametrize(("option", "values"), ACCEPTED, ids=[case_id(o, v) for o, v in ACCEPTED])
def test_values_at_the_edges_pass(
    bases: dict[str, DictConfig], option: str, values: dict[str, object]
) -> None:
    validate(config(bases, option, values))
