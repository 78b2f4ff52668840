"""The command a sweep records to run it again (sweeps/launch.py `sweep_command`,
`config_flags`), in-process, from the `hydra` node Hydra composes for a multirun: the launcher's
and the sweeper's settings kept, where it writes dropped (so that, rerun as it is, it makes a new
sweep; with hydra.sweep.dir=<its dir> added, it resumes), passwords masked."""

from __future__ import annotations

import shlex
from pathlib import Path

from linreg_exp.sweeps.launch import config_flags, sweep_command, sweep_key
from tests.support.composing import hydra_config


def sweep_argv(overrides: list[str], **how: object) -> list[str]:
    return shlex.split(sweep_command(hydra_config(overrides, multirun=True, **how).hydra))  # type: ignore[arg-type]


def test_a_sweep_reruns_with_its_launcher_and_its_overrides_but_not_where_it_wrote() -> None:
    argv = sweep_argv(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.1,0.2",
                       "hydra.sweep.dir=/somewhere", "hydra.run.dir=/else", "hydra.mode=MULTIRUN",
                       "loss=l1,mse"])  # fmt: skip
    assert argv == ["python", "-m", "linreg_exp", "-m", "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=2", "optimizer.lr=0.1,0.2", "loss=l1,mse"]  # fmt: skip


def test_a_search_reruns_as_the_same_search() -> None:
    argv = sweep_argv(["hparams_search=lr_optuna", "hydra.sweeper.n_trials=4", "loss=mse"])
    assert argv[4:] == ["hydra.sweeper.n_trials=4", "hparams_search=lr_optuna", "loss=mse"]


def test_a_sweeps_quoted_values_and_passwords() -> None:
    argv = sweep_argv(["mlflow.tracking_uri=postgresql://me:s3cret@db/mlflow",
                       "mlflow.run_name='a b, c=d'", "seed=range(0,3)"])  # fmt: skip
    assert argv[4:] == ["mlflow.tracking_uri=postgresql://me:***@db/mlflow",
                        "mlflow.run_name='a b, c=d'", "seed=range(0,3)"]  # fmt: skip


def test_the_projects_own_config_needs_no_flags_a_users_dir_does(tmp_path: Path) -> None:
    assert config_flags(hydra_config([]).hydra) == []
    (tmp_path / "mine").mkdir()
    hydra = hydra_config([], config_dir=tmp_path / "mine").hydra
    assert config_flags(hydra) == ["--config-dir", str((tmp_path / "mine").resolve())]
    assert sweep_argv(["loss=l1,mse"], config_dir=tmp_path / "mine")[4:6] == config_flags(hydra)


def test_a_sweeps_key_is_its_dir_and_nothing_else() -> None:
    """The parent run is found again by this key, whatever the dir's name holds."""
    quoted = Path("/tmp/it's a sweep")
    assert sweep_key(quoted) == sweep_key(Path("/tmp/it's a sweep"))
    assert sweep_key(quoted) != sweep_key(Path("/tmp/its a sweep"))
    assert len(sweep_key(quoted)) == 16 and sweep_key(quoted).isalnum()
