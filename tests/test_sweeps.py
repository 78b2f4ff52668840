"""Multiruns: one MLflow parent per sweep, one nested child per job, in every launcher."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli
from tests.support.store import points, sweep_runs
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

FAST = ["plots.enabled=false", "trainer.epochs=100"]


def test_grid_gives_one_parent_and_a_child_per_job(tmp_path: Path, store: str) -> None:
    result = run_cli(
        ["-m", "optimizer.lr=0.005,0.02", "loss=l1,mse", "trainer.epochs=200",
         "mlflow.register_best=linreg-best"], tmp_path, store,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parent, children = sweep_runs(store)
    assert len(children) == 4
    assert {(c.data.params["optimizer.lr"], c.data.params["loss.name"]) for c in children} == {
        ("0.005", "l1"),
        ("0.005", "mse"),
        ("0.02", "l1"),
        ("0.02", "mse"),
    }
    for child in children:
        assert child.info.status == "FINISHED"
        assert all(points(store, child, k) == 200 for k in ("loss", "weight", "bias"))
    assert parent.info.status == "FINISHED"
    metrics = parent.data.metrics
    assert metrics["jobs_total"] == 4 and metrics["jobs_finished"] == 4
    assert metrics["jobs_failed"] == metrics["jobs_diverged"] == 0
    # the best job by one yardstick for every loss: the held-out error (sweep.objective)
    best = min(children, key=lambda c: c.data.metrics["val_mse"])
    assert metrics["best_val_mse"] == best.data.metrics["val_mse"]
    assert parent.data.tags["best.optimizer.lr"] == best.data.params["optimizer.lr"]
    assert parent.data.tags["linreg.best_run_id"] == best.info.run_id
    assert parent.data.tags["linreg.objective"] == "val_mse minimize"
    # the best job's model, registered: `models:/linreg-best@best` is that job's fitted line
    version = MlflowClient(store).get_model_version_by_alias("linreg-best", "best")
    assert version.run_id == best.info.run_id
    assert "optimizer.lr=0.005,0.02" in parent.data.tags["linreg.overrides"]
    client = MlflowClient(store)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "sweep.png"} <= names
    summary = client.download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(summary).read_text())))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"FINISHED"}
    assert (tmp_path / "multirun" / "sweep.png").is_file()
    output = result.stdout + result.stderr
    assert "job 3:" in output  # one line per job
    # the last lines say which job was best, and that its model was registered
    job = best.data.tags["linreg.job_num"]
    assert f"best val_mse {metrics['best_val_mse']:.6g}: job {job} (" in output
    assert f"[{best.info.run_id}]" in output
    assert f"best model registered: models:/linreg-best@best (version {version.version})" in output


def test_diverging_jobs_are_recorded_and_the_sweep_goes_on(tmp_path: Path, store: str) -> None:
    result = run_cli(["-m", "loss=mse", "optimizer.lr=0.01,0.03,0.5", *FAST], tmp_path, store)
    assert result.returncode == 0, result.stderr
    parent, children = sweep_runs(store)
    by_lr = {c.data.params["optimizer.lr"]: c for c in children}
    assert by_lr["0.01"].info.status == "FINISHED"
    for lr, how in [("0.03", "exceeds 10000 x the first epoch's"), ("0.5", "at epoch 2")]:
        diverged = by_lr[lr]  # 0.03 blows up to 5e25 without overflowing: the bound catches it
        assert diverged.info.status == "FAILED"
        assert diverged.data.tags["linreg.outcome"] == "diverged"
        epoch = int(diverged.data.tags["linreg.diverged_at_epoch"])
        assert f"epoch {epoch}" in diverged.data.tags["linreg.failure"]
        assert how in diverged.data.tags["linreg.failure"]
        assert points(store, diverged, "loss") == epoch + 1  # the epoch it diverged at, too
        assert "final_loss" not in diverged.data.metrics  # no blown-up number for Compare
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs_diverged"] == 2 and parent.data.metrics["jobs_finished"] == 1


def test_submitit_local_jobs_are_children_of_one_parent(tmp_path: Path, store: str) -> None:
    """One job, in a process of submitit's (each costs about 5 s of CPU: parallel jobs on one
    store are the joblib and SLURM tests'), recorded as its sweep's child with submitit's logs."""
    result = run_cli(
        ["-m", "hydra/launcher=submitit_local", "optimizer.lr=0.01", *FAST],
        tmp_path,
        store,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr
    parent, children = sweep_runs(store)
    assert len(children) == 1 and parent.info.status == "FINISHED"
    assert all(points(store, c, "loss") == 100 for c in children)
    client = MlflowClient(store)
    for child in children:  # submitit's stdout and stderr of the job, beside its metrics
        logs = [a.path for a in client.list_artifacts(child.info.run_id, "logs")]
        assert sorted(p.rsplit("_", 1)[-1] for p in logs) == ["log.err", "log.out"], logs


# ---- resume: rerunning a sweep's command into its sweep dir


def sweep_dir_runs(uri: str, sweep_dir: Path) -> list[Run]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("linreg")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_a_killed_sweep_resumes_keeping_its_finished_jobs(tmp_path: Path, store: str) -> None:
    """Killed outright once its first two jobs FINISHED, its command rerun into its sweep dir
    (named as users name them: a quote, spaces): the FINISHED jobs are kept, under the same
    parent, and the others (the one killed mid-run, any never started) run again."""
    from tests.support.store import runs_by_status
    from tests.test_reliability import start_cli, wait_for_running

    sweep_dir = tmp_path / "it's a sweep"
    args = ["-m", "trainer.epochs=20,5000", "optimizer.lr=0.01,0.02", "plots.enabled=false",
            f'hydra.sweep.dir="{sweep_dir}"']  # fmt: skip
    process = start_cli(args, tmp_path, store)
    finished = lambda: runs_by_status(tmp_path / "mlflow.db").get("FINISHED", 0) >= 2  # noqa: E731
    wait_until(finished, 120, "the two 20-epoch jobs FINISHED", interval=0.2, alive=process)
    wait_for_running(tmp_path / "mlflow.db", process, count=2)  # the parent and a 5000-epoch job
    process.kill()  # outright, mid-job
    process.communicate(timeout=60)
    ended = lambda: "RUNNING" not in runs_by_status(tmp_path / "mlflow.db")  # noqa: E731
    wait_until(ended, 60, "the helper ending the killed runs", interval=0.2)  # and all it had
    first = {r.info.run_id: r.info.status for r in sweep_dir_runs(store, tmp_path)}
    # killed outright: its helper ended the parent and the job it was training KILLED
    assert sorted(first.values()) == ["FINISHED", "FINISHED", "KILLED", "KILLED"], first

    result = run_cli(args, tmp_path, store, timeout=300)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "resumed" in output
    skipped = output.count("skipped: FINISHED before")
    parent, children = sweep_runs(store)
    assert parent.info.run_id in first and parent.info.status == "FINISHED"
    assert parent.data.tags["linreg.sweep_dir"] == str(sweep_dir)
    kept = [c for c in children if first.get(c.info.run_id) == "FINISHED"]
    assert len(kept) == skipped >= 2
    latest = {c.data.tags["linreg.config_hash"]: c  # one per job, its last attempt
              for c in sorted(children, key=lambda c: c.info.start_time)}  # fmt: skip
    assert len(latest) == 4 and parent.data.metrics["jobs_total"] == 4
    assert parent.data.metrics["jobs_finished"] == 4
    rerun = [c for c in latest.values() if c.info.run_id not in first]
    assert len(rerun) == 4 - skipped and "3" in {c.data.tags["linreg.job_num"] for c in rerun}
    assert all(points(store, c, "loss") == 5000 for c in rerun)
    assert (sweep_dir / "summary.csv").is_file()


def test_a_sweep_dir_in_use_or_holding_another_sweep_is_refused(tmp_path: Path, store: str) -> None:
    """A sweep dir is one sweep's: while its sweep runs, the same sweep started again is
    refused (it would resume it twice at once); SIGTERM ends the running sweep's child and parent
    KILLED; and a different sweep into its dir is refused too, in one line, adding no run."""
    from tests.test_reliability import start_endless_sweep, wait_for_points

    sweep_dir = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    first = start_endless_sweep(tmp_path, store)  # optimizer.lr=0.01,0.02 into tmp_path / "sweep"
    try:
        wait_for_points(tmp_path / "mlflow.db", first)  # its first job trains
        in_use = run_cli(["-m", "optimizer.lr=0.01,0.02", *FAST, sweep_dir], tmp_path, store)
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
    assert in_use.returncode == 2
    assert "is in use by another sweep" in in_use.stderr, in_use.stderr
    assert first.returncode == 128 + signal.SIGTERM, stderr
    runs = sweep_dir_runs(store, tmp_path)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}  # parent and child

    result = run_cli(["-m", "optimizer.lr=0.03,0.04", *FAST, sweep_dir], tmp_path, store)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "holds another sweep" in lines[0], result.stderr
    assert len(sweep_dir_runs(store, tmp_path)) == 2


def test_a_job_that_vanishes_is_marked_killed_when_its_sweep_ends(
    tmp_path: Path, store: str
) -> None:
    """kill -9 of a joblib worker mid-job: nothing tells its run; the sweep's end does."""
    from tests.test_reliability import start_cli, wait_for_running

    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.01,0.02",
            "trainer.epochs=100000000", "plots.enabled=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    launcher = start_cli(args, tmp_path, store)
    wait_for_running(tmp_path / "mlflow.db", launcher, count=3)  # the parent and both jobs
    workers = subprocess.run(
        ["pgrep", "-P", str(launcher.pid), "-f", "LokyProcess"], capture_output=True, text=True
    ).stdout.split()
    assert workers, "no joblib worker found"
    os.kill(int(workers[0]), signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 1, stderr
    parent, children = sweep_runs(store)
    assert parent.info.status == "FAILED" and len(children) == 2
    assert {c.info.status for c in children} == {"KILLED"}
    vanished = [c for c in children if "vanished" in c.data.tags.get("linreg.failure", "")]
    assert vanished and all(c.data.tags["linreg.outcome"] == "interrupted" for c in vanished)
    assert parent.data.metrics["jobs_killed"] == 2
