"""The command a run records to rerun it (sweeps/jobs.py `reproduce_command`, `absolute_paths`),
in-process, from the `hydra` node Hydra composes for that run: the config dirs and name it came
from, its overrides with the sweep selectors dropped, relative data paths made absolute and
passwords masked. The end-to-end proof that such a command reruns a run to the same numbers
from another directory is tests/test_packaging.py's (a wheel and a user's config dir)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from linreg_exp.sweeps.jobs import absolute_paths, reproduce_command
from tests.conftest import CONF_DIR
from tests.support.composing import hydra_config

MINE = """\
# @package _global_
defaults:
  - override /loss: mse
trainer:
  epochs: 7
"""


def command_of(overrides: list[str], **how: object) -> list[str]:
    """The recorded command of a single run with `overrides`, as argv."""
    hydra = hydra_config(overrides, **how).hydra  # type: ignore[arg-type]
    return shlex.split(reproduce_command(hydra, [str(o) for o in hydra.overrides.task]))


def test_a_run_of_the_projects_config_reruns_with_its_overrides() -> None:
    assert command_of([]) == ["python", "-m", "linreg_exp"]
    assert command_of(["loss=mse", "plots.enabled=false"]) == [
        "python", "-m", "linreg_exp", "loss=mse", "plots.enabled=false",
    ]  # fmt: skip


def test_values_with_quotes_spaces_commas_and_equals_come_back_as_typed() -> None:
    overrides = ["mlflow.run_name='a b, c=d'", 'mlflow.experiment_name="x y"', "seed=3"]
    assert command_of(overrides)[3:] == overrides  # a shell splits it back into the same words


def test_a_password_in_the_tracking_uri_is_masked() -> None:
    command = command_of(["mlflow.tracking_uri=postgresql://me:s3cret@db:5432/mlflow"])
    assert command[3:] == ["mlflow.tracking_uri=postgresql://me:***@db:5432/mlflow"]
    assert "s3cret" not in " ".join(command)


def test_a_job_of_a_search_does_not_start_the_search_again() -> None:
    hydra = hydra_config(["hparams_search=lr_optuna", "loss=mse"], multirun=True).hydra
    job = ["hparams_search=lr_optuna", "loss=mse", "optimizer.lr=0.0123"]  # as a trial runs it
    assert shlex.split(reproduce_command(hydra, job))[3:] == ["loss=mse", "optimizer.lr=0.0123"]


def test_a_users_config_dir_is_named_absolute(tmp_path: Path) -> None:
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "mine.yaml").write_text(MINE)
    command = command_of(["experiment=mine"], config_dir=tmp_path / "my_conf")
    assert command[3:] == ["--config-dir", str((tmp_path / "my_conf").resolve()), "experiment=mine"]


def test_another_config_path_and_name_are_named(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    shutil.copy(conf / "config.yaml", conf / "other.yaml")
    command = command_of(["loss=mse"], config_path=conf, config_name="other")
    assert command[3:] == ["--config-path", str(conf), "--config-name", "other", "loss=mse"]


@pytest.mark.parametrize(
    ("override", "recorded"),
    [
        ("data.path=my.csv", "data.path=/launch/dir/my.csv"),
        ("data.val_path=sub/val.csv", "data.val_path=/launch/dir/sub/val.csv"),
        ("data.path=../up.csv", "data.path=/launch/up.csv"),
        ("data.path=/abs/my.csv", "data.path=/abs/my.csv"),
        ("data.path=~/my.csv", "data.path=~/my.csv"),  # the user's home, wherever it is rerun
        ("data.val_path=null", "data.val_path=null"),
        ("data.path=", "data.path="),
        ("data.target=my.csv", "data.target=my.csv"),  # not a file
        ("mlflow.run_name=data.path=x", "mlflow.run_name=data.path=x"),
    ],
)
def test_a_relative_data_path_is_recorded_from_the_launch_dir(override: str, recorded: str) -> None:
    assert absolute_paths(override, Path("/launch/dir")) == recorded


def test_the_command_carries_absolute_data_paths_from_where_hydra_says_it_ran() -> None:
    hydra = hydra_config(["data=csv", "data.path=t.csv", "data.target=y"]).hydra
    command = shlex.split(reproduce_command(hydra, [str(o) for o in hydra.overrides.task]))
    launch_dir = Path(str(hydra.runtime.cwd))
    assert command[3:] == ["data=csv", f"data.path={(launch_dir / 't.csv').resolve()}",
                           "data.target=y"]  # fmt: skip


def test_a_config_dir_added_by_hydra_searchpath_stays_in_the_command(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(MINE)
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    command = command_of([searchpath, "experiment=mine"])
    assert command[3:] == [searchpath, "experiment=mine"]
