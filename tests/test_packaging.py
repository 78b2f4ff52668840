"""linreg_exp installed like any package: a wheel in a fresh venv, run from another directory,
with its own configs and with a user's config dir (Hydra's --config-dir)."""

from __future__ import annotations

import shlex
import site
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, cli_env
from tests.support.store import empty_store

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
    env = cli_env(empty_store(cwd / "mlflow.db"))
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
    tags = run.data.tags  # from a wheel: the package's version, and no git commit to claim
    assert tags["linreg.version"] == "0.1.0" and "mlflow.source.git.commit" not in tags

    # the recorded command reruns the run exactly, from any directory
    command = shlex.split(tags["linreg.command"])
    assert command[:3] == ["python", "-m", "linreg_exp"] and "--config-dir" in command
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rerun = run_installed(installed, command[3:], elsewhere)
    assert rerun.returncode == 0, rerun.stderr
    again = MlflowClient(f"sqlite:///{elsewhere / 'mlflow.db'}")
    (rerun_run,) = again.search_runs([again.get_experiment_by_name("linreg").experiment_id])
    assert rerun_run.data.metrics["final_loss"] == run.data.metrics["final_loss"]
    assert rerun_run.data.tags["linreg.command"] == tags["linreg.command"]


@pytest.fixture(scope="module")
def installed_without_extras(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same wheel, as `pip install linreg_exp` leaves it: no Hydra plugins (the [sweep]
    extra) among its dependencies."""
    root = tmp_path_factory.mktemp("plain")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())  # fmt: skip
    ours = Path(subprocess.run(
        [str(installed), "-c", "import linreg_exp, pathlib; "
         "print(pathlib.Path(linreg_exp.__file__).parent.parent)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip())  # fmt: skip
    deps = root / "deps"  # this venv's site-packages, but for the plugins
    deps.mkdir()
    for entry in Path(site.getsitepackages()[0]).iterdir():
        if not entry.name.startswith(("hydra_plugins", "hydra_joblib", "hydra_submitit",
                                      "hydra_optuna", "linreg_exp", "__editable__")):  # fmt: skip
            (deps / entry.name).symlink_to(entry)
    for entry in ours.iterdir():
        if entry.name.startswith("linreg_exp"):
            (deps / entry.name).symlink_to(entry)
    (purelib / "dependencies.pth").write_text(f"{deps}\n")
    return python


def test_a_missing_extra_is_named_in_one_line(
    installed_without_extras: Path, tmp_path: Path
) -> None:
    """Once, end to end (the line for each extra's option: tests/test_errors.py, in-process)."""
    result = run_installed(installed_without_extras, ["-m", "hydra/launcher=joblib"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "pip install 'linreg_exp[sweep]'" in lines[0]


def test_the_batched_launcher_is_found_in_the_wheel(installed: Path, tmp_path: Path) -> None:
    """Hydra finds hydra/launcher=batched where it finds plugins, in the installed wheel."""
    args = ["-m", "hydra/launcher=batched", "optimizer.lr=0.01,0.02", "trainer.epochs=5",
            "plots.enabled=false"]  # fmt: skip
    env = cli_env(empty_store(tmp_path / "mlflow.db"))
    result = subprocess.run(
        [str(installed), "-m", "linreg_exp", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and {r.data.tags["linreg.train_step"] for r in children} == {
        "batched"
    }
