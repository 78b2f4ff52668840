"""Tracking that survives its server, end to end, each once: an outage ridden out (the
PostgreSQL behind a real `mlflow server` restarted mid-run); a run spooled past the outage
timeout that delivers its spool itself once the server is back; a job that dies mid-outage, its
spool synced; an offline sweep synced through a server (on SLURM: tests/test_slurm.py). Each ends
with every epoch stored once, steps contiguous, and no run left RUNNING. The outage policy itself
(back-off, the two lines, the clock, the spool's drain) is tests/test_transport.py's, on a fake
clock, in milliseconds."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from linreg_exp.tracking.journal import ParentNote, RunNote
from linreg_exp.tracking.messages import Open
from linreg_exp.tracking.spool import Spool
from linreg_exp.tracking.sync import sync as sync_spools
from tests.conftest import cli_env, run_cli
from tests.support.ports import free_port
from tests.support.processes import lower_priority
from tests.support.servers import (
    MlflowServer,
    mlflow_server,
    postgres_available,
    postgres_cluster,
    stop_group,
)
from tests.support.store import assert_nothing_running, empty_store, only_run, sweep_runs

pytestmark = pytest.mark.slow

LONG = ["trainer.epochs=100000000", "plots.enabled=false"]


class Server:
    """A tracking server on one port, over one SQLite store, to stop and start again."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.store = empty_store(root / "server.db")  # its schema, made once
        self.url = f"http://127.0.0.1:{self.port}"
        self._context: object | None = None
        self.server: MlflowServer | None = None

    @contextmanager
    def up(self) -> Iterator[MlflowServer]:
        with mlflow_server(self.store, self.root / "server.log", port=self.port,
                           artifacts_destination=self.root / "artifacts") as server:  # fmt: skip
            yield server

    def is_down(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/health", timeout=2)
        except OSError:
            return True
        return False


def start_job(args: list[str], cwd: Path, uri: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "linreg_exp", *args], cwd=cwd,
                            env=cli_env(uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def sync(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "linreg_exp", "sync", str(path), *args],
                          env=cli_env(), capture_output=True, text=True, timeout=300)  # fmt: skip


def wait_for(what: str, check: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def loss_steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "loss"))


def stored(client: MlflowClient) -> int:
    try:
        return len(loss_steps(client, only_run(client).info.run_id))
    except Exception:
        return 0


def epochs_done(stderr: str) -> int:
    return int(re.search(r"interrupted after (\d+) epochs", stderr).group(1))  # type: ignore[union-attr]


def outage(server: Server, seconds: float) -> None:
    """Stop the server (its whole process group), check it is down, start it again later."""
    assert server.server is not None
    stop_group(server.server.proc, signal.SIGKILL)
    assert server.is_down()
    time.sleep(seconds)


def spool_delivered(run_dir: Path) -> bool:
    """Whether every request in the run's spool is marked delivered in its state file."""
    spool = Spool(run_dir)
    if not spool.state.exists():
        return False
    lines = {
        n for n, entry in spool.entries() if not isinstance(entry, Open | RunNote | ParentNote)
    }
    state = [json.loads(line) for line in spool.state.read_text().splitlines()]
    return lines <= {entry["line"] for entry in state if entry["kind"] == "Delivered"}


def test_past_the_outage_timeout_a_live_run_delivers_its_spool_once_the_server_is_back(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)
    client = MlflowClient(server.url)
    run_dir = tmp_path / "run"
    spool = run_dir / "mlflow-spool.jsonl"
    with server.up() as up:
        server.server = up
        job = start_job([*LONG, "mlflow.outage_timeout=5", f"hydra.run.dir={run_dir}"],
                        tmp_path, server.url)  # fmt: skip
        wait_for("epochs stored", lambda: stored(client) > 500)
        lower_priority(job.pid)  # from here it waits for the server (tests/support/processes.py)
        outage(server, 0)
        # past the timeout it trains on, spooled
        wait_for("batches spooled", lambda: spool.exists() and spool.read_text().count("\n") > 3)
    with server.up() as again:  # on the same port and store
        server.server = again
        wait_for("the spool delivered by the live run", lambda: spool_delivered(run_dir))
        job.send_signal(signal.SIGTERM)  # live again: its end goes to the store
        _, stderr = job.communicate(timeout=120)
        assert job.returncode == 128 + signal.SIGTERM, stderr
        run = only_run(client)
        assert run.info.status == "KILLED" and run.data.tags["linreg.stopped_by"] == "SIGTERM"
        assert loss_steps(client, run.info.run_id) == list(range(epochs_done(stderr)))
        assert re.fullmatch(r"\d+ s", run.data.tags["linreg.outages"])
        assert "Traceback" not in stderr and "linreg-exp sync" not in stderr, stderr
        lines = [line for line in stderr.splitlines() if "tracking store" in line]
        assert len(lines) == 2, stderr
        assert "does not answer" in lines[0] and "is back after" in lines[1]
        # nothing is left for sync (which, so, does not even open the store)
        assert sync_spools(run_dir) == [f"{run_dir}: delivered before, nothing left"]
        assert_nothing_running(server.url)


def test_the_job_killed_outright_during_an_outage_its_helper_spools_what_it_had(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path)
    client = MlflowClient(server.url)
    run_dir = tmp_path / "run"
    with server.up() as up:
        server.server = up
        job = start_job([*LONG, "mlflow.outage_timeout=600", f"hydra.run.dir={run_dir}"],
                        tmp_path, server.url)  # fmt: skip
        wait_for("epochs stored", lambda: stored(client) > 500)
        outage(server, 3)
        job.kill()
        job.communicate(timeout=60)
        wait_for("the helper's spool", lambda: (run_dir / "mlflow-spool.jsonl").exists(), 60)
    # synced straight into the server's store, in-process: the server and the sync command are
    # not what is tested here (test_an_offline_sweep_synced_to_a_server_lands_whole runs both)
    assert sync_spools(tmp_path, server.store), "nothing was synced"
    store = MlflowClient(server.store)
    run = only_run(store)
    assert run.info.status == "KILLED"
    assert "ended before reporting" in run.data.tags["linreg.failure"]
    steps = loss_steps(store, run.info.run_id)
    assert steps == list(range(len(steps))) and len(steps) > 500
    assert_nothing_running(server.store)


def test_a_postgresql_restart_behind_the_server_is_ridden_out(tmp_path: Path) -> None:
    if not postgres_available():
        pytest.skip("PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin/initdb)")
    with postgres_cluster() as database:
        database.create_database("mlflow")
        with mlflow_server(database.uri("mlflow"), tmp_path / "server.log",
                           artifacts_destination=tmp_path / "artifacts") as server:  # fmt: skip
            client = MlflowClient(server.url)
            job = start_job([*LONG, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, server.url)
            wait_for("epochs stored", lambda: stored(client) > 1000)
            database.restart(down_for=5)  # a few of its sends fail, none is lost
            before = stored(client)
            wait_for("epochs delivered late, and more", lambda: stored(client) > before + 2000)
            job.send_signal(signal.SIGTERM)
            _, stderr = job.communicate(timeout=120)
            assert job.returncode == 128 + signal.SIGTERM, stderr
            run = only_run(client)
            assert loss_steps(client, run.info.run_id) == list(range(epochs_done(stderr)))
            assert run.info.status == "KILLED" and run.data.tags["linreg.outages"]
            assert "Traceback" not in stderr, stderr
            lines = [line for line in stderr.splitlines() if "tracking store" in line]
            assert len(lines) == 2, stderr  # when it begins, when it ends
            assert "does not answer" in lines[0] and "is back after" in lines[1]
            outages = (tmp_path / "run" / "mlflow-outages.log").read_text()
            assert outages.count("does not answer") == 1
            assert_nothing_running(server.url)


def test_an_offline_sweep_synced_to_a_server_lands_whole(tmp_path: Path) -> None:
    """The basic launcher's offline sweep (its parent a placeholder until synced, made with its
    first job's run) synced through a server that proxies artifacts: the pictures are drawn at
    sync time, the sweep's report with them."""
    sweep_dir = tmp_path / "multirun"
    offline = run_cli(["-m", "optimizer.lr=0.01,0.1", "trainer.epochs=50",
                       "mlflow.tracking_uri=offline"], tmp_path)  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    assert "http" not in offline.stdout + offline.stderr  # no links to runs not yet stored
    assert f"linreg-exp sync {sweep_dir} --to URI" in offline.stdout + offline.stderr
    server = Server(tmp_path)
    with server.up() as up:
        synced = sync(sweep_dir, "--to", up.url)
        assert synced.returncode == 0, synced.stderr
        client = MlflowClient(up.url)
        parent, children = sweep_runs(up.url)
        assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 2
        assert parent.data.tags["linreg.best_run_id"] in {c.info.run_id for c in children}
        assert {"summary.csv", "sweep.png"} <= {a.path for a in client.list_artifacts(
            parent.info.run_id)}  # fmt: skip
        for child in children:
            assert child.info.status == "FINISHED"
            assert loss_steps(client, child.info.run_id) == list(range(50))
            drawn = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert {"fit.png", "loss_curve.png", "training.gif"} <= drawn, drawn
        assert_nothing_running(up.url)
