"""Reading runs and metrics back from a store, for the tests and the bench.

Two ways in. Through MlflowClient for a store that exists: what a user's UI or script sees. Or
straight from the SQLite file, for a store that a running job is still creating or writing to: an
MlflowClient would create or migrate it, and a test polling it must not change what it watches.
MLflow is imported inside the functions that need it, so the bench and the unit tests can import
this module without paying for MLflow.
"""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
import threading
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

EXPERIMENT = "linreg"  # conf/config.yaml's mlflow.experiment_name


# ---------------------------------------------------------------- the SQLite file, read directly


def store_count(db: Path, sql: str, *args: object) -> int:
    """One number from a job's sqlite store, read-only; 0 while it (or its schema) is not there."""
    if not db.exists():
        return 0
    with suppress(sqlite3.Error):
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(connection.execute(sql, args).fetchone()[0])
        finally:
            connection.close()
    return 0


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


def points_stored(db: Path) -> int:
    """The loss points of the newest run, read straight from the SQLite file."""
    with sqlite3.connect(db) as connection:
        return int(
            connection.execute(
                "select count(*) from metrics where key = 'loss' and run_uuid = "
                "(select run_uuid from runs order by start_time desc limit 1)"
            ).fetchone()[0]
        )


# ---------------------------------------------------------------- a store to begin with


_TEMPLATE_LOCK = threading.Lock()  # made once a process, whichever thread asks first


@cache
def _empty_store_template() -> Path:
    from mlflow.tracking import MlflowClient

    folder = tempfile.mkdtemp(prefix="linreg-store-template-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def empty_store(db: Path) -> str:
    """An SQLite store at `db` with MLflow's schema made, and its tracking URI. MLflow makes a
    new store's tables in about 2 s of CPU, in the first process to open it: a copy of one made
    once a process saves that for each test, which would otherwise pay it in its job's first
    run (a brand-new store's first opens are tests/test_concurrency.py's, and a user's first run
    is tests/test_cli.py's)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with _TEMPLATE_LOCK:  # MLflow's migrations in two threads of one process trip each other
        template = _empty_store_template()
    shutil.copyfile(template, db)
    return f"sqlite:///{db}"


# ---------------------------------------------------------------- through MlflowClient


def only_run(store: str | MlflowClient) -> Run:
    """The one run of the `linreg` experiment (a tracking URI or a client); asserts there is one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store) if isinstance(store, str) else store
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no experiment {EXPERIMENT!r}"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


def sweep_runs(uri: str) -> tuple[Run, list[Run]]:
    """The single parent run and its children, each child with a complete history."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no experiment {EXPERIMENT!r}"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("linreg.kind") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    parent = parents[0]
    children = [r for r in runs if r is not parent]
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in children)
    assert all(r.info.status != "RUNNING" for r in runs)
    return parent, children


def points(uri: str, run: Run, key: str) -> int:
    """How many points of metric `key` the run has in the store."""
    from mlflow.tracking import MlflowClient

    return len(MlflowClient(uri).get_metric_history(run.info.run_id, key))


def assert_nothing_running(uri: str) -> None:
    """No run of any experiment is left RUNNING: whatever a test stopped, it ended its runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = client.search_experiments()
    running = client.search_runs(
        [e.experiment_id for e in experiments], filter_string="attributes.status = 'RUNNING'"
    )
    assert not running, f"runs left RUNNING: {[r.info.run_id for r in running]}"
