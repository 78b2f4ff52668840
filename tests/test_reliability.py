"""Bad input is rejected in one line; interruptions and failures leave a consistent store."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf.errors import OmegaConfBaseException

from linreg_exp.app import register_configs
from linreg_exp.errors import ConfigError
from linreg_exp.sweeps.batched import JOBS_PER_WRITER
from tests.conftest import CONF_DIR, cli_env, run_cli
from tests.support.ports import free_port
from tests.support.store import assert_nothing_running, empty_store, points_stored, runs_by_status
from tests.support.waiting import wait_until


def run_count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as connection:
        return int(connection.execute("select count(*) from runs").fetchone()[0])


# One run per path a bad input takes through the command (Hydra's composition, the schema's check,
# the store, a sweep's, --cfg): exit 2, one line, and no run or output dir left behind. Which line
# each bad value gives is tests/test_errors.py's (in-process, every key).
# (A value the schema refuses, optimizer.lr=0, is tests/test_errors.py's, in-process, leaving
# nothing; a store that cannot be opened at all, test_unreachable_tracking_server_fails_fast's.)
BAD_INPUT = [
    (["-m", "optimizer.lr=0.1,0.2", "sweep.pruner=asap"], "sweep.pruner=asap"),  # no parent
    (["-m", "loss=l1,l3"], "loss=l3"),
    (
        [
            "-m",
            "hydra/launcher=batched",
            "optimizer.lr=0.1,0.2",
            "mlflow.tracking_uri=sqlite:////proc/no/dir/m.db",
        ],
        "mlflow.",
    ),  # the store, found unusable once the sweep started: its sweep dir is removed
    (
        [
            "-m",
            "hydra/launcher=joblib",
            "optimizer.lr=0.1,0.2",
            "mlflow.tracking_uri=sqlite:////proc/no/dir/m.db",
        ],
        "mlflow.",
    ),  # the store, unusable as the sweep opens its parent (its jobs need its id)
]
if not torch.cuda.is_available():
    BAD_INPUT.append((["device=cuda"], "device=cuda"))


@pytest.mark.slow
@pytest.mark.parametrize(("args", "named"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], named: str) -> None:
    db = tmp_path / "mlflow.db"
    # nested, as Hydra's default outputs/runs/DATE/TIME: none of it is left
    kind = ("hydra.sweep.dir", "multirun") if "-m" in args else ("hydra.run.dir", "run")
    args = [*args, f"{kind[0]}={tmp_path / kind[1] / 'date' / 'time'}"]
    result = run_cli(args, tmp_path, f"sqlite:///{db}", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and named in lines[0]
    assert run_count(db) == 0
    assert not (tmp_path / "run").exists() and not (tmp_path / "multirun").exists()
    # nor a store: a launch rejected before its first run never asks for one (recorder.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_batched_sweep_whose_every_job_is_refused_leaves_nothing(tmp_path: Path) -> None:
    """More jobs than one writer takes (two writers start while they compose): each is refused
    by the schema, and no store, parent or sweep dir is made."""
    seeds = JOBS_PER_WRITER // 2 + 1
    args = ["-m", "hydra/launcher=batched", "optimizer.lr=0,-1", f"seed=range(0,{seeds})",
            f"hydra.sweep.dir={tmp_path / 'multirun'}"]  # fmt: skip
    result = run_cli(args, tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "error: optimizer.lr=0.0 is not allowed" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_read_only_directory_is_one_clear_line(tmp_path: Path) -> None:
    """/sys stands for a directory the user cannot write to (this suite runs as root)."""
    result = subprocess.run([sys.executable, "-m", "linreg_exp"], cwd="/sys", env=cli_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), result.stderr


@pytest.mark.slow
def test_a_sweep_rejected_by_its_launcher_leaves_no_visible_run(tmp_path: Path, store: str) -> None:
    """joblib's sweep opens its parent before Hydra validates the swept values: it is deleted."""
    result = run_cli(["-m", "hydra/launcher=joblib", "loss=l1,l3"], tmp_path, store, timeout=120)
    assert result.returncode == 2 and "loss=l3 is not an option" in result.stderr
    client = MlflowClient(store)
    assert client.search_runs([client.get_experiment_by_name("linreg").experiment_id]) == []


@pytest.mark.slow
def test_unreachable_tracking_server_fails_fast(tmp_path: Path) -> None:
    """The store cannot be opened: one line naming it, exit 2, and no run dir left (nested, as
    Hydra's default outputs/runs/DATE/TIME), in seconds."""
    started = time.monotonic()
    uri = f"http://127.0.0.1:{free_port()}"
    args = [f"mlflow.tracking_uri={uri}", f"hydra.run.dir={tmp_path / 'run' / 'date' / 'time'}"]
    result = run_cli(args, tmp_path, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot open the tracking store" in lines[0], result.stderr
    assert f"mlflow.tracking_uri={uri}" in lines[0] and "Traceback" not in result.stdout
    assert elapsed < 60, elapsed  # MLflow's own retries would take some 4 minutes
    assert sorted(tmp_path.iterdir()) == []


def wait_for_running(db: Path, process: subprocess.Popen[str], count: int = 1) -> None:
    """Until `count` runs are RUNNING in the job's store (read from the file, which the job is
    still creating); a hang guard of 120 s, some 20x what it takes."""
    wait_until(lambda: runs_by_status(db).get("RUNNING", 0) >= count, 120,
               f"{count} runs RUNNING", interval=0.2, alive=process)  # fmt: skip


def start_cli(args: list[str], cwd: Path, uri: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "linreg_exp", *args],
        cwd=cwd,
        env=cli_env(uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_endless_run(tmp_path: Path, store: str) -> subprocess.Popen[str]:
    """A single run of 1e8 epochs, returned once its MLflow run is RUNNING."""
    process = start_cli(
        ["trainer.epochs=100000000", "plots.enabled=false", f"hydra.run.dir={tmp_path / 'r'}"],
        tmp_path,
        store,
    )
    wait_for_running(tmp_path / "mlflow.db", process)
    return process


def start_endless_sweep(tmp_path: Path, store: str) -> subprocess.Popen[str]:
    """A 2-job sweep of 1e8-epoch jobs, returned once the parent and the first child are RUNNING."""
    process = start_cli(
        [
            "-m",
            "optimizer.lr=0.01,0.02",
            "trainer.epochs=100000000",
            "plots.enabled=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        tmp_path,
        store,
    )
    wait_for_running(tmp_path / "mlflow.db", process, count=2)
    return process


def wait_for_points(db: Path, process: subprocess.Popen[str], more_than: int = 0) -> int:
    """Until the newest run has more than `more_than` loss points stored (epochs reach the
    store about once a second: 60 s is only a hang guard); how many it has."""

    def stored() -> int:
        count = points_stored(db)
        return count if count > more_than else 0

    return wait_until(stored, 60, f"more than {more_than} points stored", alive=process)


@pytest.mark.slow
def test_ctrl_c_ends_the_run_killed_with_every_epoch_done_streamed_while_it_trained(
    tmp_path: Path, store: str
) -> None:
    """A single run's stop, end to end, once (SIGTERM: a sweep's, below; each signal's tag and
    exit code: tests/test_lifecycle.py and tests/test_errors.py, in-process)."""
    signum = signal.SIGINT
    process = start_endless_run(tmp_path, store)
    # epochs reach the store while the (endless) job still trains: streamed, not at its end
    first = wait_for_points(tmp_path / "mlflow.db", process)
    wait_for_points(tmp_path / "mlflow.db", process, more_than=max(first, 1000))
    process.send_signal(signum)
    # a stop, not a hang: 60 s is only a hang guard; make bench times the 5 s promise
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    done = int(re.search(r"interrupted after (\d+) epochs", stderr).group(1))  # type: ignore[union-attr]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["linreg.outcome"] == "interrupted"
    assert run.data.tags["linreg.stopped_by"] == signum.name
    for key in ("loss", "weight", "bias"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == list(range(done)), f"{key}: {len(steps)} of {done} epochs stored"


def wait_until_ended(store: str, count: int = 1) -> list[Run]:
    """The runs in the store once none is RUNNING (the helper ends them after a hard kill)."""
    client = MlflowClient(store)
    experiment_id = client.get_experiment_by_name("linreg").experiment_id

    def ended() -> tuple[list[Run]] | None:
        runs = client.search_runs([experiment_id])
        return None if "RUNNING" in {r.info.status for r in runs} else (runs,)

    (runs,) = wait_until(ended, 120, "no run left RUNNING", interval=0.2)
    assert len(runs) == count
    return runs


@pytest.mark.slow
def test_a_job_killed_outright_ends_killed_with_the_epochs_streamed(
    tmp_path: Path, store: str
) -> None:
    """SIGKILL gives the job no chance to report: its helper ends the run KILLED."""
    process = start_endless_run(tmp_path, store)
    streamed = wait_for_points(tmp_path / "mlflow.db", process, more_than=1000)
    process.kill()
    process.communicate(timeout=60)
    (run,) = wait_until_ended(store)
    assert run.info.status == "KILLED"
    assert "ended before reporting" in run.data.tags["linreg.failure"]
    assert points_stored(tmp_path / "mlflow.db") >= streamed


# SIGTERM in a sweep is tests/test_sweeps.py's (a sweep dir in use); a sweep killed outright,
# its (resumed afterwards).


@pytest.mark.slow
def test_a_failing_job_fails_its_child_and_parent_but_not_the_others(
    tmp_path: Path, store: str
) -> None:
    # NLLLoss cannot take float targets: the job raises inside training
    result = run_cli(
        [
            "-m",
            "loss._target_=torch.nn.L1Loss,torch.nn.NLLLoss",
            "trainer.epochs=50",
            "plots.enabled=false",
        ],
        tmp_path,
        store,
    )
    assert result.returncode == 1
    assert "error: RuntimeError" in result.stderr
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("linreg").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("linreg.kind") == "sweep")

    def loss_of(run: Run) -> str:  # its swept loss (Hydra's _target_ is no MLflow param)
        overrides = run.data.tags["linreg.overrides"].split()
        return next(o.partition("=")[2] for o in overrides if o.startswith("loss._target_="))

    children = {loss_of(r): r for r in runs if r is not parent}
    assert children["torch.nn.L1Loss"].info.status == "FINISHED"
    failed = children["torch.nn.NLLLoss"]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["linreg.outcome"] == "error"
    assert "RuntimeError" in failed.data.tags["linreg.error"]
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs_failed"] == 1
    job_log = (tmp_path / "multirun" / "1" / "linreg_exp.log").read_text()
    assert "job 1 failed" in job_log and "RuntimeError" in job_log


# ---- property: any override values give a FINISHED run, a recorded divergence, or a rejection


def run_in_process(overrides: list[str], tmp_path: Path, uri: str) -> float:
    """The job as a plain function of a real Hydra composition and a plain description: no
    subprocess, no Hydra state."""
    from linreg_exp.job import run_here
    from linreg_exp.jobspec import Job
    from linreg_exp.schema import typed

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=[*overrides, f"mlflow.tracking_uri={uri}", "plots.enabled=false"]
        )
    return run_here(typed(cfg), Job(output_dir=tmp_path, tracking_uri=uri)).objective


@pytest.fixture(scope="module")
def property_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("property")
    return path, empty_store(path / "mlflow.db")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lr=st.one_of(st.floats(-1, 1), st.sampled_from([0.0, 1e-4, 0.5, 2.0])),
    num_data=st.integers(-2, 200),
    noise_std=st.floats(-1, 3),
    epochs=st.integers(-1, 15),
    batch_size=st.one_of(st.none(), st.integers(-1, 250)),
    loss=st.sampled_from(["l1", "mse", "huber"]),
)
def test_property_finished_diverged_or_cleanly_rejected(
    property_store: tuple[Path, str],
    lr: float,
    num_data: int,
    noise_std: float,
    epochs: int,
    batch_size: int | None,
    loss: str,
) -> None:
    path, uri = property_store
    overrides = [
        f"optimizer.lr={lr!r}",
        f"data.num_data={num_data}",
        f"data.noise_std={noise_std!r}",
        f"trainer.epochs={epochs}",
        f"trainer.batch_size={'null' if batch_size is None else batch_size}",
        f"loss={loss}",
    ]
    before = run_count(path / "mlflow.db")
    try:
        run_in_process(overrides, path, uri)
    except (ConfigError, HydraException, OmegaConfBaseException):
        assert run_count(path / "mlflow.db") == before  # rejected before any run exists
        return
    client = MlflowClient(uri)
    run = client.search_runs(
        [client.get_experiment_by_name("linreg").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    points = {
        k: len(client.get_metric_history(run.info.run_id, k)) for k in ("loss", "weight", "bias")
    }
    if run.info.status == "FINISHED":
        assert points == {"loss": epochs, "weight": epochs, "bias": epochs}
    else:
        assert run.info.status == "FAILED" and run.data.tags["linreg.outcome"] == "diverged"
        epoch = int(run.data.tags["linreg.diverged_at_epoch"])  # recorded, with those before
        assert points == {"loss": epoch + 1, "weight": epoch + 1, "bias": epoch + 1}
    assert_nothing_running(uri)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
