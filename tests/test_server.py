"""Runs logged through a real `mlflow server` (SQLite and PostgreSQL backends), read back.

Also: a password in the tracking URI never reaches the console or the run's params and tags.

A tracking server needs ~10-15 s to start (two interpreters importing MLflow, plus migrations),
so the module starts the servers its selected tests need up front, without waiting for them,
and runs the server-less test first while they boot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import cli_env, run_cli
from tests.support.ports import free_port
from tests.support.servers import (
    MlflowServer,
    PostgresCluster,
    mlflow_server,
    postgres_available,
    postgres_cluster,
    stop_group,
)
from tests.support.store import assert_nothing_running, empty_store

pytestmark = pytest.mark.slow

SERIES = ("loss", "weight", "bias")
SERVER_DB = "mlflow"  # behind the tracking server
DIRECT_DB = "direct"  # used as a store without a server


@dataclass(frozen=True)
class SqliteServer:
    server: MlflowServer
    store: str
    artifacts: Path


@dataclass(frozen=True)
class Postgres:
    cluster: PostgresCluster
    server: MlflowServer  # on database SERVER_DB


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteServer]:
    """A tracking server on a SQLite file, proxying artifacts; still booting when yielded."""
    tmp = tmp_path_factory.mktemp("sqlite-server")
    store = empty_store(tmp / "server.db")
    with mlflow_server(
        store, tmp / "server.log", artifacts_destination=tmp / "artifacts", wait=False
    ) as server:
        yield SqliteServer(server, store, tmp / "artifacts")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """A throw-away cluster with a tracking server on one database (still booting when
    yielded) and a second database for using PostgreSQL as a store directly."""
    if not postgres_available():
        pytest.skip("PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin/initdb)")
    tmp = tmp_path_factory.mktemp("pg-server")
    with postgres_cluster() as cluster:
        cluster.create_database(SERVER_DB)
        cluster.create_database(DIRECT_DB)
        with mlflow_server(
            cluster.uri(SERVER_DB),
            tmp / "server.log",
            artifacts_destination=tmp / "artifacts",
            wait=False,
        ) as server:
            yield Postgres(cluster, server)


@pytest.fixture(scope="module", autouse=True)
def _boot_servers_early(request: pytest.FixtureRequest) -> None:
    """Start, side by side, the servers that the selected tests of this module use."""
    wanted = {
        name
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        for name in getattr(item, "fixturenames", ())
    }
    if "sqlite_server" in wanted:
        request.getfixturevalue("sqlite_server")
    if "pg" in wanted and postgres_available():
        request.getfixturevalue("pg")


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    out, err = proc.stdout[-4000:], proc.stderr[-4000:]
    return f"exit {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"


def _runs(client: MlflowClient, experiment_name: str) -> list[Run]:
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no experiment {experiment_name!r}"
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _assert_full_history(client: MlflowClient, run: Run, epochs: int) -> None:
    for key in SERIES:
        history = client.get_metric_history(run.info.run_id, key)
        steps = sorted(m.step for m in history)
        assert steps == list(range(epochs)), (
            f"run {run.info.run_id}: {key} has {len(steps)} points, expected steps 0..{epochs - 1}"
        )


def test_password_in_tracking_uri_is_never_shown(pg: Postgres, tmp_path: Path) -> None:
    """A run straight into PostgreSQL (no server): the store URI carries the password."""
    cluster = pg.cluster
    uri = cluster.uri(DIRECT_DB)
    proc = run_cli(
        [f"mlflow.tracking_uri={uri}", "trainer.epochs=20", "plots.enabled=false"], tmp_path
    )
    assert proc.returncode == 0, _output(proc)
    output = proc.stdout + proc.stderr
    assert f"{cluster.user}:***@" in output, f"no masked URI in the summary:\n{output}"

    client = MlflowClient(uri)
    (run,) = _runs(client, "linreg")
    assert run.info.status == "FINISHED"
    assert "mlflow.tracking_uri" not in run.data.params  # the store's address is no param
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    leaks = [f"console: {line.strip()}" for line in output.splitlines() if cluster.password in line]
    leaks += [
        f"{kind} {key}={value}"
        for kind, values in (("param", run.data.params), ("tag", run.data.tags))
        for key, value in values.items()
        if cluster.password in value
    ]
    if cluster.password in Path(config).read_text():
        leaks.append("artifact config.yaml")
    assert not leaks, "the password is shown:\n" + "\n".join(leaks)


def test_single_run_through_sqlite_tracking_server(
    sqlite_server: SqliteServer, tmp_path: Path
) -> None:
    url = sqlite_server.server.wait_healthy()
    proc = run_cli(["trainer.epochs=500", "plots.enabled=false"], tmp_path, tracking_uri=url)
    assert proc.returncode == 0, _output(proc)
    assert not (tmp_path / "mlflow.db").exists(), "the run bypassed the server"

    client = MlflowClient(url)
    (run,) = _runs(client, "linreg")
    assert run.info.status == "FINISHED"
    _assert_full_history(client, run, 500)
    assert run.data.params["trainer.epochs"] == "500"
    assert "final_loss" in run.data.metrics
    # the artifact went through the server's proxy into its artifacts destination
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]
    assert list(sqlite_server.artifacts.rglob(f"{run.info.run_id}/artifacts/config.yaml"))
    assert_nothing_running(sqlite_server.store)


def test_parallel_sweep_through_postgres_tracking_server(pg: Postgres, tmp_path: Path) -> None:
    url = pg.server.wait_healthy()
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
    assert len(runs) == 5, f"expected 1 parent + 4 children, got {len(runs)} runs"
    assert len(parents) == 1, [r.data.tags for r in runs]
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
    assert_nothing_running(pg.cluster.uri(SERVER_DB))


def test_a_runs_model_is_served_by_mlflow_models_serve(tmp_path: Path) -> None:
    """`mlflow models serve -m runs:/<id>/model --env-manager local` answers /invocations."""
    store = empty_store(tmp_path / "mlflow.db")
    proc = run_cli(["trainer.epochs=20", "plots.enabled=false"], tmp_path, tracking_uri=store)
    assert proc.returncode == 0, _output(proc)
    (run,) = _runs(MlflowClient(store), "linreg")
    weight, bias = run.data.metrics["final_weight"], run.data.metrics["final_bias"]
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("wb") as out:
        serving = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
             f"runs:/{run.info.run_id}/model", "--env-manager", "local", "-h", "127.0.0.1",
             "-p", str(port)],
            env=cli_env(store, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
            stdout=out, stderr=out, start_new_session=True,  # as from the activated venv
        )  # fmt: skip
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while not _answers(f"{url}/ping"):
            assert serving.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        expected = pytest.approx([bias, 2 * weight + bias])  # at x = 0 and x = 2
        forms = {  # every request form for a one-column model; integers are numbers too
            "inputs 1-D": {"inputs": [0.0, 2.0]},
            "inputs 2-D": {"inputs": [[0.0], [2]]},
            "dataframe_split": {"dataframe_split": {"columns": ["z", "x"],
                                                    "data": [[9.0, 0], [9.0, 2.0]]}},
            "dataframe_records": {"dataframe_records": [{"x": 0.0, "z": 9}, {"x": 2}]},
        }  # fmt: skip
        for form, body in forms.items():
            status, answer = _invoke(url, body)
            assert (status, answer.get("predictions")) == (200, expected), (form, answer)
        status, answer = _invoke(url, {"dataframe_records": [{"foo": 1.0}]})
        assert status == 400 and "missing inputs ['x']" in answer["message"], answer
    finally:
        stop_group(serving)


def _invoke(url: str, body: object) -> tuple[int, dict[str, Any]]:
    """POST a JSON request body to a served model: its status and JSON answer."""
    request = urllib.request.Request(f"{url}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
