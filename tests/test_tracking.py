"""Tracking against a real SQLite MLflow store under tmp_path."""

from __future__ import annotations

import contextlib
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from linreg_exp import tracking
from linreg_exp.errors import TrackingError


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:1"
    assert tracking.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_default_store_is_absolute_even_from_a_relative_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_tracking_uri(None, Path(".")) == f"sqlite:///{tmp_path}/mlflow.db"


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        (
            "postgresql+psycopg2://me:s3cret@db:5432/mlflow",
            "postgresql+psycopg2://me:***@db:5432/mlflow",
        ),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert tracking.mask_uri(uri) == masked
    assert tracking.mask_override(f"mlflow.tracking_uri={uri}") == f"mlflow.tracking_uri={masked}"


def test_mask_uri_with_a_colon_in_the_password() -> None:
    assert tracking.mask_uri("postgresql://u:pa:ss@h:1/d") == "postgresql://u:***@h:1/d"


def test_open_experiment_creates_store_and_artifacts_beside_it(store: str, tmp_path: Path) -> None:
    experiment_id = tracking.open_experiment(store, "linreg")
    assert tracking.open_experiment(store, "linreg") == experiment_id
    experiment = MlflowClient(store).get_experiment(experiment_id)
    assert experiment.name == "linreg"
    assert experiment.artifact_location == (tmp_path / "mlruns").as_uri()


@pytest.mark.parametrize(
    "uri", ["foo://bar", "sqlite:////proc/no-such-dir/mlflow.db", "sqlite:////dev/null/mlflow.db"]
)
def test_unusable_store_is_one_clear_line(uri: str) -> None:
    with pytest.raises(TrackingError, match=r"mlflow\.tracking_uri=") as error:
        tracking.open_experiment(uri, "linreg")
    assert "\n" not in str(error.value)


def test_flatten() -> None:
    assert tracking.flatten({"a": {"b": 1, "c": {"d": None}}, "e": "x"}) == {
        "a.b": 1,
        "a.c.d": None,
        "e": "x",
    }


def _status(store: str, run_id: str) -> str:
    return MlflowClient(store).get_run(run_id).info.status


@pytest.mark.parametrize(
    ("error", "status"),
    [(None, "FINISHED"), (RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_tracked_run_always_ends(store: str, error: BaseException | None, status: str) -> None:
    experiment_id = tracking.open_experiment(store, "linreg")
    run_id = None
    expectation = pytest.raises(type(error)) if error else contextlib.nullcontext()
    with expectation, tracking.tracked_run(store, experiment_id, "t", None, {"k": "v"}) as run:
        run_id = run.run_id
        if error:
            raise error
    assert run_id is not None
    assert _status(store, run_id) == status
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert tags["k"] == "v"
    if status == "FAILED":
        assert tags["linreg.error"] == "RuntimeError: boom"
    assert mlflow.active_run() is None


def test_tracked_run_records_a_failure_without_raising(store: str) -> None:
    experiment_id = tracking.open_experiment(store, "linreg")
    with tracking.tracked_run(store, experiment_id, None, None, {}) as run:
        run.failure = "diverged at epoch 3"
    assert _status(store, run.run_id) == "FAILED"
    assert (
        MlflowClient(store).get_run(run.run_id).data.tags["linreg.failure"] == "diverged at epoch 3"
    )


def test_batched_metrics_are_all_stored(store: str) -> None:
    experiment_id = tracking.open_experiment(store, "linreg")
    client = MlflowClient(store)
    run_id = client.create_run(experiment_id).info.run_id
    metrics = [Metric(key, float(step), 0, step) for step in range(1200) for key in ("a", "b")]
    tracking.log_metrics_batched(client, run_id, metrics)
    client.set_terminated(run_id)
    assert [m.step for m in client.get_metric_history(run_id, "a")] == list(range(1200))
    assert len(client.get_metric_history(run_id, "b")) == 1200
