"""Tracking against a real SQLite MLflow store under tmp_path."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from linreg_exp import companion, tracking, uris
from linreg_exp.companion import CompanionRecorder
from linreg_exp.errors import TrackingError
from linreg_exp.history import History
from linreg_exp.parent_run import SweepTarget
from linreg_exp.recorder import LocalRecorder, Outcome, RunStart, RunTarget


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uris.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert uris.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:1"
    assert uris.resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_default_store_is_absolute_even_from_a_relative_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert uris.resolve_tracking_uri(None, Path(".")) == f"sqlite:///{tmp_path}/mlflow.db"


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
    assert uris.mask_uri(uri) == masked
    assert uris.mask_override(f"mlflow.tracking_uri={uri}") == f"mlflow.tracking_uri={masked}"


def test_mask_uri_with_a_colon_in_the_password() -> None:
    assert uris.mask_uri("postgresql://u:pa:ss@h:1/d") == "postgresql://u:***@h:1/d"


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


def _history(epochs: int) -> History:
    return History(
        loss=[1.0 / (e + 1) for e in range(epochs)],
        weight=[2.0] * epochs,
        bias=[float(e) for e in range(epochs)],
        timestamp_ms=[1_700_000_000_000 + e for e in range(epochs)],
    )


CONFIG = {"optimizer": {"lr": 0.01}, "mlflow": {"experiment_name": "linreg"}}


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED"])
def test_local_recorder_ends_the_run_with_the_outcome_status(store: str, status: str) -> None:
    recorder = LocalRecorder(RunTarget(store, "linreg", run_name="t"))
    recorder.start(RunStart({"k": "v"}, CONFIG))
    run = recorder.finish(
        Outcome(status, _history(3), {"final_loss": 0.5}, {"linreg.outcome": "why"})
    )
    recorder.close()
    client = MlflowClient(store)
    logged = client.get_run(run.run_id)
    assert logged.info.status == status and logged.info.run_name == "t"
    assert logged.data.tags["k"] == "v" and logged.data.tags["linreg.outcome"] == "why"
    assert logged.data.params["optimizer.lr"] == "0.01"
    assert logged.data.metrics["final_loss"] == 0.5
    assert [m.value for m in client.get_metric_history(run.run_id, "bias")] == [0.0, 1.0, 2.0]
    assert "config.yaml" in [a.path for a in client.list_artifacts(run.run_id)]
    assert mlflow.active_run() is None


def test_a_started_run_that_is_never_finished_ends_killed(store: str) -> None:
    recorder = LocalRecorder(RunTarget(store, "linreg"))
    recorder.start(RunStart({}, CONFIG))
    recorder.close("the job vanished")
    (run,) = MlflowClient(store).search_runs([tracking.open_experiment(store, "linreg")])
    assert run.info.status == "KILLED"
    assert run.data.tags["linreg.failure"] == "the job vanished"


def test_the_companion_records_the_run_in_its_own_process(store: str) -> None:
    recorder = CompanionRecorder(RunTarget(store, "linreg"))
    recorder.start(RunStart({"k": "v"}, CONFIG))
    run = recorder.finish(Outcome("FINISHED", _history(500), {"final_loss": 0.25}))
    recorder.close()
    client = MlflowClient(store)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(run.run_id, "loss")) == 500


def test_the_companion_ends_the_run_killed_when_the_job_vanishes(store: str) -> None:
    recorder = CompanionRecorder(RunTarget(store, "linreg"))
    recorder.start(RunStart({}, CONFIG))
    recorder.close()  # hang up without an outcome, as a job killed by SIGKILL would
    (run,) = MlflowClient(store).search_runs([tracking.open_experiment(store, "linreg")])
    assert run.info.status == "KILLED"


def test_the_companion_reports_an_unusable_store_before_any_run() -> None:
    recorder = CompanionRecorder(RunTarget("sqlite:////proc/no/such/dir/mlflow.db", "linreg"))
    with pytest.raises(TrackingError, match=r"mlflow\.tracking_uri="):
        recorder.start(RunStart({}, CONFIG))
    recorder.close()


def test_a_sweep_companion_records_the_parent_and_each_job(store: str) -> None:
    assert companion.start_sweep(SweepTarget(store, "linreg", "s", {"linreg.kind": "sweep"}))
    try:
        runs = []
        for status, outcome in [("FINISHED", "completed"), ("FAILED", "diverged")]:
            recorder = companion.sweep_job_recorder("job", plots=False)
            assert recorder is not None
            recorder.start(RunStart({"k": "v"}, CONFIG))
            tags = {"linreg.outcome": outcome}
            runs.append(recorder.finish(Outcome(status, _history(500), {"final_loss": 1}, tags)))
            recorder.close()
    finally:
        summary, error = companion.end_sweep(None)
    assert error is None and summary is not None and "2 jobs, 1 finished, 1 diverged" in summary
    client = MlflowClient(store)
    (parent,) = client.search_runs([runs[0].experiment_id], "tags.`linreg.kind` = 'sweep'")
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_total"] == 2
    for run, status in zip(runs, ["FINISHED", "FAILED"], strict=True):
        child = client.get_run(run.run_id)
        assert child.info.status == status
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert len(client.get_metric_history(run.run_id, "loss")) == 500


def test_a_sweep_companion_ends_parent_and_child_killed_when_the_sweep_vanishes(
    store: str,
) -> None:
    assert companion.start_sweep(SweepTarget(store, "linreg", "s"))
    recorder = companion.sweep_job_recorder(None, plots=False)
    assert recorder is not None and companion._sweep is not None
    recorder.start(RunStart({}, CONFIG))
    link, companion._sweep = companion._sweep, None
    link.conn.close()  # hang up mid-job, as a sweep killed by SIGKILL would
    link.process.popen.wait(60)
    runs = MlflowClient(store).search_runs([tracking.open_experiment(store, "linreg")])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}


def test_a_sweep_companion_stops_the_sweep_on_an_unusable_store(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert companion.start_sweep(SweepTarget("sqlite:////proc/no/such/dir/mlflow.db", "l", "s"))
    recorder = companion.sweep_job_recorder(None, plots=False)
    assert recorder is not None
    try:
        with pytest.raises(SystemExit) as stop:
            recorder.start(RunStart({}, CONFIG))
    finally:
        assert companion.end_sweep("FAILED") == (None, None)
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: mlflow.tracking_uri=")


def test_batched_metrics_are_all_stored(store: str) -> None:
    experiment_id = tracking.open_experiment(store, "linreg")
    client = MlflowClient(store)
    run_id = client.create_run(experiment_id).info.run_id
    metrics = [Metric(key, float(step), 0, step) for step in range(1200) for key in ("a", "b")]
    tracking.log_metrics_batched(client, run_id, metrics, {f"t{i}": str(i) for i in range(150)})
    client.set_terminated(run_id)
    assert client.get_run(run_id).data.tags["t149"] == "149"
    assert [m.step for m in client.get_metric_history(run_id, "a")] == list(range(1200))
    assert len(client.get_metric_history(run_id, "b")) == 1200
