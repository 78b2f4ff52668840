"""Kept so that older references resolve: the servers live in tests/support/servers.py.

Tests import from `tests.support.servers` (and `tests.support.ports`), one place shared with
the bench.
"""

from tests.support.ports import free_port
from tests.support.servers import (
    CHROMIUM,
    MLFLOW,
    PG_BIN,
    MlflowServer,
    PostgresCluster,
    mlflow_server,
    postgres_available,
    postgres_cluster,
    stop_group,
)

__all__ = [
    "CHROMIUM",
    "MLFLOW",
    "PG_BIN",
    "MlflowServer",
    "PostgresCluster",
    "free_port",
    "mlflow_server",
    "postgres_available",
    "postgres_cluster",
    "stop_group",
]
