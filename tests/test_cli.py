"""The real CLI in a subprocess, read back through MlflowClient from a SQLite store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from PIL import Image

from tests.conftest import REPO, cli_env, run_cli
from tests.support.store import assert_nothing_running, only_run
from tests.support.tutorial import least_squares, tutorial_data

pytestmark = pytest.mark.slow


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    points = MlflowClient(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in points)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Run, Path, str]:
    cwd = tmp_path_factory.mktemp("default")
    result = run_cli([], cwd, env=cli_env())  # no URI given: ./mlflow.db in the launch dir
    assert result.returncode == 0, result.stderr
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    return uri, only_run(uri), cwd, result.stdout + result.stderr


def test_default_run_is_tracked_completely(default_run: tuple[str, Run, Path, str]) -> None:
    uri, run, _, _ = default_run
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optimizer.lr"] == "0.01"
    assert params["data.num_data"] == "1000"
    assert params["loss.name"] == "l1"
    assert params["trainer.epochs"] == "500"
    for key in ("loss", "weight", "bias"):
        points = history(uri, run.info.run_id, key)
        assert [step for step, _ in points] == list(range(500))
    assert run.info.run_name == "default"  # a single run is named after its overrides
    tags = run.data.tags
    assert tags["linreg.command"] == "python -m linreg_exp"
    assert tags["linreg.outcome"] == "completed"
    assert tags["mlflow.source.name"] == "linreg_exp"
    assert "mlflow.parentRunId" not in tags
    (dataset_input,) = run.inputs.dataset_inputs  # the UI's Dataset column
    assert dataset_input.dataset.name == "linreg_default"
    assert '"num_data": 1000' in dataset_input.dataset.source
    assert [t.value for t in dataset_input.tags] == ["training"]
    assert_nothing_running(uri)


def test_a_run_says_which_commit_and_whether_the_tree_had_changes(
    default_run: tuple[str, Run, Path, str],
) -> None:
    tags = default_run[1].data.tags
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    changes = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == head.strip()
    assert tags["linreg.git_dirty"] == ("true" if changes.stdout.strip() else "false")


def test_default_run_reproduces_the_tutorial(default_run: tuple[str, Run, Path, str]) -> None:
    uri, run, _, _ = default_run
    metrics = run.data.metrics
    x, y = tutorial_data()
    slope, intercept = least_squares()
    assert metrics["ols_weight"] == pytest.approx(slope, abs=1e-9)
    assert metrics["ols_bias"] == pytest.approx(intercept, abs=1e-9)
    assert metrics["final_weight"] == pytest.approx(2.0, abs=0.03)
    bias = [v for _, v in history(uri, run.info.run_id, "bias")]
    assert bias[100] < bias[-1] < 3.0  # still climbing towards 3 at epoch 500
    lad_cost = np.abs(y - metrics["lad_weight"] * x - metrics["lad_bias"]).mean()
    assert metrics["optimum_loss"] == pytest.approx(lad_cost, rel=1e-5)
    assert lad_cost <= np.abs(y - slope * x - intercept).mean()
    assert metrics["weight_gap_to_true"] == pytest.approx(abs(metrics["final_weight"] - 2.0))
    assert metrics["final_loss"] == history(uri, run.info.run_id, "loss")[-1][1]


def test_default_run_artifacts(default_run: tuple[str, Run, Path, str]) -> None:
    uri, run, cwd, _ = default_run
    client = MlflowClient(uri)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "loss_curve.png", "fit.png", "training.gif"} <= names
    local = Path(client.download_artifacts(run.info.run_id, "", str(cwd / "dl")))
    assert "optimizer:" in (local / "config.yaml").read_text()
    for name in ("loss_curve.png", "fit.png"):
        with Image.open(local / name) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300
    with Image.open(local / "training.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames >= 10
    assert (local / "training.gif").stat().st_size < 2_000_000
    # the same files in the job's Hydra output dir, with its log file
    job_dir = cwd / "run"
    assert {"loss_curve.png", "fit.png", "training.gif", "linreg_exp.log"} <= {
        p.name for p in job_dir.iterdir()
    }
    assert run.info.artifact_uri.startswith((cwd / "mlruns").as_uri())


def test_summary_says_where_to_look(default_run: tuple[str, Run, Path, str]) -> None:
    _, run, cwd, output = default_run
    assert run.info.run_id in output
    assert (
        f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        "?workflowType=machine_learning" in output  # MLflow's UI: the Model training pages
    )
    assert "mlflow ui --backend-store-uri" in output
    assert "final loss" in output
    assert "run    " in output and "linreg_exp.log" not in output
    assert f"files  {cwd / 'run'}   (config, log, pictures)" in output  # its output dir
    assert (cwd / "run" / "linreg_exp.log").read_text().count(run.info.run_id) >= 1


def test_the_console_script_helps_with_groups_and_examples(tmp_path: Path) -> None:
    """`linreg-exp --help`: the installed script is the CLI, and its help lists what to pick."""
    script = Path(sys.executable).with_name("linreg-exp")
    result = subprocess.run([str(script), "--help"], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0 and "== Config groups ==" in result.stdout
    for text in (
        "loss: huber, l1, mse",
        "optimizer: adam, sgd",
        "device: auto, cpu, cuda",
        "experiment: tutorial",
        "hparams_search: lr_optuna",
        "-m optimizer.lr=",
        "hydra/launcher=joblib",
        "lr: 0.01",
    ):
        assert text in result.stdout, text
