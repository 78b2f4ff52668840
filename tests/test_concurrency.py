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
from tests.support.store import empty_store, runs_by_status
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

# A start line for processes that must act together: each says it is ready (its imports done)
# and waits for the test's `go`, which holds the moment to start at; the test writes it once all
# are ready, however long a loaded machine takes to get them there.
BARRIER = """
import sys, time
from pathlib import Path

def start_line(barrier: Path, name: str) -> float:
    (barrier / f"ready-{name}").touch()
    deadline = time.monotonic() + 600  # a hang guard: the test writes `go` or fails first
    while not (barrier / "go").exists():
        assert time.monotonic() < deadline, "no go"
        time.sleep(0.005)
    start_at = float((barrier / "go").read_text())
    time.sleep(max(0.0, start_at - time.time()))
    return start_at
"""


def start_together(barrier: Path, processes: list[subprocess.Popen[str]]) -> None:
    """Once every process is ready (or one has died), tell them all to start in 0.5 s."""
    ready = lambda: len(list(barrier.glob("ready-*"))) == len(processes)  # noqa: E731
    wait_until(lambda: ready() or any(p.poll() is not None for p in processes), 300,
               "every process ready")  # fmt: skip
    (barrier / "go.tmp").write_text(str(time.time() + 0.5))
    (barrier / "go.tmp").rename(barrier / "go")  # whole, or not there yet


# One process: MLflow imported first, then the start line, so that all six open the store within
# milliseconds of each other; then one run with a few epochs, in-process.
ONE_RUN = (
    BARRIER
    + """
import mlflow  # noqa: F401
from linreg_exp.tracking.messages import Open, StartRun
from linreg_exp.tracking.recorder import Tracker, finished
from linreg_exp.tracking.session import InProcess
from linreg_exp.vocab import Outcome

uri, name, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
start_line(barrier, name)
tracker = Tracker(InProcess(), Open(uri, "linreg"))
run = tracker.start_run(StartRun("run", name, {}, {"a": "1"}, {"a": 1}))
for step in range(20):
    run.epoch(step, {"loss": 1.0, "weight": 2.0, "bias": 3.0})
finished(run.finish(Outcome.COMPLETED))
tracker.close()
"""
)


def test_six_processes_open_a_brand_new_store_at_once(tmp_path: Path) -> None:
    """Without the store lock, every try of this lost runs (started together at a barrier)."""
    db = tmp_path / "new" / "mlflow.db"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", ONE_RUN, f"sqlite:///{db}", f"run-{i}", str(tmp_path)],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(6)
    ]
    start_together(tmp_path, processes)
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [p.returncode for p in processes] == [0] * 6, "\n".join(outputs)
    assert runs_by_status(db) == {"FINISHED": 6}


# One process: runs on the same data, each logging its dataset input at a time shared with the
# other processes (MLflow's store looks a dataset up, then inserts it: they race on its key).
SAME_DATA = (
    BARRIER
    + """
from linreg_exp.tracking.messages import DatasetInfo, Open
from linreg_exp.tracking.session import Session

uri, name, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])
session = Session()
opened = session.handle(Open(uri, "linreg"))
client = session.client
run_ids = [client.create_run(opened.experiment_id).info.run_id for _ in range(20)]
start_at = start_line(barrier, name)
for i, run_id in enumerate(run_ids):  # paced: the same 20 moments in every process
    time.sleep(max(0.0, start_at + 0.2 * i - time.time()))
    session._log_dataset(run_id, DatasetInfo("linreg_default", f"digest{i}", {"seed": i}))
for run_id in run_ids:
    client.set_terminated(run_id)
"""
)


def test_jobs_on_the_same_data_log_it_at_once(tmp_path: Path) -> None:
    """The jobs of a sweep often share their data (the same seed) and log it as the same
    dataset at the same moment, from parallel processes (joblib, SLURM): each run gets it."""
    from linreg_exp.tracking.store import open_store

    uri = empty_store(tmp_path / "mlflow.db")
    open_store(uri, "linreg")  # the experiment made once, here: the race is the data's
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SAME_DATA, uri, f"p{i}", str(tmp_path)],
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(3)
    ]
    start_together(tmp_path, processes)
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [p.returncode for p in processes] == [0] * 3, "\n".join(outputs)
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:
        inputs = connection.execute("select count(*) from inputs").fetchone()[0]
        datasets = connection.execute("select count(*) from datasets").fetchone()[0]
    assert (inputs, datasets) == (60, 20)
    assert runs_by_status(tmp_path / "mlflow.db") == {"FINISHED": 60}  # none left RUNNING
