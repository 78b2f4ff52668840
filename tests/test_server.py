"""Runs logged through a real `mlflow server` (SQLite and PostgreSQL backends), read back.

Also: a password in the tracking URI never reaches the console or the run's params and tags.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import assert_nothing_running, run_cli
from tests.servers import PostgresCluster, mlflow_server, postgres_available, postgres_cluster

pytestmark = pytest.mark.slow

SERIES = ("loss", "weight", "bias")
PG_DATABASE = "mlflow"


def _output(proc) -> str:  # type: ignore[no-untyped-def]
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"


def _runs(client: MlflowClient, experiment_name: str) -> list[Run]:
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no experiment {experiment_name!r}"
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _assert_full_history(client: MlflowClient, run: Run, epochs: int) -> None:
    for key in SERIES:
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(epochs)), (
            f"run {run.info.run_id}: {key} has {len(history)} points, expected steps 0..{epochs - 1}"
        )


def test_single_run_through_sqlite_tracking_server(tmp_path: Path) -> None:
    with mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}",
        tmp_path / "server.log",
        artifacts_destination=tmp_path / "artifacts",
    ) as url:
        proc = run_cli(["trainer.epochs=500", "plots.enabled=false"], tmp_path, tracking_uri=url)
        assert proc.returncode == 0, _output(proc)

        client = MlflowClient(url)
        (run,) = _runs(client, "linreg")
        assert run.info.status == "FINISHED"
        _assert_full_history(client, run, 500)
        assert run.data.params["trainer.epochs"] == "500"
        assert "final_loss" in run.data.metrics
        # the artifact went through the server's proxy into its artifacts destination
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]
    assert list((tmp_path / "artifacts").rglob("config.yaml"))
    assert not (tmp_path / "mlflow.db").exists(), "the run bypassed the server"
    assert_nothing_running(f"sqlite:///{tmp_path / 'server.db'}")


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresCluster]:
    if not postgres_available():
        pytest.skip("PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin/initdb)")
    with postgres_cluster() as cluster:
        cluster.create_database(PG_DATABASE)
        yield cluster


def test_parallel_sweep_through_postgres_tracking_server(pg: PostgresCluster, tmp_path: Path) -> None:
    with mlflow_server(
        pg.uri(PG_DATABASE), tmp_path / "server.log", artifacts_destination=tmp_path / "artifacts"
    ) as url:
        proc = run_cli(
            [
                "-m",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
                "optimizer.lr=0.001,0.01,0.1,0.2",
                "plots.enabled=false",
                "trainer.epochs=100",
            ],
            tmp_path,
            tracking_uri=url,
        )
        assert proc.returncode == 0, _output(proc)

        client = MlflowClient(url)
        runs = _runs(client, "linreg")
        parents = [r for r in runs if r.data.tags.get("linreg.kind") == "sweep"]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1, [r.data.tags for r in runs]
        assert len(runs) == 5, f"expected 1 parent + 4 children, got {len(runs)} runs"
        (parent,) = parents
        assert len(children) == 4
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
        assert sorted(r.data.params["optimizer.lr"] for r in children) == [
            "0.001",
            "0.01",
            "0.1",
            "0.2",
        ]
        assert all(r.info.status != "RUNNING" for r in runs), [r.info.status for r in runs]
        assert parent.info.status == "FINISHED"
        assert parent.data.metrics["jobs_total"] == 4
        for child in children:
            assert child.info.status == "FINISHED", child.data.tags
            _assert_full_history(client, child, 100)
    assert_nothing_running(pg.uri(PG_DATABASE))


def test_password_in_tracking_uri_is_never_shown(pg: PostgresCluster, tmp_path: Path) -> None:
    """A run straight into PostgreSQL (no server): the store URI carries the password."""
    uri = pg.uri(PG_DATABASE)
    experiment = "linreg-password"
    proc = run_cli(
        [
            f"mlflow.tracking_uri={uri}",
            f"mlflow.experiment_name={experiment}",
            "trainer.epochs=20",
            "plots.enabled=false",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, _output(proc)
    output = proc.stdout + proc.stderr
    assert f"{pg.user}:***@" in output, f"no masked URI in the summary:\n{output}"
    assert pg.password not in output, f"password shown:\n{output}"

    client = MlflowClient(uri)
    (run,) = _runs(client, experiment)
    assert run.data.params["mlflow.tracking_uri"] == uri.replace(pg.password, "***")
    leaked = {
        k: v for k, v in {**run.data.params, **run.data.tags}.items() if pg.password in v
    }
    assert not leaked, f"password in params/tags: {leaked}"
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert pg.password not in Path(config).read_text()
