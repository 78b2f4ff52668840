"""The job as a plain function: a composed config and a Job description in, a JobResult out,
recorded in a real store. No Hydra state, no subprocess, no sweep."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient

import linreg_exp
from linreg_exp.app import register_configs
from linreg_exp.data import make_dataset
from linreg_exp.errors import ConfigError
from linreg_exp.job import run_here as run
from linreg_exp.jobspec import Job
from linreg_exp.schema import DataConfig, LinregConfig, typed
from linreg_exp.vocab import Outcome
from tests.conftest import CONF_DIR


def config(*overrides: str) -> LinregConfig:
    """The config as the Hydra adapter hands it to a job: composed, validated and typed."""
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return typed(compose("config", overrides=list(overrides)))


def test_a_job_runs_from_a_plain_config_and_description(tmp_path: Path, store: str) -> None:
    cfg = config("trainer.epochs=50", "plots.enabled=false")
    result = run(cfg, Job(output_dir=tmp_path, tracking_uri=store, run_name="plain"))
    assert not HydraConfig.initialized()  # nothing of Hydra's state was needed, or faked
    assert result.outcome is Outcome.COMPLETED and not result.kept
    logged = MlflowClient(store).get_run(result.run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "plain"
    assert logged.data.metrics["final_loss"] == result.metrics["final_loss"]
    assert logged.data.metrics["val_mse"] == result.objective  # the sweep.objective
    assert logged.data.tags["linreg.outcome"] == "completed"
    assert logged.data.tags["linreg.command"] == "python -m linreg_exp"
    history = MlflowClient(store).get_metric_history(result.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(50))


def test_a_diverged_job_fails_its_run_and_its_objective_is_infinite(
    tmp_path: Path, store: str
) -> None:
    cfg = config("loss=mse", "optimizer.lr=0.5", "trainer.epochs=50", "plots.enabled=false")
    result = run(cfg, Job(output_dir=tmp_path, tracking_uri=store))
    assert result.outcome is Outcome.DIVERGED and result.objective == math.inf
    logged = MlflowClient(store).get_run(result.run_id)
    assert logged.info.status == "FAILED" and logged.data.tags["linreg.outcome"] == "diverged"


def test_a_jobs_pictures_are_a_post_run_task_logged_with_it(tmp_path: Path, store: str) -> None:
    cfg = config("trainer.epochs=30", "plots.frames=5")
    result = run(cfg, Job(output_dir=tmp_path, tracking_uri=store))
    names = {a.path for a in MlflowClient(store).list_artifacts(result.run_id)}
    pictures = {"loss_curve.png", "fit.png", "training.gif", "loss_curve.json"}
    assert pictures | {"config.yaml"} == names
    assert pictures <= {p.name for p in tmp_path.iterdir()}


def test_a_job_rejected_before_its_run_leaves_no_run(tmp_path: Path, store: str) -> None:
    with pytest.raises(ConfigError, match=r"^optimizer\.lr=-1\.0"):
        run(config("optimizer.lr=-1"), Job(output_dir=tmp_path, tracking_uri=store))
    client = MlflowClient(store)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_run_records_its_model_its_held_out_scores_and_its_own_params(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config("trainer.epochs=40", "plots.enabled=false", "loss=mse")
    result = run(cfg, Job(output_dir=tmp_path, tracking_uri=store))
    client = MlflowClient(store)
    logged = client.get_run(result.run_id)
    weight, bias = result.metrics["final_weight"], result.metrics["final_bias"]

    # the model: the fitted line, loadable with MLflow alone, listed with the run
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # where runs:/ URIs are looked up
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    expected = [bias - weight, bias, bias + 2.5 * weight]
    assert model.predict(pd.DataFrame({"x": [-1.0, 0.0, 2.5]})) == pytest.approx(expected)
    assert model.predict({"x": [-1.0, 0.0, 2.5]}) == pytest.approx(expected)
    assert [o.model_id for o in logged.outputs.model_outputs]  # the UI's Models column
    assert str(model.metadata.signature.inputs) == "['x': Any (required)]"  # a column x

    # one yardstick on held-out points of their own random stream
    held_out = make_dataset(DataConfig(), seed=0, held_out=True)
    residual = held_out.y.double().flatten() - (weight * held_out.x.double().flatten() + bias)
    assert result.metrics["val_mse"] == pytest.approx(float(residual.square().mean()))
    assert result.metrics["val_mae"] == pytest.approx(float(residual.abs().mean()))
    # logged once, the run's and its model's at once (the model's page shows its scores)
    assert len(client.get_metric_history(result.run_id, "val_mse")) == 1
    model_id = logged.outputs.model_outputs[0].model_id
    scores = {m.key: m.value for m in client.get_logged_model(model_id).metrics or []}
    assert scores["val_mse"] == pytest.approx(result.metrics["val_mse"])

    # params: the experiment's own keys and the device it really used
    params = logged.data.params
    assert params["device.resolved"] == "cpu" and params["device.name"] == "auto"
    assert not [k for k in params if "._" in k or k.startswith("_")], params
    assert "mlflow.tracking_uri" not in params and "None" not in params.values()
    assert logged.data.tags["linreg.version"] == linreg_exp.__version__


def test_system_metrics_are_sampled_by_mlflow_for_a_run_long_enough(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.05")
    cfg = config("trainer.epochs=4000", "plots.enabled=false")  # a second or so: 20 samples
    result = run(cfg, Job(output_dir=tmp_path, tracking_uri=store))
    metrics = MlflowClient(store).get_run(result.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics, sorted(metrics)
    quiet = run(config("trainer.epochs=5", "mlflow.system_metrics=false", "plots.enabled=false"),
                Job(output_dir=tmp_path, tracking_uri=store))  # fmt: skip
    assert not [k for k in MlflowClient(store).get_run(quiet.run_id).data.metrics
                if k.startswith("system/")]  # fmt: skip
