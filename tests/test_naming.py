"""Run names from overrides (sweeps/naming.py), in-process: what the UI's run table shows for a
single run, a sweep's parent and each of its jobs. Overrides are parsed by Hydra's own parser."""

from __future__ import annotations

import pytest

from linreg_exp.sweeps import naming


@pytest.mark.parametrize(
    ("override", "split"),
    [
        ("optimizer.lr=0.1", ("optimizer.lr", "0.1")),
        ("+optimizer.foo=1", ("optimizer.foo", "1")),
        ("++trainer.epochs=3", ("trainer.epochs", "3")),
        ("~plots", ("plots", "")),
        ("data.path=a=b.csv", ("data.path", "a=b.csv")),  # the first `=` splits
    ],
)
def test_an_override_splits_into_its_key_and_value(override: str, split: tuple[str, str]) -> None:
    assert naming.split(override) == split


def test_a_sweep_varies_its_comma_lists_and_sweep_functions_as_typed() -> None:
    overrides = ["optimizer.lr=0.005,0.02", "loss=l1,mse", "seed=3", "+x=range(0,3)",
                 "y=choice(1,2)", 'z="a,b"', "trainer.epochs=100"]  # fmt: skip
    assert naming.swept_values(overrides, {}) == {
        "optimizer.lr": "0.005,0.02",
        "loss": "l1,mse",
        "x": "range(0,3)",
        "y": "choice(1,2)",
    }  # a quoted comma is one value: no sweep


def test_a_sweepers_own_search_space_counts_as_swept() -> None:
    swept = naming.swept_values(["loss=mse"], {"optimizer.lr": "tag(log, interval(1e-4, 1))"})
    assert swept == {"optimizer.lr": "tag(log, interval(1e-4, 1))"}


@pytest.mark.parametrize(
    ("keys", "short"),
    [
        (["optimizer.lr", "loss"], {"optimizer.lr": "lr", "loss": "loss"}),
        # two keys that end alike keep their full names: the name stays unambiguous
        (["optimizer.lr", "scheduler.lr", "seed"],
         {"optimizer.lr": "optimizer.lr", "scheduler.lr": "scheduler.lr", "seed": "seed"}),
        # how a run is drawn or recorded is no hyperparameter: `enabled` alone would say nothing
        (["plots.enabled", "optimizer.lr", "sweep.pruner"],
         {"plots.enabled": "plots.enabled", "optimizer.lr": "lr", "sweep.pruner": "sweep.pruner"}),
        ([], {}),
    ],
)  # fmt: skip
def test_keys_are_shortened_only_where_that_stays_unique(
    keys: list[str], short: dict[str, str]
) -> None:
    assert naming.short_names(keys) == short


def test_a_sweeps_parent_is_named_after_what_it_varies() -> None:
    swept = naming.swept_values(["optimizer.lr=0.01,0.1"], {})
    assert naming.sweep_name(swept) == "sweep lr=0.01,0.1"
    assert naming.sweep_name({"optimizer.lr": "0.005,0.02", "loss": "l1,mse"}) == (
        "sweep lr=0.005,0.02 loss=l1,mse"
    )
    assert naming.sweep_name({}) == "sweep"  # a sweep of one job, or an override-less search


@pytest.mark.parametrize(
    ("overrides", "swept", "name"),
    [
        (["optimizer.lr=0.01", "loss=mse", "seed=1"], ["optimizer.lr", "loss"], "lr=0.01 loss=mse"),
        (["loss=mse", "optimizer.lr=0.01"], ["optimizer.lr", "loss"], "lr=0.01 loss=mse"),
        (["seed=1"], ["optimizer.lr"], None),  # nothing swept: MLflow's generated name
        (["+optimizer.lr=0.1"], ["optimizer.lr"], "lr=0.1"),
    ],
)
def test_a_job_is_named_by_its_values_of_the_swept_keys_in_the_sweeps_order(
    overrides: list[str], swept: list[str], name: str | None
) -> None:
    assert naming.job_name(overrides, swept) == name


def test_jobs_of_a_grid_get_distinct_names() -> None:
    swept = list(naming.swept_values(["optimizer.lr=0.005,0.02", "loss=l1,mse"], {}))
    jobs = [[f"optimizer.lr={lr}", f"loss={loss}"] for lr in ("0.005", "0.02")
            for loss in ("l1", "mse")]  # fmt: skip
    names = [naming.job_name(job, swept) for job in jobs]
    assert len(set(names)) == 4 and "lr=0.02 loss=l1" in names


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ([], "default"),
        (["optimizer.lr=0.05", "loss=mse"], "lr=0.05 loss=mse"),
        # where a run is tracked is not what it is: no URI (and no password) in its name
        (["mlflow.tracking_uri=postgresql://u:secret@h/db", "loss=mse"], "loss=mse"),
        (["mlflow.tracking_uri=sqlite:///x.db"], "default"),
    ],
)
def test_a_single_run_is_named_after_its_overrides_or_default(
    overrides: list[str], name: str
) -> None:
    assert naming.single_name(overrides) == name
