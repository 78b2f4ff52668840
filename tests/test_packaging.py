"""linreg_exp installed like any package: a wheel in a fresh venv, run from another directory,
with its own configs and with a user's config dir (Hydra's --config-dir)."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, cli_env

pytestmark = pytest.mark.slow

MY_EXPERIMENT = """\
# @package _global_
defaults:
  - override /loss: mse
optimizer:
  lr: 0.02
trainer:
  epochs: 7
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; its dependencies come from this venv's
    site-packages as a plain path (no .pth processing, so the checkout stays out of reach)."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(root / "dist"), str(REPO)],
        check=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("linreg_exp-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True, timeout=300,
    )  # fmt: skip
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    return python


def run_installed(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = cli_env(f"sqlite:///{cwd / 'mlflow.db'}")
    return subprocess.run(
        [str(python), "-m", "linreg_exp", *args, f"hydra.run.dir={cwd / 'run'}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_wheel_runs_from_any_directory_with_its_own_configs(
    installed: Path, tmp_path: Path
) -> None:
    where = subprocess.run(
        [str(installed), "-c", "import linreg_exp; print(linreg_exp.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(REPO) not in where and "site-packages" in where
    result = run_installed(installed, ["trainer.epochs=5", "plots.enabled=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["trainer.epochs"] == "5"


def test_a_user_config_dir_adds_experiments(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "my_conf" / "experiment").mkdir(parents=True)
    (tmp_path / "my_conf" / "experiment" / "mine.yaml").write_text(MY_EXPERIMENT)
    args = ["--config-dir", "my_conf", "experiment=mine", "plots.enabled=false"]
    result = run_installed(installed, args, tmp_path)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    params = run.data.params
    assert (params["loss.name"], params["optimizer.lr"], params["trainer.epochs"]) == (
        "mse",
        "0.02",
        "7",
    )
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 7
