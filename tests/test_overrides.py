"""The batched launcher's overrides (sweeps/batched.py `compose`, `_apply`), in-process, against
Hydra's own compose of the same overrides: a job composed by the batched launcher is the job
any other launcher would run, or is rejected where Hydra (or the schema) rejects it.

No mocks: the batched side gets Hydra's real config loader (the HydraContext a launcher is
handed), the other side Hydra's compose API, both on the project's conf dir.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from linreg_exp.app import register_configs
from linreg_exp.errors import LinregError
from linreg_exp.schema import validate
from linreg_exp.sweeps import batched
from linreg_exp.sweeps.jobs import reproduce_command
from linreg_exp.sweeps.launch import LaunchInfo
from tests.conftest import CONF_DIR

REJECTED = "rejected"
INFO = LaunchInfo("sqlite:///unused.db", "linreg", multirun=True, swept=("optimizer.lr",))


class Launcher:
    """What Hydra hands a launcher: the sweep's config (with its `hydra` node) and a context
    holding Hydra's config loader."""

    def __init__(self, sweep_dir: Path, *hydra_overrides: str) -> None:
        overrides = [f"hydra.sweep.dir={sweep_dir}", *hydra_overrides]
        self.config = compose("config", overrides=overrides, return_hydra_config=True)
        loader = GlobalHydra.instance().hydra.config_loader  # type: ignore[union-attr]
        self.context = HydraContext(config_loader=loader, callbacks=Callbacks())

    def compose(self, *jobs: list[str]) -> list[batched.Composed | Exception]:
        return batched.compose(self.config, self.context, [list(j) for j in jobs], 0, INFO)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield Launcher(tmp_path_factory.mktemp("sweep"))


def by_hydra(overrides: list[str]) -> Any:
    """The job's config as Hydra composes it and a run checks it, or REJECTED."""
    try:
        cfg = compose("config", overrides=overrides)
        validate(cfg)
    except (HydraException, OmegaConfBaseException, LinregError):
        return REJECTED
    return OmegaConf.to_container(cfg)


def by_batched(launcher: Launcher, overrides: list[str]) -> Any:
    (item,) = launcher.compose(overrides)
    return REJECTED if isinstance(item, Exception) else OmegaConf.to_container(item.cfg)


# (overrides, a key to read back, its value in the composed job) -- or REJECTED
CASES: list[tuple[list[str], str, object]] = [
    # key=v on a key that exists
    (["optimizer.lr=0.5"], "optimizer.lr", 0.5),
    (["trainer.batch_size=null"], "trainer.batch_size", None),
    (["data.true_weight=[1,2]", "data.num_features=2"], "data.true_weight", [1, 2]),
    (["mlflow.run_name=${optimizer.lr}"], "mlflow.run_name", 0.01),  # an interpolation
    # ... and on one whose value is still missing (data.path: ???)
    (["data=csv", "data.path=my.csv", "data.target=y"], "data.path", "my.csv"),
    # key=v on a key that does not exist, or with a value of the wrong type
    (["optimizer.lrr=1"], "", REJECTED),
    (["optimizer.lr=abc"], "", REJECTED),
    (["+optimizer.lr.x=1"], "", REJECTED),
    # +key=v adds a key (the schema then refuses one it does not know), not one that exists
    (["+optimizer.foo=1"], "", REJECTED),
    (["+optimizer.lr=1"], "", REJECTED),
    (["+mlflow.nested.new=1"], "", REJECTED),
    # ++key=v sets a key whether or not it exists
    (["++optimizer.lr=0.3"], "optimizer.lr", 0.3),
    (["++optimizer.bar=2"], "", REJECTED),
    # ~key drops a key (a key the schema needs: rejected), ~key=v only if it holds v
    (["~plots"], "", REJECTED),
    (["~optimizer"], "", REJECTED),
    (["~trainer.batch_size"], "", REJECTED),
    (["~optimizer.momentum=0.5"], "", REJECTED),
    # group=option and +group=option: composed by Hydra's loader, values applied after
    (["loss=mse", "optimizer.lr=0.02"], "loss.name", "mse"),
    (["loss=huber", "loss.delta=2"], "loss.delta", 2.0),
    (["optimizer=adam", "optimizer.betas=[0.8,0.9]"], "optimizer.betas", [0.8, 0.9]),
    (["+experiment=tutorial"], "", REJECTED),  # in the defaults list already: no +
    (["experiment=tutorial", "optimizer.lr=0.2"], "optimizer.lr", 0.2),
    (["loss=l3"], "", REJECTED),
    # quoted values, values with spaces, commas and equals signs
    (["mlflow.run_name='a b'"], "mlflow.run_name", "a b"),
    (['mlflow.run_name="x,y"'], "mlflow.run_name", "x,y"),
    (["mlflow.run_name=a=b"], "", REJECTED),  # Hydra's grammar: an unquoted = is an error
    (["mlflow.run_name='a=b'"], "mlflow.run_name", "a=b"),
    (['mlflow.run_name="a b, c=d"'], "mlflow.run_name", "a b, c=d"),
    (["mlflow.run_name='it\\'s'"], "mlflow.run_name", "it's"),
    (["data=csv", "data.path=my data.csv", "data.target=y"], "data.path", "my data.csv"),
    # values the schema's range checks refuse
    (["optimizer.lr=0"], "", REJECTED),
    (["data.true_weight={a:1}"], "", REJECTED),
]


@pytest.mark.parametrize(("overrides", "key", "value"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_the_batched_launcher_composes_a_job_as_hydra_does(
    launcher: Launcher, overrides: list[str], key: str, value: object
) -> None:
    composed = by_batched(launcher, overrides)
    assert composed == by_hydra(overrides)
    if value == REJECTED:
        assert composed == REJECTED
    else:
        assert OmegaConf.select(OmegaConf.create(composed), key) == value


def test_a_rejection_names_the_key(launcher: Launcher) -> None:
    errors = launcher.compose(["optimizer.lrr=1"], ["+optimizer.lr=1"], ["optimizer.lr=0"])
    assert all(isinstance(e, Exception) for e in errors)
    for error, key in zip(errors, ["optimizer.lrr", "optimizer.lr", "optimizer.lr"], strict=True):
        assert key in str(error)
    assert "+optimizer.lrr=" in str(errors[0])  # and says how to add it


def test_jobs_of_one_sweep_compose_apart_and_a_rejected_one_leaves_the_others(
    launcher: Launcher,
) -> None:
    jobs = launcher.compose(["loss=mse", "optimizer.lr=0.1"], ["loss=l3"], ["optimizer.lr=0.2"])
    first, second, third = jobs
    assert isinstance(first, batched.Composed) and isinstance(third, batched.Composed)
    assert isinstance(second, Exception)
    assert (first.cfg.loss.name, first.cfg.optimizer.lr) == ("mse", 0.1)
    assert (third.cfg.loss.name, third.cfg.optimizer.lr) == ("l1", 0.2)  # no mse left over
    assert "hydra" not in first.cfg
    assert (first.job.number, third.job.number) == (0, 2)


def test_a_batched_jobs_description_is_what_hydras_compose_gives_any_launcher(
    launcher: Launcher,
) -> None:
    """Its output dir is the sweep's subdir, its run name says what the sweep varies, and its
    recorded command is the one built from Hydra's own `hydra` node of that job."""
    overrides = ["loss=mse", "optimizer.lr=0.1", "data=csv", "data.path=rel.csv", "data.target=y"]
    (item,) = launcher.compose(overrides)
    assert isinstance(item, batched.Composed), item
    job = item.job
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    assert job.output_dir == (sweep_dir / "0").resolve()
    assert job.run_name == "lr=0.1"
    assert job.overrides == tuple(overrides)
    assert job.data_option == "csv"
    hydra: DictConfig = compose("config", overrides=overrides, return_hydra_config=True).hydra
    assert job.command == reproduce_command(hydra, overrides)
    assert shlex.split(job.command)[-2] == f"data.path={Path.cwd().resolve() / 'rel.csv'}"


TWEAK = """\
# @package _global_
trainer:
  epochs: 7
"""


def test_a_group_added_from_a_users_config_dir_is_composed(
    launcher: Launcher, tmp_path: Path
) -> None:
    (tmp_path / "tweak").mkdir()
    (tmp_path / "tweak" / "fast.yaml").write_text(TWEAK)
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    assert compose("config", overrides=[searchpath, "+tweak=fast"]).trainer.epochs == 7  # Hydra
    with_dir = Launcher(tmp_path / "sweep", searchpath)
    (item,) = with_dir.compose(["+tweak=fast"])
    assert isinstance(item, batched.Composed), item
    assert item.cfg.trainer.epochs == 7 and "tweak" not in item.cfg
