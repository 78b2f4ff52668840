"""Your own data: CSV and Parquet tables with any number of features.

Unit tests read real files written here (data.load, in milliseconds); the end-to-end tests run
`python -m linreg_exp` on them against a real SQLite store under tmp_path.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from linreg_exp.data import load
from linreg_exp.errors import ConfigError
from linreg_exp.schema import TableConfig
from linreg_exp.train import Scaling
from tests.conftest import cli_env, run_cli
from tests.support.store import empty_store, points, sweep_runs

FEATURES = ("a", "b", "c")
TRUE = (1.5, -2.0, 0.5)


def write_table(path: Path, rows: int = 120, seed: int = 0) -> pd.DataFrame:
    """A table with three numeric features, a text column and a target; CSV or Parquet by
    the suffix."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.uniform(-3, 3, rows).round(3) for name in FEATURES})
    frame["city"] = rng.choice(["north", "south"], rows)
    noise = rng.laplace(0, 0.3, rows)
    frame["y"] = (frame[list(FEATURES)].to_numpy() @ np.array(TRUE) + 4.0 + noise).round(4)
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return frame


def table(path: Path, **keys: object) -> TableConfig:
    fmt = "parquet" if path.suffix == ".parquet" else "csv"
    settings: dict[str, object] = {"format": fmt, "path": str(path), "target": "y", **keys}
    return TableConfig(**settings)  # type: ignore[arg-type]


# ---------------------------------------------------------------- reading a table


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_is_split_by_seed_with_every_numeric_column_a_feature(
    tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"t{suffix}"
    write_table(path)
    splits = load(table(path), 0, tmp_path, "csv")
    assert splits.features == FEATURES  # the text column is no feature
    assert (splits.train.rows, splits.val.rows) == (96, 24)
    assert load(table(path), 0, tmp_path, "csv").train.x.equal(splits.train.x)
    assert not load(table(path), 1, tmp_path, "csv").train.x.equal(splits.train.x)
    source = splits.source
    assert source["rows"] == 120 and source["columns"] == ["a", "b", "c", "city", "y"]
    assert len(source["sha256"]) == 64 and source["split"]["val_rows"] == 24


def test_one_byte_more_changes_the_recorded_digest(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_table(path)
    before = load(table(path), 0, tmp_path, "csv")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\n ", 1))  # one byte
    after = load(table(path), 0, tmp_path, "csv")
    assert after.digest != before.digest and after.source["sha256"] != before.source["sha256"]


def test_a_held_out_file_and_a_relative_path(tmp_path: Path) -> None:
    write_table(tmp_path / "train.csv", seed=1)
    write_table(tmp_path / "val.csv", rows=30, seed=2)
    cfg = TableConfig(path="train.csv", target="y", features=["c", "a"], val_path="val.csv")
    splits = load(cfg, 0, tmp_path, "csv")
    assert splits.features == ("c", "a")
    assert (splits.train.rows, splits.val.rows) == (120, 30)


@pytest.mark.parametrize(
    ("keys", "edit", "message"),
    [
        ({"path": "nowhere.csv"}, None, r"data.path=.*nowhere.csv: no such file"),
        ({"target": "z"}, None, r"data.target=z is not a column of t.csv; columns: a, b, c"),
        ({"features": ["a", "q"]}, None, r"data.features: 'q' is not a column of t.csv"),
        ({"features": ["a", "city"]}, None, r"data.features: column 'city' .* is not numeric"),
        ({}, "nan", r"data.path: column 'b' of t.csv has an empty or NaN cell, first at row 5 "),
        ({"val_fraction": 0.001}, None, r"data.val_fraction=0.001 leaves an empty validation"),
        ({"val_fraction": 0.999}, None, r"data.val_fraction=0.999 leaves an empty training"),
    ],
)
def test_an_unusable_table_is_one_line_naming_the_key(
    tmp_path: Path, keys: dict[str, object], edit: str | None, message: str
) -> None:
    path = tmp_path / "t.csv"
    frame = write_table(path)
    if edit == "nan":
        frame.loc[4, "b"] = None
        frame.to_csv(path, index=False)
    cfg = table(path, **keys) if "path" not in keys else TableConfig(target="y", **keys)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message) as raised:
        load(cfg, 0, tmp_path, "csv")
    assert "\n" not in str(raised.value)


def test_standardizing_a_constant_feature_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame = write_table(path)
    frame["b"] = 7.0
    frame.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"model.standardize=true: feature 'b' is constant"):
        Scaling.of(load(table(path), 0, tmp_path, "csv").train)


# ---------------------------------------------------------------- end to end


def final_model(uri: str) -> tuple[list[float], float, dict[str, float]]:
    run = MlflowClient(uri).search_runs(["1"])[0]
    metrics = run.data.metrics
    return [metrics[f"final_weight.{n}"] for n in FEATURES], metrics["final_bias"], metrics


@pytest.mark.slow
def test_a_csv_trains_to_numpys_least_squares_with_its_features_named(
    tmp_path: Path, store: str
) -> None:
    path = tmp_path / "t.csv"
    frame = write_table(path)
    args = ["data=csv", f"data.path={path}", "data.target=y", "loss=mse", "model.standardize=true",
            "optimizer.lr=0.3", "trainer.epochs=600", "plots.enabled=false"]  # fmt: skip
    result = run_cli(args, tmp_path, store)
    assert result.returncode == 0, result.stderr
    splits = load(table(path), 0, tmp_path, "csv")
    design = np.c_[splits.train.x.double().numpy(), np.ones(splits.train.rows)]
    target = splits.train.y.double().flatten().numpy()
    expected = np.linalg.lstsq(design, target, rcond=None)[0]
    weights, bias, metrics = final_model(store)
    assert [*weights, bias] == pytest.approx(expected.tolist(), abs=1e-3)
    assert [metrics[f"ols_weight.{n}"] for n in FEATURES] == pytest.approx(expected[:3], abs=1e-9)
    run = MlflowClient(store).search_runs(["1"])[0]
    history = MlflowClient(store).get_metric_history(run.info.run_id, "weight.a")
    assert len(history) == 600  # every epoch, under its feature's name
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.digest == splits.digest and str(path) in dataset.source

    del frame


@pytest.mark.slow
def test_a_relative_path_from_a_subdirectory_and_its_rerun(tmp_path: Path, store: str) -> None:
    (tmp_path / "data").mkdir()
    write_table(tmp_path / "data" / "t.parquet")
    work = tmp_path / "work"
    work.mkdir()
    args = ["data=parquet", "data.path=../data/t.parquet", "data.target=y", "trainer.epochs=50",
            "plots.enabled=false", "mlflow.system_metrics=false"]  # fmt: skip
    first = run_cli(args, work, store)
    assert first.returncode == 0, first.stderr
    run = MlflowClient(store).search_runs(["1"])[0]
    command = run.data.tags["linreg.command"]
    assert f"data.path={tmp_path / 'data' / 't.parquet'}" in command  # from anywhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rerun = subprocess.run(
        [sys.executable, *shlex.split(command)[1:], f"hydra.run.dir={elsewhere / 'run'}"],
        cwd=elsewhere, env=cli_env(store), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    runs = MlflowClient(store).search_runs(["1"], order_by=["attributes.start_time"])
    assert len(runs) == 2
    first_metrics, second_metrics = (r.data.metrics for r in runs)
    kept = ("train_seconds",)
    assert {k: v for k, v in first_metrics.items() if k not in kept} == {
        k: v for k, v in second_metrics.items() if k not in kept
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # one a place a table is checked (reading it; scaling it), before the run exists: what
        # each bad table says is test_an_unusable_table_is_one_line_naming_the_key's, in-process
        (["data.path=holes.csv"], "has an empty or NaN cell, first at row 3"),
        (["data.path=flat.csv", "model.standardize=true"], "feature 'b' is constant"),
    ],
)
def test_bad_tables_exit_2_with_one_line_and_leave_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    frame = write_table(tmp_path / "t.csv")
    holes = frame.copy()
    holes.loc[2, "a"] = None
    holes.to_csv(tmp_path / "holes.csv", index=False)
    flat = frame.copy()
    flat["b"] = 1.0
    flat.to_csv(tmp_path / "flat.csv", index=False)
    if not any(a.startswith("data.target") for a in args):
        args = [*args, "data.target=y"]
    for launch in ([],):  # sweeps: their jobs are rejected one by one (docs/troubleshooting.md)
        result = run_cli(["data=csv", *launch, *args], tmp_path, f"sqlite:///{tmp_path}/m.db")
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, result.stderr
        assert len(errors) == 1 and message in errors[0], result.stderr
        assert not (tmp_path / "run").exists() and not (tmp_path / "multirun").exists()
        db = tmp_path / "m.db"
        assert not db.exists() or not MlflowClient(f"sqlite:///{db}").search_runs(["0", "1"])


@pytest.mark.slow
def test_the_basic_and_batched_launchers_agree_on_a_three_feature_grid(tmp_path: Path) -> None:
    """Config by config, every loss and optimizer the trainer vectorises: the same numbers,
    names, epochs and model as the basic launcher's jobs (the one end-to-end test of it)."""
    write_table(tmp_path / "t.csv")
    grid = ["-m", "data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y",
            "optimizer.lr=0.02", "loss=l1,huber", "optimizer=sgd,adam", "trainer.epochs=60",
            "plots.enabled=false"]  # fmt: skip
    basic, batched = empty_store(tmp_path / "basic.db"), empty_store(tmp_path / "batched.db")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = run_cli(grid, tmp_path / "a", basic)
    assert first.returncode == 0, first.stderr
    second = run_cli([*grid, "hydra/launcher=batched"], tmp_path / "b", batched)
    assert second.returncode == 0, second.stderr
    assert "as one program" in second.stdout + second.stderr
    parent, ours = sweep_runs(batched)
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_finished"] == 4
    _, theirs = sweep_runs(basic)
    assert len(ours) == len(theirs) == 4
    by_overrides = {c.data.tags["linreg.overrides"]: c for c in theirs}
    keys = [f"final_weight.{n}" for n in FEATURES] + ["final_bias", "final_loss", "val_mse"]
    keys += [f"ols_weight.{n}" for n in FEATURES]
    for run in ours:
        other = by_overrides[run.data.tags["linreg.overrides"]]
        assert run.data.tags["linreg.train_step"] == "batched"
        assert run.info.run_name == other.info.run_name
        for key in keys:
            assert run.data.metrics[key] == pytest.approx(other.data.metrics[key], abs=1e-5)
        assert points(batched, run, "weight.b") == 60
        assert run.outputs.model_outputs  # its model, as any run's


def test_a_sweep_no_job_can_run_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """What every job shares is checked before the sweep's parent run or dir exists, by the
    launch every launcher goes through: each case through another launcher."""
    write_table(tmp_path / "t.csv")
    cases = [("basic", ["data=csv", "data.path=missing.csv", "data.target=y"]),
             ("joblib", ["data=csv"])]  # fmt: skip
    if not torch.cuda.is_available():
        cases.append(("batched", ["device=cuda"]))
    for launcher, case in cases:
        args = ["-m", f"hydra/launcher={launcher}", *case, "optimizer.lr=0.01,0.02"]
        result = run_cli(args, tmp_path, f"sqlite:///{tmp_path}/m.db")
        errors = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(errors) == 1, result.stderr
        assert errors[0].startswith(("error: data.path", "error: device=cuda")), errors
        assert not (tmp_path / "multirun").exists()
        db = tmp_path / "m.db"
        assert not db.exists() or not MlflowClient(f"sqlite:///{db}").search_runs(
            ["0", "1"], run_view_type=3
        )
