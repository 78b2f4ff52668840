"""The throw-away SLURM cluster of tests/slurm.py: jobs run, and sacct knows how they ended."""

from __future__ import annotations

import time

import pytest

from tests.support.slurm import SlurmCluster

pytestmark = pytest.mark.slow


def sbatch(cluster: SlurmCluster, command: str) -> str:
    return cluster.run(
        "sbatch", "--parsable", "-p", cluster.partition, "-o", "/dev/null", "--wrap", command
    ).stdout.strip()


def wait_state(cluster: SlurmCluster, job_id: str, prefix: str, timeout: float) -> str:
    """The job's State in sacct once it starts with `prefix` (CANCELLED reads "CANCELLED by 0")."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = cluster.run("sacct", "-j", job_id, "-n", "-X", "-o", "State").stdout.strip()
        if state.startswith(prefix):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {state!r}, not {prefix} after {timeout:.0f} s")


def test_a_finished_job_is_completed_in_sacct(cluster: SlurmCluster) -> None:
    wait_state(cluster, sbatch(cluster, "sleep 1"), "COMPLETED", timeout=30)


def wait_running(cluster: SlurmCluster, job_id: str, timeout: float) -> None:
    """squeue says RUNNING about 1 s after sbatch; sacct only some 4 s later (slurmctld sends
    job starts to slurmdbd in batches), but it has the end of a job at once."""
    deadline = time.monotonic() + timeout
    while cluster.run("squeue", "-h", "-j", job_id, "-o", "%T").stdout.strip() != "RUNNING":
        assert time.monotonic() < deadline, f"job {job_id} not running after {timeout:.0f} s"
        time.sleep(0.2)


def test_a_cancelled_job_is_cancelled_in_sacct(cluster: SlurmCluster) -> None:
    job_id = sbatch(cluster, "sleep 600")
    wait_running(cluster, job_id, timeout=30)
    cluster.run("scancel", job_id)
    wait_state(cluster, job_id, "CANCELLED", timeout=30)
