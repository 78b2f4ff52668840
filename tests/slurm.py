"""Kept so that older references (the docs, `make system-deps`) resolve: the throw-away SLURM
cluster lives in tests/support/slurm.py, where the tests import it from."""

from tests.support.slurm import (
    CLUSTER_NAME,
    KILL_WAIT,
    MIN_JOB_AGE,
    PARTITION,
    SlurmCluster,
    slurm_available,
    slurm_cluster,
)

__all__ = [
    "CLUSTER_NAME",
    "KILL_WAIT",
    "MIN_JOB_AGE",
    "PARTITION",
    "SlurmCluster",
    "slurm_available",
    "slurm_cluster",
]
