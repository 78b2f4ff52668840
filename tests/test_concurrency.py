"""A brand-new SQLite store opened by many processes at once: every run is recorded, and the
store is never left half-migrated (MLflow migrates a new store's schema on its first open)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env
from tests.support.store import runs_by_status

pytestmark = pytest.mark.slow

# One process: MLflow imported first, then wait for the shared start time, so that all six open
# the store within milliseconds of each other; then one run with a few epochs, in-process.
ONE_RUN = """
import sys, time
import mlflow  # noqa: F401
from linreg_exp.tracking.messages import Open, StartRun
from linreg_exp.tracking.recorder import Tracker, finished
from linreg_exp.tracking.session import InProcess
from linreg_exp.vocab import Outcome

uri, name, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))
tracker = Tracker(InProcess(), Open(uri, "linreg"))
run = tracker.start_run(StartRun("run", name, {}, {"a": "1"}, {"a": 1}))
for step in range(20):
    run.epoch(step, {"loss": 1.0, "weight": 2.0, "bias": 3.0})
finished(run.finish(Outcome.COMPLETED))
tracker.close()
"""


@pytest.mark.parametrize("attempt", range(2))  # without the store lock, 2 of 2 lost runs
def test_six_processes_open_a_brand_new_store_at_once(tmp_path: Path, attempt: int) -> None:
    db = tmp_path / "new" / "mlflow.db"
    start_at = time.time() + 6  # about when six interpreters have imported MLflow on 2 cores
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ONE_RUN, f"sqlite:///{db}", f"run-{i}", str(start_at)],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(6)
    ]
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [p.returncode for p in processes] == [0] * 6, "\n".join(outputs)
    assert runs_by_status(db) == {"FINISHED": 6}


def test_single_runs_and_sweeps_share_a_brand_new_store(tmp_path: Path) -> None:
    """Real CLI runs, started together: three single runs, a basic and a joblib sweep (whose
    parallel jobs open the store too)."""
    db = tmp_path / "mlflow.db"
    fast = ["trainer.epochs=30", "plots.enabled=false"]
    commands = [
        *([*fast, f"hydra.run.dir={tmp_path / f'single{i}'}"] for i in range(3)),
        ["-m", "optimizer.lr=0.01,0.02", *fast, f"hydra.sweep.dir={tmp_path / 'basic'}"],
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.01,0.02",
         *fast, f"hydra.sweep.dir={tmp_path / 'joblib'}"],
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "linreg_exp", *args],
            cwd=tmp_path,
            env=cli_env(f"sqlite:///{db}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args in commands
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [p.returncode for p in processes] == [0] * len(commands), "\n".join(outputs)
    assert runs_by_status(db) == {"FINISHED": 3 + 2 * 3}  # a sweep: a parent and two children


# One process: runs on the same data, each logging its dataset input at a time shared with the
# other processes (MLflow's store looks a dataset up, then inserts it: they race on its key).
SAME_DATA = """
import sys, time
from linreg_exp.tracking.messages import DatasetInfo, Open
from linreg_exp.tracking.session import Session

uri, start_at = sys.argv[1], float(sys.argv[2])
session = Session()
opened = session.handle(Open(uri, "linreg"))
client = session.client
run_ids = [client.create_run(opened.experiment_id).info.run_id for _ in range(20)]
for i, run_id in enumerate(run_ids):
    time.sleep(max(0.0, start_at + 0.2 * i - time.time()))
    session._log_dataset(run_id, DatasetInfo("linreg_default", f"digest{i}", {"seed": i}))
for run_id in run_ids:
    client.set_terminated(run_id)
"""


def test_jobs_on_the_same_data_log_it_at_once(tmp_path: Path) -> None:
    """The jobs of a sweep often share their data (the same seed) and log it as the same
    dataset at the same moment, from parallel processes (joblib, SLURM): each run gets it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    subprocess.run([sys.executable, "-c", "from linreg_exp.tracking.store import open_store; "
                    f"open_store({uri!r}, 'linreg')"], env=cli_env(), check=True)  # fmt: skip
    start_at = time.time() + 6
    command = [sys.executable, "-c", SAME_DATA, uri, str(start_at)]
    processes = [
        subprocess.Popen(
            command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [p.returncode for p in processes] == [0] * 3, "\n".join(outputs)
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:
        inputs = connection.execute("select count(*) from inputs").fetchone()[0]
        datasets = connection.execute("select count(*) from datasets").fetchone()[0]
    assert (inputs, datasets) == (60, 20)
    assert runs_by_status(tmp_path / "mlflow.db") == {"FINISHED": 60}  # none left RUNNING
