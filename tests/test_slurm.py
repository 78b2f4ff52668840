"""Sweeps on a real (throw-away, single-node) SLURM cluster through hydra-submitit-launcher:
a sweep lands and resumes; scancel, a time limit and a requeue end runs cleanly, never RUNNING.

The cluster (tests/slurm.py) has accounting, as a real one does: submitit learns from `sacct`
how a job ended. Jobs run as separate processes on this machine and record into a SQLite file
here, as they would into a tracking server on a real cluster.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from tests.support.processes import lower_priority, pids_running
from tests.support.slurm import SlurmCluster
from tests.support.store import empty_store

pytestmark = pytest.mark.slow

FAST = ["plots.enabled=false", "trainer.epochs=100"]
ENDLESS = ["plots.enabled=false", "trainer.epochs=100000000"]


def slurm_args(cluster: SlurmCluster, sweep_dir: Path) -> list[str]:
    return [
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}",
        "hydra.launcher.mem_gb=1",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def start_sweep(cluster: SlurmCluster, args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    """The launching process, on this machine (a login node), with the cluster's environment."""
    env = {k: v for k, v in cluster.env.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    db = tmp_path / "mlflow.db"
    if "mlflow.tracking_uri=offline" not in args and not db.exists():
        empty_store(db)
    env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "linreg_exp", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def runs(tmp_path: Path) -> tuple[Run, list[Run]]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    everything = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    (parent,) = [r for r in everything if r.data.tags.get("linreg.kind") == "sweep"]
    return parent, [r for r in everything if r is not parent]


def statuses(db: Path) -> list[tuple[str, str, int]]:
    """(run name, status, loss points) of every child, read straight from the file."""
    if not db.exists():
        return []
    query = """select r.name, r.status,
                      (select count(*) from metrics m where m.run_uuid = r.run_uuid
                       and m.key = 'loss')
               from runs r join tags t on t.run_uuid = r.run_uuid
               where t.key = 'mlflow.parentRunId'"""
    try:
        with sqlite3.connect(db) as connection:
            return [(str(a), str(b), int(c)) for a, b, c in connection.execute(query)]
    except sqlite3.OperationalError:  # the schema is still being made
        return []


def wait_for(condition: str, check: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not {condition} after {timeout:.0f} s"
        time.sleep(0.3)


def squeue_ids(cluster: SlurmCluster) -> list[str]:
    return cluster.run("squeue", "-h", "-o", "%i").stdout.split()


def test_a_slurm_sweep_lands_prunes_and_resumes(cluster: SlurmCluster, tmp_path: Path) -> None:
    """A grid with `sweep.pruner=asha`, one job at a time: the second job, hopeless, reports
    to the sweep's Optuna study on the shared disk after the first completed, and is pruned at
    its first rung; it ends FINISHED, with the epochs it trained. Rerun, nothing trains again."""
    # one at a time: SLURM starts a throttled array's tasks in index order, so job 0 reaches
    # each rung first (alone there, it goes on) and job 1 meets it there
    args = [*slurm_args(cluster, tmp_path / "sweep"), "hydra.launcher.array_parallelism=1",
            "optimizer.lr=0.01,0.0001", "sweep.pruner=asha", "sweep.report_every=10",
            *FAST]  # fmt: skip
    code, output = finish(start_sweep(cluster, args, tmp_path))
    assert code == 0, output
    parent, children = runs(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.tags["linreg.launcher"] == (
        "SlurmLauncher"
    )
    assert parent.data.metrics["jobs_pruned"] == 1
    by_name = {c.info.run_name: c for c in children}
    assert sorted(by_name) == ["lr=0.0001", "lr=0.01"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    pruned = by_name["lr=0.0001"]
    assert pruned.data.tags["linreg.outcome"] == "pruned"
    assert pruned.data.tags["linreg.pruned_at_epoch"] == "9"  # its last step: 10 epochs
    assert by_name["lr=0.01"].data.tags["linreg.outcome"] == "completed"
    for child, epochs in ((by_name["lr=0.01"], 100), (pruned, 10)):
        assert child.info.status == "FINISHED"
        for key in ("loss", "weight", "bias"):
            steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, key))
            assert steps == list(range(epochs))
        logs = {a.path.rsplit("_", 1)[-1] for a in client.list_artifacts(child.info.run_id, "logs")}
        assert logs == {"log.out", "log.err"}  # submitit's stdout and stderr of the job

    code, output = finish(start_sweep(cluster, args, tmp_path))  # the same command: resumed
    assert code == 0, output
    again, children_again = runs(tmp_path)
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert {c.info.run_id for c in children_again} == {c.info.run_id for c in children}


def test_an_offline_slurm_sweep_is_spooled_on_the_cluster_and_synced_later(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Compute nodes without a route to the tracking server: each job spools in its own
    output dir, the launcher spools the parent; one `linreg-exp sync` delivers the sweep (of
    one job: a job's spool and the parent's are what is tested; two jobs cost a minute's CPU)."""
    sweep_dir = tmp_path / "sweep"
    args = [*slurm_args(cluster, sweep_dir), "optimizer.lr=0.01", *FAST]
    code, output = finish(start_sweep(cluster, [*args, "mlflow.tracking_uri=offline"], tmp_path))
    assert code == 0, output
    assert not (tmp_path / "mlflow.db").exists()  # nothing was sent anywhere
    assert f"linreg-exp sync {sweep_dir} --to URI" in output
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    synced = subprocess.run(
        [sys.executable, "-m", "linreg_exp", "sync", str(sweep_dir), "--to", store],
        capture_output=True, text=True, timeout=300, env=cluster.env,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    parent, children = runs(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 1
    assert parent.data.tags["linreg.best_run_id"] in {c.info.run_id for c in children}
    assert len(children) == 1
    client = MlflowClient(store)
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "loss"))
        assert steps == list(range(100))
        logs = {a.path.rsplit("_", 1)[-1] for a in client.list_artifacts(child.info.run_id, "logs")}
        assert logs == {"log.out", "log.err"}


def test_scancel_ends_every_run_killed_and_the_launcher_exits(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    """(One job: every job of a sweep is cancelled alike; the parent is what it adds.)"""
    args = [*slurm_args(cluster, tmp_path / "sweep"), "optimizer.lr=0.01", *ENDLESS]
    launcher = start_sweep(cluster, args, tmp_path)
    db = tmp_path / "mlflow.db"
    try:
        wait_for("the job streaming", lambda: sum(n > 100 for *_, n in statuses(db)) == 1)
        streamed = {name: n for name, _, n in statuses(db)}
        cluster.run("scancel", *squeue_ids(cluster))
        wait_for(
            "its child KILLED",
            lambda: {s for _, s, _ in statuses(db)} == {"KILLED"},
            timeout=cluster.kill_wait + 30,
        )
        code, output = finish(launcher, timeout=120)  # at submitit's next sacct poll
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert code != 0
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    parent, children = runs(tmp_path)
    assert parent.info.status in ("KILLED", "FAILED")
    for child in children:
        assert child.data.tags["linreg.stopped_by"] == "SIGTERM"
        assert child.data.tags["linreg.outcome"] == "interrupted"
        # the job ended its run itself, on SIGTERM, before SLURM's SIGKILL: a job killed first
        # leaves its run to its helper, which says so (and knows no stopping signal)
        assert "ended before reporting" not in child.data.tags.get("linreg.failure", "")
    assert all(n >= streamed[name] for name, _, n in statuses(db))  # the epochs streamed kept


def test_the_time_limit_ends_the_run_killed_and_says_so(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    args = [
        *slurm_args(cluster, tmp_path / "sweep"),
        # SIGUSR2 60 s before the limit. slurmctld checks every 30 s and sends it once fewer than
        # 60 + 30 s are left, so 30 to 60 s into the job: after its run exists, well before 2 min
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=60",
        "optimizer.lr=0.01",
        *ENDLESS,
    ]
    launcher = start_sweep(cluster, args, tmp_path)
    db = tmp_path / "mlflow.db"
    try:  # the launcher learns of it at submitit's next sacct poll: the scancel test waits it out
        wait_for("the job streaming", lambda: any(n > 0 for *_, n in statuses(db)))
        for job in pids_running(str(tmp_path / "sweep" / ".submitit")):
            lower_priority(job)  # it only waits for the limit now (tests/support/processes.py)
        wait_for("the job's run KILLED", lambda: [s for _, s, _ in statuses(db)] == ["KILLED"],
                 timeout=240)  # fmt: skip
    finally:
        launcher.terminate()
        finish(launcher, timeout=120)
    parent, (child,) = runs(tmp_path)
    assert child.info.status == "KILLED"
    assert child.data.tags["linreg.stopped_by"] == "SLURM: time limit"
    assert parent.info.status in ("KILLED", "FAILED")
    assert statuses(db)[0][2] > 0


def test_a_requeued_job_ends_its_first_run_killed_and_runs_again(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    args = [*slurm_args(cluster, tmp_path / "sweep"), "optimizer.lr=0.01", "trainer.epochs=15000",
            "plots.enabled=false"]  # fmt: skip
    launcher = start_sweep(cluster, args, tmp_path)
    db = tmp_path / "mlflow.db"
    try:
        wait_for("the job streaming", lambda: any(n > 100 for *_, n in statuses(db)))
        for job in pids_running(str(tmp_path / "sweep" / ".submitit")):
            lower_priority(job)  # its first attempt only waits for the requeue now
        (job_id,) = squeue_ids(cluster)
        cluster.run("scontrol", "requeue", job_id)
        # SLURM holds a requeued job back for a while (its begin time); let it go at once
        wait_for(
            "the job requeued",
            lambda: (
                cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() == "PENDING"
            ),
        )
        cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        code, output = finish(launcher, timeout=240)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert code == 0, output
    parent, children = runs(tmp_path)
    by_status = sorted(c.info.status for c in children)
    assert by_status == ["FINISHED", "KILLED"], by_status
    assert parent.info.status == "FINISHED"  # the job's latest attempt finished
    assert parent.data.metrics["jobs_total"] == 1 and parent.data.metrics["jobs_finished"] == 1
    assert os.environ.get("SLURM_JOB_ID") is None  # nothing leaked into this process
