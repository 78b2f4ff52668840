"""Real servers for the slow tests and the bench: an MLflow tracking server and a throw-away
PostgreSQL.

Both bind 127.0.0.1 on a free port, run in their own process group (start_new_session) and are
stopped with os.killpg when their context manager exits, so nothing outlives the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

MLFLOW = Path(sys.executable).with_name("mlflow")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
CHROMIUM = Path("/usr/bin/chromium")


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 15) -> None:
    """Signal the process group `proc` leads; SIGKILL it if it is not gone after `grace` s."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # children (uvicorn workers, postgres backends) may outlive the leader: kill what is left
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class MlflowServer:
    """A started `mlflow server`; `wait_healthy()` blocks until /health answers."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
        self.proc, self.url, self.log_path = proc, url, log_path
        self._healthy = False

    def wait_healthy(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while not self._healthy:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self.proc.returncode}:\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    self._healthy = response.status == 200
            except (urllib.error.URLError, OSError):
                pass
            if not self._healthy:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server not healthy after {timeout:.0f} s:\n{_tail(self.log_path)}"
                    )
                time.sleep(0.3)
        return self.url


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    log_path: Path,
    *,
    artifacts_destination: Path | None = None,
    default_artifact_root: Path | None = None,
    wait: bool = True,
    port: int | None = None,
    cwd: Path | None = None,
    workers: int = 1,
) -> Iterator[MlflowServer]:
    """`mlflow server --workers N` (1 by default) on a free loopback port, killed (its process
    group) on exit.

    With `artifacts_destination` it proxies artifacts (--serve-artifacts). With `wait=False` it
    yields at once, so the caller can work while it boots and call `wait_healthy()` later. `cwd`
    is where it runs (where MLflow's default ./mlartifacts would go).
    """
    port = port or free_port()
    cmd = [
        str(MLFLOW), "server",
        "--backend-store-uri", backend_store_uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    if artifacts_destination is not None:
        cmd += ["--serve-artifacts", "--artifacts-destination", str(artifacts_destination)]
    if default_artifact_root is not None:
        cmd += ["--default-artifact-root", str(default_artifact_root)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # The job runner starts seven huey consumers: CPU this 2-core test machine cannot spare.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        server = MlflowServer(proc, f"http://127.0.0.1:{port}", log_path)
        if wait:
            server.wait_healthy()
        yield server
    finally:
        stop_group(proc)


class PostgresCluster:
    """A throw-away PostgreSQL cluster on a loopback port; `restart` stops it for a while."""

    def __init__(self, root: Path, port: int, user: str, password: str) -> None:
        self.root, self.port, self.user, self.password = root, port, user, password
        self.socket_dir = root
        self._proc: subprocess.Popen[bytes] | None = None

    def uri(self, database: str) -> str:
        """The SQLAlchemy URI MLflow takes as a backend store."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def superuser(self) -> Any:
        """A psycopg2 connection as `postgres`, over the socket in the cluster's dir."""
        import psycopg2

        return psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres"
        )

    def create_database(self, name: str) -> None:
        """A new database owned by the password user."""
        conn = self.superuser()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        finally:
            conn.close()

    def start(self, timeout: float = 60) -> None:
        import psycopg2

        log_path = self.root / "postgres.log"
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(PG_BIN / "postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
                    "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off", "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off", "-c", "max_connections=50",
                ],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,
                **_as_postgres(),
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self._proc.returncode}:\n{_tail(log_path)}"
                )
            try:
                self.superuser().close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not up after {timeout:.0f} s:\n{_tail(log_path)}"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self._proc is not None:
            stop_group(self._proc, signal.SIGINT)  # SIGINT: the postmaster's "fast" shutdown
            self._proc = None

    def restart(self, down_for: float) -> None:
        """Stop the database, leave it down `down_for` seconds, start it on the same port."""
        self.stop()
        time.sleep(down_for)
        self.start()


def postgres_available() -> bool:
    return (PG_BIN / "initdb").exists()


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that run a command as `postgres` (initdb refuses root); no `runuser`,
    whose watching parent delays a signalled exit by 2 s."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@contextmanager
def postgres_cluster(
    user: str = "linreg", password: str = "s3cret", timeout: float = 60
) -> Iterator[PostgresCluster]:
    """initdb a cluster in a fresh temp dir, run it on a free loopback port, remove it after.

    TCP logins need the password (scram-sha-256); the Unix socket in the cluster's dir trusts
    the superuser `postgres`, which creates `user` and, via `create_database`, its databases.
    """
    root = Path(tempfile.mkdtemp(prefix="linreg-pg-"))
    cluster = PostgresCluster(root, free_port(), user, password)
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        subprocess.run(
            [
                str(PG_BIN / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ],
            check=True, capture_output=True, timeout=timeout, cwd=root, **_as_postgres(),
        )  # fmt: skip
        cluster.start(timeout)
        conn = cluster.superuser()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        finally:
            conn.close()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
