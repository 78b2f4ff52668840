"""The job as a plain function: a composed config and a Job description in, a JobResult out,
recorded in a real store. No Hydra state, no subprocess, no sweep."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from linreg_exp.app import register_configs
from linreg_exp.errors import ConfigError
from linreg_exp.job import run
from linreg_exp.jobspec import Job
from linreg_exp.vocab import Outcome
from tests.conftest import CONF_DIR


def config(*overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


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
