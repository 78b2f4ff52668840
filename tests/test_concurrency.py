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


def runs_by_status(db: Path) -> dict[str, int]:
    """Read straight from the file (an MlflowClient would create or migrate a new store)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as connection:
        try:
            rows = connection.execute("select status, count(*) from runs group by status")
        except sqlite3.OperationalError:  # the schema is still being made
            return {}
        return dict(rows.fetchall())


@pytest.mark.parametrize("attempt", range(3))
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
