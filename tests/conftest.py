"""Shared fixtures: a real SQLite MLflow store under tmp_path and real CLI runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.store import assert_nothing_running, empty_store

if TYPE_CHECKING:
    from tests.support.slurm import SlurmCluster

REPO = Path(__file__).resolve().parent.parent
CONF_DIR = REPO / "conf"

# Ctrl-C reaches the jobs the tests start, as it reaches a user's job in the foreground, even when
# the suite itself runs as a background job: that starts with SIGINT ignored, and its children
# would inherit that (and keep it, as linreg_exp does for a background job).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def cli_env(tracking_uri: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no inherited MLflow/Hydra settings, no TTY bars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "LINREG"))}
    env["PYTHONUNBUFFERED"] = "1"
    if tracking_uri is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str],
    cwd: Path,
    tracking_uri: str | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m linreg_exp ARGS` in `cwd`, its Hydra dirs kept under `cwd`."""
    dirs = []
    if "-m" in args or "--multirun" in args or any(a.startswith("hparams_search=") for a in args):
        if not any(a.startswith("hydra.sweep.dir=") for a in args):
            dirs.append(f"hydra.sweep.dir={cwd / 'multirun'}")
    elif not any(a.startswith("hydra.run.dir=") for a in args):
        dirs.append(f"hydra.run.dir={cwd / 'run'}")
    return subprocess.run(
        [sys.executable, "-m", "linreg_exp", *args, *dirs],
        cwd=cwd,
        env=env if env is not None else cli_env(tracking_uri),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Modules whose tests share what a module-scoped fixture starts (servers, a SLURM cluster, wheel
# venvs, the docs' commands composed and run): each is one pytest-xdist group, run by one worker,
# so that it starts once (a module-scoped fixture runs once a worker that runs any of its tests:
# spread over 3 workers, the docs' fixtures ran 3 times); both SLURM modules are one group (one
# cluster at a time on this machine). Other tests go to any worker.
SHARED_FIXTURES = ("test_slurm", "test_server", "test_packaging", "test_cli", "test_docs")
# The modules that take minutes, longest first: pytest-xdist hands out work in the order it was
# collected, so these start first and the short tests fill in around them.
LONG_MODULES = ("test_slurm", "test_docs", "test_outages", "test_server", "test_packaging",
                "test_sweeps", "test_optuna", "test_cli", "test_concurrency", "test_ui_browser",
                "test_tables", "test_pruning", "test_batched", "test_reliability")  # fmt: skip


def module_of(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    name = module.__name__.rsplit(".", 1)[-1] if module is not None else item.nodeid
    return "test_slurm" if name.startswith("test_slurm") else name


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's, which reads the groups' marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = module_of(item)
        return LONG_MODULES.index(module) if module in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: a module's own order is kept
    for item in items:
        if module_of(item) in SHARED_FIXTURES:
            item.add_marker(pytest.mark.xdist_group(module_of(item)))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """On an xdist worker with --dist loadgroup: every test of SHARED_FIXTURES carries its
    group, or the group's fixtures start once a worker. pytest 9.2 keeps a node's id where
    pytest-xdist 3.8 no longer renames it (`test@group`), and then every group is split
    silently: that cost this suite a SLURM cluster, a wheel and the docs' runs per worker."""
    config = session.config
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        return
    ungrouped = [i.nodeid for i in session.items if module_of(i) in SHARED_FIXTURES
                 and not i.nodeid.endswith(f"@{module_of(i)}")]  # fmt: skip
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {ungrouped[0]} (and {len(ungrouped) - 1} more): "
            "install the pytest that constraints.txt pins"
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """A throw-away single-node SLURM cluster with accounting (tests/slurm.py), per module."""
    from tests.support.slurm import slurm_available, slurm_cluster

    if not slurm_available():
        pytest.skip("needs root and Debian's slurmctld slurmd slurmdbd munge mariadb-server")
    with slurm_cluster() as started:
        yield started


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """An empty SQLite store of the test's own (tests/support/store.py: empty_store); after the
    test, no run in it may be left RUNNING."""
    uri = empty_store(tmp_path / "mlflow.db")
    yield uri
    assert_nothing_running(uri)
