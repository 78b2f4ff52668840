"""`hydra/sweeper=optuna` (hydra_plugins/linreg_exp_optuna): a search on Optuna >= 5 whose study
lives in the sweep dir, resumes where it stopped under one MLflow parent, and refuses bad input
in one line. Real `python -m linreg_exp` processes, real SQLite stores (MLflow's and Optuna's)."""

from __future__ import annotations

import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import cli_env, run_cli
from tests.support.store import empty_store

pytestmark = pytest.mark.slow

FAST = ["plots.enabled=false", "trainer.epochs=20"]
SEARCH = ["hparams_search=lr_optuna", *FAST]


def runs(uri: str) -> tuple[list[Run], list[Run]]:
    """The sweeps' parent runs and the other runs, of every lifecycle stage."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("linreg")
    if experiment is None:
        return [], []
    found = client.search_runs([experiment.experiment_id], run_view_type=3, max_results=1000)
    parents = [r for r in found if r.data.tags.get("linreg.kind") == "sweep"]
    return parents, [r for r in found if r not in parents]


def study(sweep_dir: Path, name: str = "lr_search") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def states(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return [t.state.name for t in sorted(trials, key=lambda t: t.number)]


def test_a_search_records_a_parent_and_its_trials_in_a_study_in_the_sweep_dir(
    tmp_path: Path, store: str
) -> None:
    result = run_cli([*SEARCH, "hydra.sweeper.n_trials=4"], tmp_path, store)
    assert result.returncode == 0, result.stderr
    (parent,), children = runs(store)
    assert len(children) == 4 and parent.info.status == "FINISHED"
    assert all(c.info.status == "FINISHED" for c in children)
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.tags["linreg.sweeper"] == "OptunaSweeper"
    best = min(children, key=lambda c: c.data.metrics["val_mse"])
    assert parent.data.tags["best.optimizer.lr"] == best.data.params["optimizer.lr"]
    assert parent.data.metrics["best_val_mse"] == best.data.metrics["val_mse"]
    # the study, in the sweep dir: each trial told its job's val_mse, and which job it was
    trials = study(tmp_path / "multirun").trials
    assert states(trials) == ["COMPLETE"] * 4
    by_job = {int(c.data.tags["linreg.job_num"]): c for c in children}
    for trial in trials:
        child = by_job[trial.user_attrs["linreg.job_num"]]
        assert trial.value == child.data.metrics["val_mse"]
        assert float(child.data.params["optimizer.lr"]) == trial.params["optimizer.lr"]
    # a job's reproduce command runs that job alone: it must not start the search again
    assert all("hparams_search" not in c.data.tags["linreg.command"] for c in children)


def query(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of an SQLite store read straight from its file, mid-search ([] before its schema)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        try:
            return list(connection.execute(sql))
        except sqlite3.OperationalError:  # its schema is still being made
            return []


def optuna_trials(db: Path) -> dict[str, int]:
    """Trial states in an Optuna study."""
    rows = query(db, "select state, count(*) from trials group by state")
    return {str(state): int(str(count)) for state, count in rows}


def running_jobs(db: Path) -> list[str]:
    """The job numbers of an MLflow store's RUNNING runs (a parent run has none: '-')."""
    rows = query(
        db,
        "select coalesce(t.value, '-') from runs r left join tags t on "
        "t.run_uuid = r.run_uuid and t.key = 'linreg.job_num' where r.status = 'RUNNING'",
    )
    return sorted(str(value) for (value,) in rows)


def running_trial_jobs(db: Path) -> list[str]:
    """The job numbers (user attribute linreg.job_num) of a study's RUNNING trials."""
    rows = query(
        db,
        "select a.value_json from trials t join trial_user_attributes a on "
        "a.trial_id = t.trial_id and a.key = 'linreg.job_num' where t.state = 'RUNNING'",
    )
    return sorted(str(value) for (value,) in rows)


def test_a_search_killed_half_way_goes_on_to_n_trials_under_its_parent(
    tmp_path: Path, store: str
) -> None:
    """kill -9 of the search while its 3rd trial trains; the same command again finishes it."""
    sweep_dir = tmp_path / "sweep"
    args = ["hparams_search=lr_optuna", "hydra.sweeper.n_trials=4", "trainer.epochs=2000",
            "plots.enabled=false", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    search = subprocess.Popen(
        [sys.executable, "-m", "linreg_exp", *args], cwd=tmp_path, env=cli_env(store),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300  # a hang guard: the two trials take seconds
    try:
        while True:  # two trials done, the third (job 2) asked for and its MLflow run started
            assert search.poll() is None, search.communicate()
            assert time.monotonic() < deadline, optuna_trials(sweep_dir / "optuna.db")
            trials = optuna_trials(sweep_dir / "optuna.db")
            third = trials.get("COMPLETE") == 2 and running_trial_jobs(sweep_dir / "optuna.db")
            if third == ["2"] and "2" in running_jobs(tmp_path / "mlflow.db"):
                break
            time.sleep(0.05)
        os.kill(search.pid, signal.SIGKILL)
    finally:
        search.kill()
        search.communicate(timeout=60)
    while running_jobs(tmp_path / "mlflow.db"):  # its tracking helper ends them, KILLED
        assert time.monotonic() < deadline, "runs left RUNNING after the kill"
        time.sleep(0.1)
    (parent,), _ = runs(store)
    assert parent.info.status == "KILLED"

    again = run_cli(args, tmp_path, store)
    assert again.returncode == 0, again.stderr
    assert "2 of 4 trials done, 2 to run" in again.stdout + again.stderr
    (resumed,), children = runs(store)
    seen = [(c.info.status, c.data.tags.get("linreg.job_num"), c.data.tags.get("linreg.outcome"),
             c.data.tags.get("linreg.failure"), c.info.start_time) for c in children]  # fmt: skip
    assert resumed.info.run_id == parent.info.run_id
    assert resumed.info.status == "FINISHED", (seen, resumed.data.metrics, again.stderr[-3000:])
    # the trial that was running is failed in the study; 4 trials completed in all
    trials = study(sweep_dir).trials
    assert states(trials) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    # its MLflow run ended KILLED; its job number ran again (a new trial), as a resumed grid
    # reruns a job, so that the parent counts 4 finished jobs
    killed = [c for c in children if c.info.status != "FINISHED"]
    assert len(killed) == 1, seen
    assert [(c.info.status, c.data.tags["linreg.job_num"]) for c in killed] == [("KILLED", "2")]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert sorted(int(c.data.tags["linreg.job_num"]) for c in finished) == [0, 1, 2, 3]
    assert resumed.data.metrics["jobs_total"] == 4 and resumed.data.metrics["jobs_finished"] == 4
    assert resumed.data.metrics["jobs_killed"] == 0

    # run once more: nothing is left to do, and nothing is added
    done = run_cli(args, tmp_path, store)
    assert done.returncode == 0, done.stderr
    assert "4 of 4 trials done, 0 to run" in done.stdout + done.stderr
    assert len(study(sweep_dir).trials) == 5 and len(runs(store)[1]) == len(children)


TYPO_SEARCH = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
hydra:
  mode: MULTIRUN
  sweeper:
    params:
      optimizer.lr: tag(log, intervl(0.0001, 0.3))
"""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--config-dir", "my_conf", "hparams_search=typo"],
         "hydra.sweeper.params.optimizer.lr: not a search space (HydraException while "
         "evaluating 'intervl(0.0001, 0.3)': Unknown function 'intervl')"),
        (["hparams_search=lr_optuna", "optimizer.lrr=interval(0.001, 0.1)"],
         "optimizer.lrr is not a config key; allowed keys in optimizer: lr, momentum"),
        (["hparams_search=lr_optuna", "hydra/sweeper/sampler=bogus"],
         "hydra/sweeper/sampler=bogus is not an option; allowed: cmaes, grid, random, tpe"),
        (["hparams_search=lr_optuna", "hydra/sweeper/sampler=grid"],
         "hydra.sweeper.params.optimizer.lr: the grid sampler takes choice(...) or range(...)"),
        (["hparams_search=lr_optuna", "hydra.sweeper.storage=nosuchdb://u:secret@host/db"],
         "hydra.sweeper.storage=nosuchdb://u:***@host/db: cannot open the study's storage"),
    ],
)  # fmt: skip
def test_a_bad_search_is_refused_in_one_line_before_any_run(
    tmp_path: Path, store: str, args: list[str], says: str
) -> None:
    (tmp_path / "my_conf" / "hparams_search").mkdir(parents=True)
    (tmp_path / "my_conf" / "hparams_search" / "typo.yaml").write_text(TYPO_SEARCH)
    result = run_cli(args, tmp_path, store)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), result.stderr
    assert "secret" not in result.stdout + result.stderr
    assert runs(store) == ([], [])  # no parent run, not even a deleted one
    assert not (tmp_path / "multirun").exists()  # nor a sweep dir


def test_without_optuna_the_sweeper_names_its_extra(tmp_path: Path) -> None:
    """Where the `sweep` extra is not installed (here: optuna hidden from the process)."""
    code = ("import runpy, sys; sys.modules['optuna'] = None; "
            "sys.argv = ['linreg_exp', 'hparams_search=lr_optuna']; "
            "runpy.run_module('linreg_exp', run_name='__main__')")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path,
        env=cli_env(f"sqlite:///{tmp_path / 'mlflow.db'}"), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: hydra/sweeper=optuna is not an option; allowed: basic; hydra/sweeper=optuna "
        "comes with an extra: pip install 'linreg_exp[sweep]'"
    )


def test_a_sweeps_recorded_command_runs_the_same_sweep_again(tmp_path: Path) -> None:
    """Once, end to end, with a sweeper's and a launcher's settings: what the recorded command
    holds for a grid, a joblib sweep or a search is tests/test_launch.py's, in-process."""
    args = ["hparams_search=lr_optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
            "hydra/launcher=batched"]  # fmt: skip
    launcher, jobs = "BatchedLauncher", 4
    first, again = tmp_path / "first", tmp_path / "again"
    first.mkdir()
    again.mkdir()
    result = run_cli([*args, *FAST], first, empty_store(first / "mlflow.db"))
    assert result.returncode == 0, result.stderr
    (parent,), children = runs(f"sqlite:///{first / 'mlflow.db'}")
    assert parent.data.tags["linreg.launcher"] == launcher and len(children) == jobs
    command = shlex.split(parent.data.tags["linreg.command"])
    assert command[:4] == ["python", "-m", "linreg_exp", "-m"]
    assert not any(a.startswith(("hydra.sweep.dir=", "hydra.mode=")) for a in command)

    rerun = run_cli(command[3:], again, empty_store(again / "mlflow.db"))
    assert rerun.returncode == 0, rerun.stderr
    (parent_again,), children_again = runs(f"sqlite:///{again / 'mlflow.db'}")
    assert parent_again.data.tags["linreg.launcher"] == launcher
    assert parent_again.data.tags["linreg.sweeper"] == parent.data.tags["linreg.sweeper"]
    assert len(children_again) == jobs
    assert parent_again.data.tags["linreg.command"] == parent.data.tags["linreg.command"]
